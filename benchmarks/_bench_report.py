"""Targets P1-P5, the printed tables and the plot, from a run's records."""

import math

import numpy as np
from scipy.stats import binomtest

ORDER = (
    "sgdm",
    "linear_probe",
    "sgdm_freeze",
    "sgdm_ridge",
    "ours",
    "ours_random",
    "l2sp",
    "delta",
    "residual",
    "pruned",
)

TARGETS = {
    "P1": ("time(ours reaches sgdm best) / time(sgdm reaches it)", "<=", 0.4),
    "P2_vs_sgdm": ("ours final acc - sgdm final acc (points)", ">=", 0.5),
    "P2_vs_linear_probe": ("ours final acc - linear probe acc (points)", ">=", 3.0),
    "P3": ("ours mean solve_dur / mean SGD epoch dur", "<=", 0.15),
    "P4": ("Gram (batch 32) + solve FLOP/s / float64 GEMM, d=1280", ">=", 0.5),
    "P5": ("peak RSS ours / peak RSS sgdm", "<=", 0.8),
}


def _first_time_reaching(points, level):
    for p in points:
        if p["test_acc"] >= level - 1e-12:
            return p["time"]
    return None


def _paired(a, b):
    """Exact McNemar test of two methods' final test predictions."""
    y = np.asarray(a["y_test"])
    ok_a = np.asarray(a["final_pred"]) == y
    ok_b = np.asarray(b["final_pred"]) == y
    only_a, only_b = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"n_test": len(y), "only_ours": only_a, "only_other": only_b, "p": p}


def _mean(history, key):
    values = [row[key] for row in history if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def _p3(rec):
    solve, dur = _mean(rec["history"], "solve_dur"), _mean(rec["history"], "dur")
    return None if solve is None else solve / dur


def paired_vs_sgdm(methods, sgdm):
    """McNemar test of each method's final predictions against sgdm's."""
    if sgdm is None:
        return {}
    return {
        name: _paired(rec, sgdm) for name, rec in methods.items() if rec is not sgdm
    }


def compute_targets(methods, gemm):
    """The targets that the records allow, each with its value and verdict."""
    out = {}

    def put(key, value, **extra):
        _, op, goal = TARGETS[key]
        met = None
        if value is not None and math.isfinite(value):
            met = value <= goal if op == "<=" else value >= goal
        elif value is not None:  # inf: never reached
            met = op == ">="
        out[key] = {"value": value, "target": f"{op} {goal}", "met": met, **extra}

    sgdm, ours, probe = (methods.get(m) for m in ("sgdm", "ours", "linear_probe"))
    if sgdm and ours:
        best = max(p["test_acc"] for p in sgdm["points"])
        t_sgdm = _first_time_reaching(sgdm["points"], best)
        t_ours = _first_time_reaching(ours["points"], best)
        ratio = None if t_ours is None else t_ours / t_sgdm
        put(
            "P1",
            math.inf if ratio is None else ratio,
            sgdm_best=best,
            t_sgdm=t_sgdm,
            t_ours=t_ours,
        )
        diff = 100 * (ours["points"][-1]["test_acc"] - sgdm["points"][-1]["test_acc"])
        put("P2_vs_sgdm", diff, mcnemar=_paired(ours, sgdm))
        put(
            "P5",
            ours["peak_rss_mb"] / sgdm["peak_rss_mb"],
            fit_increase_ratio=ours["fit_rss_increase_mb"]
            / sgdm["fit_rss_increase_mb"],
        )
    if ours and probe:
        diff = 100 * (ours["points"][-1]["test_acc"] - probe["points"][-1]["test_acc"])
        put("P2_vs_linear_probe", diff, mcnemar=_paired(ours, probe))
    if ours:
        put(
            "P3",
            _p3(ours),
            solve_s=_mean(ours["history"], "solve_dur"),
            epoch_s=_mean(ours["history"], "dur"),
        )
    if gemm:
        w = gemm["widths"][0]
        put(
            "P4",
            w["gram_solve_share_batch32"],
            **{
                f"d{x['d']}": {k: v for k, v in x.items() if "share" in k}
                for x in gemm["widths"]
            },
        )
    return out


def _fmt(value, spec=".3f"):
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf (never)"
    return format(value, spec)


def method_rows(methods, paired=None):
    """One summary row per method, in the usual order."""
    paired = paired or {}
    rows = []
    for name in [m for m in ORDER if m in methods] + [
        m for m in methods if m not in ORDER
    ]:
        rec = methods[name]
        pts = rec["points"]
        init = [p for p in pts if p["epoch"] == 0]
        init_solve = rec["history"][0].get("init_solve_dur") if rec["history"] else None
        rows.append(
            [
                name,
                _fmt(init[0]["test_acc"] if init else None),
                _fmt(pts[-1]["test_acc"]),
                _fmt(max(p["test_acc"] for p in pts)),
                _fmt(rec["fit_wall"], ".1f"),
                _fmt(_mean(rec["history"], "dur"), ".1f"),
                _fmt(_mean(rec["history"], "solve_dur"), ".1f"),
                _fmt(init_solve, ".1f"),
                _fmt(rec["peak_rss_mb"], ".0f"),
                _fmt(rec["fit_rss_increase_mb"], ".0f"),
                _fmt(paired[name]["p"], ".2g") if name in paired else "-",
            ]
        )
    return rows


METHOD_HEADER = [
    "method",
    "acc start",
    "acc final",
    "acc best",
    "fit s",
    "SGD epoch s",
    "solve s",
    "init solve s",
    "peak RSS MiB",
    "fit RSS +MiB",
    "McNemar p vs sgdm",
]
CURVE_HEADER = ["method", "epoch", "fit time s", "test acc", "train loss"]


def curve_rows(methods):
    rows = []
    for name, rec in methods.items():
        for p in rec["points"]:
            rows.append(
                [
                    name,
                    str(p["epoch"]),
                    _fmt(p["time"], ".1f"),
                    _fmt(p["test_acc"]),
                    _fmt(p["train_loss"], ".4f"),
                ]
            )
    return rows


def _note(key, t):
    if key == "P1":
        ours = "never" if t["t_ours"] is None else f"{t['t_ours']:.1f} s"
        return f"sgdm best {t['sgdm_best']:.3f} at {t['t_sgdm']:.1f} s; ours {ours}"
    if key.startswith("P2"):
        m = t["mcnemar"]
        return (
            f"McNemar p={m['p']:.2g} ({m['only_ours']} vs {m['only_other']} "
            f"discordant of {m['n_test']})"
        )
    if key == "P3":
        return f"solve {t['solve_s']:.1f} s / SGD epoch {t['epoch_s']:.1f} s"
    if key == "P4":
        w = t["d1280"]
        return (
            f"batch 256: {w['gram_solve_share_batch256']:.0%}; d=2048: "
            f"{t['d2048']['gram_solve_share_batch32']:.0%} / "
            f"{t['d2048']['gram_solve_share_batch256']:.0%}"
        )
    if key == "P5":
        return f"fit increase only: {t['fit_increase_ratio']:.2f}"
    return ""


def target_rows(targets):
    rows = []
    for key, (what, _, _) in TARGETS.items():
        t = targets.get(key)
        if t is None:
            continue
        verdict = {True: "met", False: "missed", None: "-"}[t["met"]]
        rows.append([key, what, _fmt(t["value"]), t["target"], verdict, _note(key, t)])
    return rows


TARGET_HEADER = ["target", "measure", "value", "goal", "verdict", "detail"]


def gemm_rows(gemm):
    rows = []
    for w in gemm["widths"]:
        rows.append(
            [
                str(w["d"]),
                _fmt(w["gemm_flops_per_s"] / 1e9, ".1f"),
                f"{_fmt(w['gram_s_batch32'], '.2f')} ({w['gram_share_batch32']:.0%})",
                f"{_fmt(w['gram_s_batch256'], '.2f')} ({w['gram_share_batch256']:.0%})",
                f"{_fmt(w['solve_s'], '.3f')} ({w['solve_share']:.0%})",
                f"{w['gram_solve_share_batch32']:.0%}",
                f"{w['gram_solve_share_batch256']:.0%}",
                _fmt(w["gram_s_batch32_5folds"], ".2f"),
                _fmt(w["select_lambda_s"], ".2f"),
            ]
        )
    return rows


GEMM_HEADER = [
    "d",
    "GEMM GFLOP/s",
    "Gram b=32 s (share)",
    "Gram b=256 s (share)",
    "solve s (share)",
    "Gram32+solve share",
    "Gram256+solve share",
    "5-fold Gram b=32 s",
    "select_lambda s",
]


def text_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(result, table=text_table):
    """All tables of a run, as plain text or (``table=markdown_table``) markdown."""
    methods = result["methods"]
    s, m = result["setting"], result["machine"]
    omp = {r.get("omp_wait_policy") for r in methods.values()}
    header = (
        f"Setting {s['name']}: {s['n_train']} train / {s['n_test']} test images, "
        f"{s['epochs']} epochs, batch {s['batch_size']}, {s['image_size']} px, "
        f"seed {s['seed']}. torch {m['torch']}, {m['threads']} threads on "
        f"{m['cpu_count']} cores, OMP_WAIT_POLICY={'/'.join(sorted(map(str, omp)))}; "
        f"1-min load average {m['loadavg'][0]:.1f} at the start, "
        f"{m.get('loadavg_end', [float('nan')])[0]:.1f} at the end (other jobs "
        "shared the cores: timings are noisy)."
    )
    pkg = result.get("package")
    if pkg:
        state = "with local edits" if pkg["package_dirty"] else "clean"
        header += (
            f" skfastretrain at {pkg['git_head']} ({state}, sources "
            f"{pkg['package_sha1']}), one snapshot for all methods."
        )
    for name, rec in [*methods.items(), ("P4's GEMM measurement", result.get("gemm"))]:
        if rec and rec.get("rerun_at"):
            again = rec["rerun_package"]
            header += (
                f" {name} was run again on its own at {rec['rerun_at']} "
                f"(skfastretrain at {again['git_head']}, sources "
                f"{again['package_sha1']}) and replaced its first record."
            )
    parts = [
        header,
        table(METHOD_HEADER, method_rows(methods, result.get("paired_vs_sgdm"))),
        table(CURVE_HEADER, curve_rows(methods)),
    ]
    if result.get("gemm"):
        parts.append(table(GEMM_HEADER, gemm_rows(result["gemm"])))
    parts.append(table(TARGET_HEADER, target_rows(result["targets"])))
    return "\n\n".join(parts)


def plot(result, path):
    """Test accuracy against fit wall time, one line per method.

    The right panel zooms on the trained points (start points left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    trained = [
        p["test_acc"]
        for rec in result["methods"].values()
        for p in rec["points"]
        if p["epoch"] > 0
    ]
    # tab20 rather than the default cycle, whose 10 colours repeat here.
    colors = plt.get_cmap("tab20").colors
    for ax in axes:
        for i, (name, rec) in enumerate(result["methods"].items()):
            t = [p["time"] for p in rec["points"]]
            acc = [p["test_acc"] for p in rec["points"]]
            style = "s" if len(t) == 1 else "o-"
            color = colors[(2 * i) % 20 + (2 * i) // 20 % 2]
            ax.plot(t, acc, style, label=name, markersize=5, color=color)
        ax.set_xlabel("fit wall time (s, evaluation excluded)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].set_ylim(0.0, 1.0)
    axes[0].legend(loc="lower right")
    lo, hi = min(trained), max(trained)
    axes[1].set_ylim(lo - 0.02, hi + 0.01)
    axes[1].set_title("zoom")
    s = result["setting"]
    fig.suptitle(
        f"Lite0 -> Fashion-MNIST, {s['n_train']} train / {s['n_test']} test, "
        f"{s['epochs']} epochs, {result['machine']['threads']} threads"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(readme, name, text):
    """Replace the block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

    Returns whether the README had the markers (it is left alone otherwise).
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not readme.exists():
        return False
    content = readme.read_text()
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    return True

"""The transfer benchmark's printed tables and plot, from a run's records."""

from .tables import fmt_value, text_table
from .targets import (
    TARGET_HEADER,
    VARIANT_HEADER,
    history_mean,
    target_rows,
    variant_rows,
)

ORDER = (
    "default",
    "sgdm",
    "fastai",
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
                fmt_value(init[0]["test_acc"] if init else None),
                fmt_value(pts[-1]["test_acc"]),
                fmt_value(max(p["test_acc"] for p in pts)),
                fmt_value(rec["fit_wall"], ".1f"),
                fmt_value(history_mean(rec["history"], "dur"), ".1f"),
                fmt_value(history_mean(rec["history"], "solve_dur"), ".1f"),
                fmt_value(init_solve, ".1f"),
                fmt_value(rec["peak_rss_mb"], ".0f"),
                fmt_value(rec["fit_rss_increase_mb"], ".0f"),
                fmt_value(paired[name]["p"], ".2g") if name in paired else "-",
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
                    fmt_value(p["time"], ".1f"),
                    fmt_value(p["test_acc"]),
                    fmt_value(p["train_loss"], ".4f"),
                ]
            )
    return rows


def gemm_rows(gemm):
    rows = []
    for w in gemm["widths"]:
        rows.append(
            [
                str(w["d"]),
                fmt_value(w["gemm_flops_per_s"] / 1e9, ".1f"),
                f"{w['gram_s_batch32']:.2f} ({w['gram_share_batch32']:.0%})",
                f"{w['gram_s_batch256']:.2f} ({w['gram_share_batch256']:.0%})",
                f"{fmt_value(w['solve_s'], '.3f')} ({w['solve_share']:.0%})",
                f"{w['gram_solve_share_batch32']:.0%}",
                f"{w['gram_solve_share_batch256']:.0%}",
                fmt_value(w["gram_s_batch32_5folds"], ".2f"),
                fmt_value(w["select_lambda_s"], ".2f"),
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
    # Records rerun by one --replace-in invocation share its package snapshot.
    reruns = {}
    for name, rec in [*methods.items(), ("P4's GEMM measurement", result.get("gemm"))]:
        if rec and rec.get("rerun_at"):
            again = rec["rerun_package"]
            key = (again["git_head"], again["package_sha1"])
            reruns.setdefault(key, []).append((rec["rerun_at"], name))
    for (head, sha1), runs in reruns.items():
        names = [name for _, name in sorted(runs)]
        if len(names) == 1:
            what = f"{names[0]} was run again on its own"
        else:
            listed = ", ".join(names[:-1]) + " and " + names[-1]
            what = f"{listed} were run again together, in one invocation,"
        header += (
            f" {what} by {max(runs)[0]} (skfastretrain at {head}, sources "
            f"{sha1}), replacing the first records."
        )
    parts = [
        header,
        table(METHOD_HEADER, method_rows(methods, result.get("paired_vs_sgdm"))),
        table(CURVE_HEADER, curve_rows(methods)),
    ]
    if result.get("gemm"):
        parts.append(table(GEMM_HEADER, gemm_rows(result["gemm"])))
    parts.append(table(TARGET_HEADER, target_rows(result["targets"])))
    order = [m for m in ORDER if m in methods] + [m for m in methods if m not in ORDER]
    variants = variant_rows(methods, order)
    if variants:
        judged = result["targets"].get("judged", "ours")
        parts.append(f"The same targets with each other method in {judged}'s place:")
        parts.append(table(VARIANT_HEADER, variants))
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

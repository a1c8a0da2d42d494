"""Targets P1-P5 from a run's records, for ours and for each variant."""

import math

import numpy as np
from scipy.stats import binomtest

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


def fmt_value(value, spec=".3f"):
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf (never)"
    return format(value, spec)


def _paired(a, b):
    """Exact McNemar test of two methods' final test predictions."""
    y = np.asarray(a["y_test"])
    ok_a = np.asarray(a["final_pred"]) == y
    ok_b = np.asarray(b["final_pred"]) == y
    only_a, only_b = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"n_test": len(y), "only_ours": only_a, "only_other": only_b, "p": p}


def history_mean(history, key):
    values = [row[key] for row in history if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def _p3(rec):
    solve, dur = (
        history_mean(rec["history"], "solve_dur"),
        history_mean(rec["history"], "dur"),
    )
    return None if solve is None else solve / dur


def paired_vs_sgdm(methods, sgdm):
    """McNemar test of each method's final predictions against sgdm's."""
    if sgdm is None:
        return {}
    return {
        name: _paired(rec, sgdm) for name, rec in methods.items() if rec is not sgdm
    }


def compute_targets(methods, gemm, ours="ours"):
    """The targets that the records allow, each with its value and verdict.

    ``ours`` names the method measured against sgdm and the linear probe.
    """
    out = {}

    def put(key, value, **extra):
        _, op, goal = TARGETS[key]
        met = None
        if value is not None and math.isfinite(value):
            met = value <= goal if op == "<=" else value >= goal
        elif value is not None:  # inf: never reached
            met = op == ">="
        out[key] = {"value": value, "target": f"{op} {goal}", "met": met, **extra}

    sgdm, ours, probe = (methods.get(m) for m in ("sgdm", ours, "linear_probe"))
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
            solve_s=history_mean(ours["history"], "solve_dur"),
            epoch_s=history_mean(ours["history"], "dur"),
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
        rows.append(
            [key, what, fmt_value(t["value"]), t["target"], verdict, _note(key, t)]
        )
    return rows


TARGET_HEADER = ["target", "measure", "value", "goal", "verdict", "detail"]


VARIANT_HEADER = [
    "method",
    "P1 (<= 0.4)",
    "P2 vs sgdm (>= +0.5)",
    "P3 (<= 0.15)",
    "P5 (<= 0.8)",
]


def variant_rows(methods, order):
    """P1, P2 vs sgdm, P3 and P5 with each fine-tuning method in ours' place."""
    rows = []
    for name in order:
        if name in ("sgdm", "linear_probe", "ours") or name not in methods:
            continue
        targets = compute_targets(methods, None, ours=name)
        if not targets:
            continue
        # A record from another invocation than sgdm's (a --replace-in rerun)
        # compares times taken under other machine conditions.
        sgdm = methods.get("sgdm", {})
        same = methods[name].get("rerun_package") == sgdm.get("rerun_package")
        row = [name if same else f"{name} (other invocation)"]
        for key in ("P1", "P2_vs_sgdm", "P3", "P5"):
            t = targets.get(key)
            if t is None or t["value"] is None:
                row.append("-")
                continue
            value = t["value"]
            text = "never" if math.isinf(value) else f"{value:.2f}"
            row.append(f"{text} ({'met' if t['met'] else 'missed'})")
        rows.append(row)
    return rows

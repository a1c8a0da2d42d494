"""The speed levers' tables, in markdown, from a run's records."""

from .tables import markdown_table


def render(result):
    base = next(r for r in result["steps"] if r["config"] == "float32")
    rows = []
    for r in result["steps"]:
        if "error" in r:
            rows.append([r["config"], "failed: " + r["error"], "", "", "", ""])
            continue
        rows.append(
            [
                r["config"],
                f"{r['step_s']:.3f}",
                f"{base['step_s'] / r['step_s']:.2f}x",
                f"{r['eval_s']:.3f}",
                f"{base['eval_s'] / r['eval_s']:.2f}x",
                f"{r['first_step_s']:.1f}",
            ]
        )
    load = result["machine"]["loadavg"][0]
    note = (
        f"Lite0 at 64 px, batch 32, medians of 10 after 2 warm-up calls; "
        f"1-min load average {load:.1f} at the start (other jobs shared the "
        "2 cores, so ratios are more reliable than seconds)."
    )
    steps = markdown_table(
        [
            "configuration",
            "train step s",
            "speed-up",
            "eval forward s",
            "speed-up",
            "first step s",
        ],
        rows,
    )
    memory = _memory_table(result.get("memory"))
    steps = f"{steps}\n\n{memory}" if memory else steps
    g = result["gram"]
    if "error" in g:
        return f"{note}\n\n{steps}\n\nGram measurement failed: {g['error']}"
    gram_rows = [
        [
            key.split("=")[1],
            f"{v['coef_rel_err']:.1e}",
            f"{v['pred_changed']:.4f}",
            f"{v['test_acc_float64']:.3f}",
        ]
        for key, v in g.items()
        if key.startswith("alpha_rel=")
    ]
    gram = markdown_table(
        ["lambda / mean diag(G)", "coef rel. error", "test predictions changed", "acc"],
        gram_rows,
    )
    gram_note = (
        f"Gram accumulated in float32 against float64, real Lite0 features "
        f"(d={g['d']}, n={g['n']}, batches of 32): relative error of G "
        f"{g['gram_rel_err']:.1e}; the solves run in float64 either way."
    )
    text = f"{note}\n\n{steps}\n\n{gram_note}\n\n{gram}"
    prefix = _prefix_table(result.get("prefix_cache"))
    text = f"{text}\n\n{prefix}" if prefix else text
    return "\n\n".join([text, *path_tables(result)])


def _prefix_table(r):
    if not r or "error" in r:
        return f"Prefix cache measurement failed: {r['error']}" if r else ""
    note = (
        "The prefix cache (cache_prefix=True): Lite0 at 64 px, batch 32, the "
        f"frozen prefix of freeze_prob=0.5 ending before block {r['cut_block']}; "
        "its output is "
        f"{r['bytes_per_image'] / 1024:.1f} KiB per image in float32 "
        f"({r['bytes_per_image'] * 10_000 / 2**20:.0f} MiB for 10,000 images)."
    )
    rows = [
        [
            "eval forward (the solve's pass)",
            f"{r['full_eval_s']:.3f}",
            f"{r['cached_eval_s']:.3f}",
            f"{r['full_eval_s'] / r['cached_eval_s']:.2f}x",
        ],
        [
            "training step, prefix frozen",
            f"{r['frozen_step_s']:.3f}",
            f"{r['cached_step_s']:.3f}",
            f"{r['frozen_step_s'] / r['cached_step_s']:.2f}x",
        ],
    ]
    header = ["per batch", "from the images s", "from the cached prefix s", "speed-up"]
    return f"{note}\n\n{markdown_table(header, rows)}"


def _memory_table(records):
    if not records:
        return ""
    full = {r["size"]: r for r in records if not r["prefix"]}
    rows = [
        [
            f"{r['size']} px",
            "prefix 0.5" if r["prefix"] else "all layers",
            f"{r['peak_mb']:.0f}",
            f"{r['step_increase_mb']:.0f}",
            f"{r['step_increase_mb'] / full[r['size']]['step_increase_mb']:.2f}",
        ]
        for r in records
        if "error" not in r
    ]
    note = (
        "Peak resident memory of 3 training steps (batch 32) in a fresh process, "
        "training all layers or with the frozen prefix of freeze_prob=0.5."
    )
    header = ["images", "trained", "peak RSS MiB", "steps add MiB", "ratio"]
    return f"{note}\n\n{markdown_table(header, rows)}"


def _ms(value):
    return f"{value:.2f}"


def _path_table(records):
    rows = []
    for r in records:
        if "error" in r:
            rows.append([f"{r.get('size', '?')} px", "failed: " + r["error"]])
            continue
        for b in (32, 128, 256):
            full, cached = r[f"eval_full_row_ms_b{b}"], r[f"eval_cached_row_ms_b{b}"]
            ref_full = r["eval_full_row_ms_b32"]
            ref_cached = r["eval_cached_row_ms_b32"]
            rows.append(
                [
                    f"{r['size']} px",
                    str(b),
                    _ms(full),
                    f"{ref_full / full:.2f}x",
                    _ms(cached),
                    f"{ref_cached / cached:.2f}x",
                ]
            )
    header = [
        "images",
        "eval batch",
        "full network ms/row",
        "vs batch 32",
        "from the stored prefix ms/row",
        "vs batch 32",
    ]
    note = (
        "The head solve's pass per row (eval mode, inference_mode), from the "
        "images and from the stored prefix output, at three eval batch sizes."
    )
    return f"{note}\n\n{markdown_table(header, rows)}"


def _prefix_inference_table(records):
    configs = [
        ("no_grad, float32", "prefix_no_grad_s"),
        ("inference_mode", "prefix_inference_mode_s"),
        ("+ BatchNorm folded", "prefix_folded_s"),
        ("+ channels-last", "prefix_folded_channels_last_s"),
        ("BatchNorm folded + bf16 autocast", "prefix_folded_bf16_s"),
        ("+ channels-last + bf16 autocast", "prefix_folded_channels_last_bf16_s"),
    ]
    rows = []
    for r in (r for r in records if "error" not in r):
        base = r["prefix_no_grad_s"]
        for label, key in configs:
            rows.append(
                [f"{r['size']} px", label, _ms(1e3 * r[key]), f"{base / r[key]:.2f}x"]
            )
    errors = ", ".join(
        f"{r['size']} px: {r['prefix_folded_rel_err']:.1e}"
        for r in records
        if "error" not in r
    )
    note = (
        "The frozen prefix of freeze_prob=0.5 (batch 32) run as inference, as "
        "the cache fills it once per fit. Largest output difference of the "
        f"folded prefix, relative to the largest output: {errors}."
    )
    header = ["images", "prefix run as", "ms per batch", "speed-up"]
    return f"{note}\n\n{markdown_table(header, rows)}"


def _overhead_note(records):
    r = next((r for r in records if "error" not in r and r["size"] == 64), None)
    if r is None:
        return ""
    extra = r["skorch_batch_ms"] - r["plain_batch_ms"]
    return (
        "skorch's per-batch overhead: one epoch of a linear model on stored "
        f"tensors takes {r['skorch_batch_ms']:.2f} ms per batch through "
        f"`NeuralNet.fit` and {r['plain_batch_ms']:.2f} ms in a plain torch "
        f"loop, {extra:.2f} ms more per batch; the trained suffix's step "
        f"(batch 32, 64 px) takes {r['suffix_step_ms']:.0f} ms, so skorch adds "
        f"{extra / r['suffix_step_ms']:.1%} to a cached SGD epoch."
    )


def _cache_dtype_table(r):
    if "error" in r:
        return f"Cache storage measurement failed: {r['error']}"
    rows = []
    for name, share in (("float32", 1.0), ("bfloat16", 0.5), ("float16", 0.5)):
        row = r[name]
        rows.append(
            [
                name,
                f"{r['float32_bytes_per_image'] * share / 1024:.1f}",
                f"{row['holdout_acc']:.3f}",
                f"{row.get('pred_changed', 0.0):.4f}",
                f"{row.get('feature_rel_err', 0.0):.1e}",
            ]
        )
    note = (
        "The stored prefix output (64 px, block "
        f"{r['cut_block']} on) rounded to 16 bits: a ridge head solved on the "
        "features the rest of the pretrained network computes from it, 2,000 "
        "fit and 1,000 held-out rows of the train split."
    )
    header = [
        "stored as",
        "KiB per image",
        "holdout acc",
        "holdout predictions changed",
        "feature rel. error",
    ]
    return f"{note}\n\n{markdown_table(header, rows)}"


def path_tables(result):
    """The markdown of the ``path`` and ``cache_dtype`` parts that ``result`` has."""
    out = []
    if result.get("path"):
        out += [
            _path_table(result["path"]),
            _prefix_inference_table(result["path"]),
            _overhead_note(result["path"]),
        ]
    if result.get("cache_dtype"):
        out.append(_cache_dtype_table(result["cache_dtype"]))
    return [part for part in out if part]

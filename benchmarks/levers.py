"""The speed levers of the benchmark issue, each measured on its own.

1. The Lite0 training step (batch 32, 64 px, SGD with momentum, forward,
   backward and step) and the eval-mode forward of the head solve's feature
   pass, in float32, with ``channels_last``, under bf16 autocast, and through
   ``torch.compile`` (whose first step, the compilation, is timed apart).
2. The peak memory of training steps at 64 and 224 px, all layers trained
   or the frozen prefix of ``freeze_prob=0.5`` (what P5 hinges on).
3. Gram statistics accumulated in float32 instead of float64, on real Lite0
   features of Fashion-MNIST (d=1280): the relative error of the Gram matrix,
   of the ridge solution and the share of test predictions that change.
4. The prefix cache (``sgd=SGDEpoch(cache_prefix=True)``): with
   ``freeze_mode="prefix"`` at 0.5 the frozen prefix of Lite0 ends before
   block 8, so its output for each training image never changes during the
   fit. The eval forward and
   the training step are timed from a stored prefix output against the full
   network.
5. The default path (``_bench_levers.py``), at 64 and 224 px: the head
   solve's pass per row at eval batches of 32, 128 and 256; the frozen
   prefix run as inference (``inference_mode``, BatchNorm folded into its
   convolutions, channels-last, bf16); skorch's per-batch overhead against a
   plain torch loop, beside the trained suffix's step.
6. The prefix cache stored in bfloat16 or float16: bytes per image and the
   effect on a ridge head over the features computed from it, on rows held
   out of the train split.

Each configuration runs in a fresh process with ``OMP_WAIT_POLICY=PASSIVE``.
Usage::

    python benchmarks/levers.py             # ~6 min; results/levers.json, .md
    python benchmarks/levers.py --parts memory   # re-measure one part
    python benchmarks/levers.py --report    # re-print a saved run
"""

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from _bench_levers import CACHE_DTYPE_CODE, PATH_CODE, path_tables  # noqa: E402
from _bench_utils import SNIPPET_PRELUDE, machine_info, run_snippet  # noqa: E402

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
PARTS = ("steps", "memory", "gram", "prefix_cache", "path", "cache_dtype")

STEP_CODE = """
cfg = {cfg!r}
torch.manual_seed(0)
m = nn.Sequential(LitePreprocess(), _pretrained_lite0(10))
fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
m = m.to(memory_format=fmt)
opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
run = torch.compile(m) if cfg["compile"] else m
x = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (32,))
def forward():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
        return run(x)
def train_step():
    opt.zero_grad()
    nn.functional.cross_entropy(forward().float(), y).backward()
    opt.step()
def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return out
m.train()
first = timed(train_step, 1)[0]
steps = sorted(timed(train_step, 12)[2:])
m.eval()
with torch.inference_mode():
    first_eval = timed(forward, 1)[0]
    evals = sorted(timed(forward, 12)[2:])
print(json.dumps({{"first_step_s": first, "step_s": steps[len(steps) // 2],
                  "first_eval_s": first_eval, "eval_s": evals[len(evals) // 2]}}))
"""

GRAM_CODE = """
from skfastretrain import GramAccumulator, ridge_solve
X_tr, y_tr, X_te, y_te = load_data({{"n_train": 2000, "n_test": 500}})
model = _pretrained_lite0().eval()
H = torch.from_numpy(_features(model, X_tr))
H_te = torch.from_numpy(_features(model, X_te))
T = torch.full((len(y_tr), 10), -1.0)
T[torch.arange(len(y_tr)), torch.from_numpy(y_tr).long()] = 1.0
out = {{"d": H.shape[1], "n": len(H)}}
stats = {{}}
for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
    acc = GramAccumulator(H.shape[1], 10, dtype=dtype)
    for i in range(0, len(H), 32):
        acc.update(H[i : i + 32], T[i : i + 32])
    stats[name] = acc
ref = stats["float64"]
rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())
out["gram_rel_err"] = rel(stats["float32"].gram, ref.gram)
scale = float(ref.gram.diagonal().mean())
for alpha_rel in (1e-4, 1e-2, 1.0):
    alpha = alpha_rel * scale
    W64, b64 = ridge_solve(ref, alpha)
    W32, b32 = ridge_solve(stats["float32"], alpha)
    p64 = (H_te.double() @ W64 + b64).argmax(1)
    p32 = (H_te.double() @ W32.double() + b32.double()).argmax(1)
    out[f"alpha_rel={{alpha_rel:g}}"] = {{
        "coef_rel_err": rel(W32, W64),
        "pred_changed": float((p64 != p32).double().mean()),
        "test_acc_float64": float((p64.numpy() == y_te).mean()),
    }}
print(json.dumps(out))
"""

MEMORY_CODE = """
import resource
cfg = {cfg!r}
torch.manual_seed(0)
m = nn.Sequential(LitePreprocess(cfg["size"]), _pretrained_lite0(10)).train()
if cfg["prefix"]:
    # What freeze_mode="prefix" does at freeze_prob=0.5: the first half of
    # the conv/linear layers in forward order, and every parameter before the
    # first trainable one, get requires_grad=False; the prefix's BatchNorm
    # runs in eval mode. Autograd then records nothing for the prefix.
    convs = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    last = convs[len(convs) // 2 - 1]
    for x in m.modules():
        if not list(x.children()):
            x.requires_grad_(False)
            if isinstance(x, nn.BatchNorm2d):
                x.eval()
        if x is last:
            break
opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-3,
                      momentum=0.9)
x = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (32,))
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak()
for _ in range(3):
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
print(json.dumps({{"peak_mb": peak(), "step_increase_mb": peak() - base}}))
"""

PREFIX_CODE = """
torch.manual_seed(0)
prep, net = LitePreprocess(), _pretrained_lite0(10)
for block in net._blocks:
    block.drop_connect = 0.0
# The block holding the first layer that freeze_prob=0.5 leaves trainable.
layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
first_trained = layers[round(0.5 * (len(layers) - 1))]  # the head is no candidate
cut = next(i for i, b in enumerate(net._blocks)
           if any(m is first_trained for m in b.modules()))
def prefix(x):
    x = prep(x)
    x = net._stem_act(net._bn0(net._conv_stem(x)))
    for block in net._blocks[:cut]:
        x = block(x)
    return x
def suffix(h):
    for block in net._blocks[cut:]:
        h = block(h)
    h = net._head_act(net._bn1(net._conv_head(h)))
    return net._fc(net._dropout(net._flatten(net._avg_pooling(h))))
x = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (32,))
def median(fn, n=12):
    for _ in range(2):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return sorted(out)[n // 2]
net.eval()
with torch.inference_mode():
    cached = prefix(x)
    full_eval = median(lambda: suffix(prefix(x)))
    cached_eval = median(lambda: suffix(cached))
cached = cached.clone()
trained = [p for b in net._blocks[cut:] for p in b.parameters()]
trained += [*net._conv_head.parameters(), *net._bn1.parameters(), *net._fc.parameters()]
opt = torch.optim.SGD(trained, lr=1e-3, momentum=0.9)
net.train()
for m in net.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.eval()
def step(h):
    opt.zero_grad()
    nn.functional.cross_entropy(suffix(h), y).backward()
    opt.step()
def frozen_step():
    with torch.no_grad():
        h = prefix(x)
    step(h)
print(json.dumps({{"cut_block": cut, "bytes_per_image": cached[0].numel() * 4,
                  "full_eval_s": full_eval, "cached_eval_s": cached_eval,
                  "frozen_step_s": median(frozen_step),
                  "cached_step_s": median(lambda: step(cached))}}))
"""

#: (name, channels_last, bf16 autocast, torch.compile)
CONFIGS = [
    ("float32", False, False, False),
    ("channels_last", True, False, False),
    ("bf16 autocast", False, True, False),
    ("bf16 + channels_last", True, True, False),
    ("torch.compile", False, False, True),
]


def _snippet(code, **fmt):
    return run_snippet(
        SNIPPET_PRELUDE.format(here=str(HERE)) + code.format(**fmt),
        PASSIVE,
        timeout=900,
    )


def measure(parts, result=None):
    """Measure ``parts`` (of :data:`PARTS`) into ``result``."""
    result = result or {"machine": machine_info()}
    if "steps" in parts:
        result["steps"] = []
        for name, channels_last, bf16, compile_ in CONFIGS:
            cfg = {"channels_last": channels_last, "bf16": bf16, "compile": compile_}
            result["steps"].append(
                {"config": name, **cfg, **_snippet(STEP_CODE, cfg=cfg)}
            )
            print(result["steps"][-1], flush=True)
    if "memory" in parts:
        result["memory"] = []
        for size in (64, 224):
            for prefix in (False, True):
                cfg = {"size": size, "prefix": prefix}
                result["memory"].append({**cfg, **_snippet(MEMORY_CODE, cfg=cfg)})
                print(result["memory"][-1], flush=True)
    if "gram" in parts:
        result["gram"] = _snippet(GRAM_CODE)
        print(result["gram"], flush=True)
    if "prefix_cache" in parts:
        result["prefix_cache"] = _snippet(PREFIX_CODE)
        print(result["prefix_cache"], flush=True)
    if "path" in parts:
        result["path"] = [_snippet(PATH_CODE, size=size) for size in (64, 224)]
        print(result["path"], flush=True)
    if "cache_dtype" in parts:
        result["cache_dtype"] = _snippet(CACHE_DTYPE_CODE, size=64)
        print(result["cache_dtype"], flush=True)
    result["machine"][f"loadavg_end_{'_'.join(parts)}"] = list(os.getloadavg())
    return result


def render(result):
    from _bench_report import markdown_table

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
    from _bench_report import markdown_table

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
    from _bench_report import markdown_table

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="re-print a saved run")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)}; the others are kept "
        "from the saved run",
    )
    args = parser.parse_args(argv)
    path = RESULTS / "levers.json"
    if args.report:
        result = json.loads(path.read_text())
    else:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        saved = json.loads(path.read_text()) if path.is_file() else None
        result = measure(parts, None if set(parts) >= set(PARTS) else saved)
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    text = render(result)
    (RESULTS / "levers.md").write_text(text + "\n")
    print(text)
    from _bench_report import update_readme

    update_readme(HERE / "README.md", "levers", text)


if __name__ == "__main__":
    main()

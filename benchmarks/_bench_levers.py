"""The default path's levers (``levers.py --parts path,cache_dtype``), as snippets.

Each snippet runs in a fresh interpreter (``run_snippet``) and prints one
JSON line. ``PREFIX_SPLIT`` builds Lite0's frozen prefix (``freeze_prob=0.5``,
``freeze_mode="prefix"``: the blocks before the first trained layer) and the
trained suffix by hand, as ``levers.py``'s prefix-cache part does.
"""

PREFIX_SPLIT = """
torch.manual_seed(0)
size = {size}
prep, net = LitePreprocess(size), _pretrained_lite0(10)
for block in net._blocks:
    block.drop_connect = 0.0
layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
first_trained = layers[round(0.5 * (len(layers) - 1))]
cut = next(i for i, b in enumerate(net._blocks)
           if any(m is first_trained for m in b.modules()))
class Prefix(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._stem_act)
        self.blocks = nn.Sequential(*net._blocks[:cut])
    def forward(self, x):
        return self.blocks(self.stem(x))
class Suffix(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*net._blocks[cut:])
        self.top = nn.Sequential(net._conv_head, net._bn1, net._head_act,
                                 net._avg_pooling, net._flatten)
    def forward(self, h):
        return self.top(self.blocks(h))
prefix, suffix = Prefix().eval(), Suffix().eval()
def median(fn, n=10):
    for _ in range(2):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return sorted(out)[n // 2]
"""

#: Per-row cost of the head solve's pass at several eval batch sizes, the
#: frozen prefix run as inference in several ways, and skorch's per-batch
#: overhead against a plain loop.
PATH_CODE = (
    PREFIX_SPLIT
    + """
import copy
from torch.nn.utils.fusion import fuse_conv_bn_eval
from skorch import NeuralNet
PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"),
         ("_project_conv", "_bn2"))
def fuse(prefix):
    # Every BatchNorm folded into the convolution before it (eval mode: the
    # running statistics and affine become the conv's weight and bias).
    folded = copy.deepcopy(prefix)
    folded.stem[0] = fuse_conv_bn_eval(folded.stem[0], folded.stem[1])
    folded.stem[1] = nn.Identity()
    for block in folded.blocks:
        for conv, bn in PAIRS:
            if hasattr(block, conv):
                setattr(block, conv,
                        fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
                setattr(block, bn, nn.Identity())
    return folded.eval()
out = {{"cut_block": cut, "size": size}}
x_all = torch.randint(0, 255, (256, 1, 28, 28), dtype=torch.uint8)
with torch.inference_mode():
    h_all = prefix(prep(x_all))
# 1. The solve's pass per row: from the images and from the stored prefix.
for b in (32, 128, 256):
    with torch.inference_mode():
        full = median(lambda: suffix(prefix(prep(x_all[:b]))), n=6)
        cached = median(lambda: suffix(h_all[:b]), n=6)
    out[f"eval_full_row_ms_b{{b}}"] = 1e3 * full / b
    out[f"eval_cached_row_ms_b{{b}}"] = 1e3 * cached / b
# 2. The frozen prefix (batch 32) as the cache fills it.
x = prep(x_all[:32])
with torch.no_grad():
    out["prefix_no_grad_s"] = median(lambda: prefix(x))
with torch.inference_mode():
    out["prefix_inference_mode_s"] = median(lambda: prefix(x))
    folded = fuse(prefix)
    err = (folded(x) - prefix(x)).abs().max() / prefix(x).abs().max()
    out["prefix_folded_s"] = median(lambda: folded(x))
    out["prefix_folded_rel_err"] = float(err)
    xc = x.contiguous(memory_format=torch.channels_last)
    folded_cl = fuse(prefix).to(memory_format=torch.channels_last)
    out["prefix_folded_channels_last_s"] = median(lambda: folded_cl(xc))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out["prefix_folded_bf16_s"] = median(lambda: folded(x))
        out["prefix_folded_channels_last_bf16_s"] = median(lambda: folded_cl(xc))
# 3. skorch's per-batch overhead: the same tiny model on the same tensors,
# one epoch through NeuralNet.fit and through a plain loop.
X = torch.randn(3200, 16)
Y = torch.randint(0, 10, (3200,))
def plain():
    torch.manual_seed(0)
    m = nn.Linear(16, 10)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    for i in range(0, len(X), 32):
        opt.zero_grad()
        nn.functional.cross_entropy(m(X[i:i + 32]), Y[i:i + 32]).backward()
        opt.step()
def skorch_fit():
    NeuralNet(nn.Linear, module__in_features=16, module__out_features=10,
              criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
              optimizer__momentum=0.9, lr=0.01, batch_size=32, max_epochs=1,
              train_split=None, verbose=0).fit(X, Y)
n_batches = len(X) // 32
out["plain_batch_ms"] = 1e3 * median(plain, n=5) / n_batches
out["skorch_batch_ms"] = 1e3 * median(skorch_fit, n=5) / n_batches
# The trained suffix's step (batch 32), for scale.
net.train()
for m in prefix.modules():
    m.eval()
opt = torch.optim.SGD(suffix.parameters(), lr=1e-3, momentum=0.9)
for m in suffix.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.eval()
head = nn.Linear(1280, 10)
h = h_all[:32].clone()
y = torch.randint(0, 10, (32,))
def step():
    opt.zero_grad()
    nn.functional.cross_entropy(head(suffix(h)), y).backward()
    opt.step()
out["suffix_step_ms"] = 1e3 * median(step)
print(json.dumps(out))
"""
)

#: The stored prefix outputs rounded to bfloat16 or float16: bytes per image
#: and the effect on a ridge head solved on the features that the rest of
#: the pretrained network computes from them, scored on held-out rows of the
#: train split.
CACHE_DTYPE_CODE = (
    PREFIX_SPLIT
    + """
from skfastretrain import GramAccumulator, ridge_solve
X_fit, y_fit, X_hold, y_hold = load_data(
    {{"n_train": 2000, "n_test": 1000}}, holdout=True)
def stored(X):
    with torch.inference_mode():
        return torch.cat([prefix(prep(torch.from_numpy(X[i:i + 64, None])))
                          for i in range(0, len(X), 64)])
def features(H):
    with torch.inference_mode():
        return torch.cat([suffix(H[i:i + 64]) for i in range(0, len(H), 64)])
H_fit, H_hold = stored(X_fit), stored(X_hold)
out = {{"cut_block": cut, "size": size,
       "float32_bytes_per_image": H_fit[0].numel() * 4}}
ref = None
for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16),
                    ("float16", torch.float16)):
    rnd = (lambda H: H) if dtype is None else (lambda H: H.to(dtype).float())
    F_fit, F_hold = features(rnd(H_fit)), features(rnd(H_hold))
    T = torch.full((len(y_fit), 10), -1.0)
    T[torch.arange(len(y_fit)), torch.from_numpy(y_fit).long()] = 1.0
    acc = GramAccumulator(F_fit.shape[1], 10)
    for i in range(0, len(F_fit), 32):
        acc.update(F_fit[i:i + 32], T[i:i + 32])
    W, b = ridge_solve(acc, 1e-2 * float(acc.gram.diagonal().mean()))
    pred = (F_hold.double() @ W.double() + b.double()).argmax(1).numpy()
    row = {{"holdout_acc": float((pred == y_hold).mean())}}
    if ref is None:
        ref = (pred, F_hold)
    else:
        row["pred_changed"] = float((pred != ref[0]).mean())
        row["feature_rel_err"] = float((F_hold - ref[1]).norm() / ref[1].norm())
    out[name] = row
print(json.dumps(out))
"""
)


def _ms(value):
    return f"{value:.2f}"


def _path_table(records):
    from _bench_report import markdown_table

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
    from _bench_report import markdown_table

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
    from _bench_report import markdown_table

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

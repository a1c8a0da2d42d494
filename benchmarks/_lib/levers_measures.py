"""The speed levers' measurements, each run in its own process.

``benchmarks.levers`` runs every function here with
:func:`~benchmarks._lib.worker.run_in_process`; each returns one JSON record.
The keyword arguments' defaults are the saved run's; ``benchmarks.levers
--smoke`` passes smaller ones. Lite0's frozen prefix (``freeze_prob=0.5``,
``freeze_mode="prefix"``: the blocks before the first trained layer) and the
trained rest are built by hand (:func:`split_lite0`).
"""

import copy
import resource
import time

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from skfastretrain import GramAccumulator, ridge_solve

from .data import IMAGE_SIZE, load_data
from .measure import median_time
from .models import Preprocess, lite_features, pretrained_lite0


def _images(n=32):
    """``n`` random uint8 28 px images and labels of 10 classes."""
    x = torch.randint(0, 255, (n, 1, 28, 28), dtype=torch.uint8)
    return x, torch.randint(0, 10, (n,))


def _once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sgd(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def _step(opt, loss):
    opt.zero_grad()
    loss.backward()
    opt.step()


def _targets(y, k=10):
    """{-1, +1} one-hot targets of labels ``y`` (numpy)."""
    T = torch.full((len(y), k), -1.0)
    T[torch.arange(len(y)), torch.from_numpy(y).long()] = 1.0
    return T


def train_step(channels_last, bf16, compile, n=10):
    """Lite0's training step and eval forward (batch 32, 64 px), medians."""
    torch.manual_seed(0)
    m = nn.Sequential(Preprocess(), pretrained_lite0(10))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(memory_format=fmt)
    opt = _sgd(m.parameters())
    run = torch.compile(m) if compile else m
    x, y = _images()

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return run(x)

    def step():
        _step(opt, nn.functional.cross_entropy(forward().float(), y))

    m.train()
    first = _once(step)  # the compilation, with torch.compile
    step_s = median_time(step, n)
    m.eval()
    with torch.inference_mode():
        first_eval = _once(forward)
        eval_s = median_time(forward, n)
    return {
        "first_step_s": first,
        "step_s": step_s,
        "first_eval_s": first_eval,
        "eval_s": eval_s,
    }


def step_memory(size, prefix, steps=3):
    """Peak resident memory of ``steps`` training steps (batch 32)."""
    torch.manual_seed(0)
    m = nn.Sequential(Preprocess(size), pretrained_lite0(10)).train()
    if prefix:
        # What freeze_mode="prefix" does at freeze_prob=0.5: the first half of
        # the conv/linear layers in forward order, and every parameter before
        # the first trainable one, get requires_grad=False; the prefix's
        # BatchNorm runs in eval mode. Autograd then records nothing for it.
        convs = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
        last = convs[len(convs) // 2 - 1]
        for x in m.modules():
            if not list(x.children()):
                x.requires_grad_(False)
                if isinstance(x, nn.BatchNorm2d):
                    x.eval()
            if x is last:
                break
    opt = _sgd([p for p in m.parameters() if p.requires_grad])
    x, y = _images()

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    base = peak()
    for _ in range(steps):
        _step(opt, nn.functional.cross_entropy(m(x), y))
    return {"peak_mb": peak(), "step_increase_mb": peak() - base}


def gram_precision(n_train=2000, n_test=500, source="release"):
    """Gram statistics of real Lite0 features in float32 against float64."""
    setting = {"n_train": n_train, "n_test": n_test, "source": source}
    X_tr, y_tr, X_te, y_te = load_data(setting)
    model = pretrained_lite0().eval()
    H = torch.from_numpy(lite_features(model, X_tr))
    H_te = torch.from_numpy(lite_features(model, X_te))
    T = _targets(y_tr)
    out = {"d": H.shape[1], "n": len(H)}
    stats = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        acc = GramAccumulator(H.shape[1], 10, dtype=dtype)
        for i in range(0, len(H), 32):
            acc.update(H[i : i + 32], T[i : i + 32])
        stats[name] = acc
    ref = stats["float64"]

    def rel(a, b):
        return float((a.double() - b.double()).norm() / b.double().norm())

    out["gram_rel_err"] = rel(stats["float32"].gram, ref.gram)
    scale = float(ref.gram.diagonal().mean())
    for alpha_rel in (1e-4, 1e-2, 1.0):
        alpha = alpha_rel * scale
        W64, b64 = ridge_solve(ref, alpha)
        W32, b32 = ridge_solve(stats["float32"], alpha)
        p64 = (H_te.double() @ W64 + b64).argmax(1)
        p32 = (H_te.double() @ W32.double() + b32.double()).argmax(1)
        out[f"alpha_rel={alpha_rel:g}"] = {
            "coef_rel_err": rel(W32, W64),
            "pred_changed": float((p64 != p32).double().mean()),
            "test_acc_float64": float((p64.numpy() == y_te).mean()),
        }
    return out


class _Prefix(nn.Module):
    """Lite0's stem and its blocks before ``cut``."""

    def __init__(self, net, cut):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._stem_act)
        self.blocks = nn.Sequential(*net._blocks[:cut])

    def forward(self, x):
        return self.blocks(self.stem(x))


class _Rest(nn.Module):
    """Lite0's blocks from ``cut`` on and its head convolution: the features."""

    def __init__(self, net, cut):
        super().__init__()
        self.blocks = nn.Sequential(*net._blocks[cut:])
        self.top = nn.Sequential(
            net._conv_head, net._bn1, net._head_act, net._avg_pooling, net._flatten
        )

    def forward(self, h):
        return self.top(self.blocks(h))


def split_lite0(size=IMAGE_SIZE, freeze_prob=0.5):
    """Pretrained Lite0 cut where ``freeze_prob``'s frozen prefix ends.

    Returns ``(prep, net, cut, prefix, rest)``: the preprocessing, the
    network (10-way head, no drop-connect), the index of the block holding
    the first trained layer, and the two halves in eval mode (``rest`` ends
    with the pooled features; ``net._fc`` is the head).
    """
    torch.manual_seed(0)
    prep, net = Preprocess(size), pretrained_lite0(10)
    for block in net._blocks:
        block.drop_connect = 0.0
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # The head is no candidate: the last layer's index is len - 1.
    first_trained = layers[round(freeze_prob * (len(layers) - 1))]
    cut = next(
        i
        for i, b in enumerate(net._blocks)
        if any(m is first_trained for m in b.modules())
    )
    return prep, net, cut, _Prefix(net, cut).eval(), _Rest(net, cut).eval()


def _hold_batchnorm(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def prefix_cache(n=12):
    """The eval forward and training step from a stored prefix output against
    the full network (64 px, batch 32)."""
    prep, net, cut, prefix, rest = split_lite0()
    x, y = _images()

    def suffix(h):
        return net._fc(net._dropout(rest(h)))

    net.eval()
    with torch.inference_mode():
        cached = prefix(prep(x))
        full_eval = median_time(lambda: suffix(prefix(prep(x))), n)
        cached_eval = median_time(lambda: suffix(cached), n)
    cached = cached.clone()
    opt = _sgd([*rest.parameters(), *net._fc.parameters()])
    net.train()
    _hold_batchnorm(net)

    def step(h):
        _step(opt, nn.functional.cross_entropy(suffix(h), y))

    def frozen_step():
        with torch.no_grad():
            h = prefix(prep(x))
        step(h)

    return {
        "cut_block": cut,
        "bytes_per_image": cached[0].numel() * 4,
        "full_eval_s": full_eval,
        "cached_eval_s": cached_eval,
        "frozen_step_s": median_time(frozen_step, n),
        "cached_step_s": median_time(lambda: step(cached), n),
    }


#: The convolution and BatchNorm pairs of an EfficientNet-Lite block.
_CONV_BN = (
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
)


def fold_batchnorm(prefix):
    """A copy of ``prefix`` with every BatchNorm folded into the convolution
    before it (eval mode: the running statistics and affine become the
    convolution's weight and bias)."""
    folded = copy.deepcopy(prefix)
    folded.stem[0] = fuse_conv_bn_eval(folded.stem[0], folded.stem[1])
    folded.stem[1] = nn.Identity()
    for block in folded.blocks:
        for conv, bn in _CONV_BN:
            if hasattr(block, conv):
                fused = fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn))
                setattr(block, conv, fused)
                setattr(block, bn, nn.Identity())
    return folded.eval()


def _skorch_overhead(n, rows):
    """ms per batch of one epoch of a linear model on stored tensors, in a
    plain torch loop and through skorch's ``NeuralNet.fit``."""
    from skorch import NeuralNet

    X = torch.randn(rows, 16)
    Y = torch.randint(0, 10, (rows,))

    def plain():
        torch.manual_seed(0)
        m = nn.Linear(16, 10)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        for i in range(0, len(X), 32):
            _step(opt, nn.functional.cross_entropy(m(X[i : i + 32]), Y[i : i + 32]))

    def skorch_fit():
        NeuralNet(
            nn.Linear,
            module__in_features=16,
            module__out_features=10,
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.SGD,
            optimizer__momentum=0.9,
            lr=0.01,
            batch_size=32,
            max_epochs=1,
            train_split=None,
            verbose=0,
        ).fit(X, Y)

    n_batches = len(X) // 32
    return {
        "plain_batch_ms": 1e3 * median_time(plain, n) / n_batches,
        "skorch_batch_ms": 1e3 * median_time(skorch_fit, n) / n_batches,
    }


def default_path(size, n=10, skorch_rows=3200):
    """The default path's levers at ``size`` px.

    The head solve's pass per row at eval batches of 32, 128 and 256, from
    the images and from the stored prefix; the frozen prefix (batch 32) run
    as inference in several ways; skorch's per-batch overhead against a plain
    loop; and the trained rest's step, for scale.
    """
    prep, net, cut, prefix, rest = split_lite0(size)
    out = {"cut_block": cut, "size": size}
    x_all, _ = _images(256)
    with torch.inference_mode():
        h_all = prefix(prep(x_all))
    # 1. The solve's pass per row: from the images and from the stored prefix.
    for b in (32, 128, 256):
        with torch.inference_mode():
            full = median_time(lambda b=b: rest(prefix(prep(x_all[:b]))), min(n, 6))
            cached = median_time(lambda b=b: rest(h_all[:b]), min(n, 6))
        out[f"eval_full_row_ms_b{b}"] = 1e3 * full / b
        out[f"eval_cached_row_ms_b{b}"] = 1e3 * cached / b
    # 2. The frozen prefix (batch 32) as the cache fills it.
    x = prep(x_all[:32])
    with torch.no_grad():
        out["prefix_no_grad_s"] = median_time(lambda: prefix(x), n)
    with torch.inference_mode():
        out["prefix_inference_mode_s"] = median_time(lambda: prefix(x), n)
        folded = fold_batchnorm(prefix)
        err = (folded(x) - prefix(x)).abs().max() / prefix(x).abs().max()
        out["prefix_folded_s"] = median_time(lambda: folded(x), n)
        out["prefix_folded_rel_err"] = float(err)
        xc = x.contiguous(memory_format=torch.channels_last)
        folded_cl = fold_batchnorm(prefix).to(memory_format=torch.channels_last)
        out["prefix_folded_channels_last_s"] = median_time(lambda: folded_cl(xc), n)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["prefix_folded_bf16_s"] = median_time(lambda: folded(x), n)
            out["prefix_folded_channels_last_bf16_s"] = median_time(
                lambda: folded_cl(xc), n
            )
    # 3. skorch's per-batch overhead: the same tiny model on the same tensors.
    out |= _skorch_overhead(min(n, 5), skorch_rows)
    # The trained rest's step (batch 32), for scale.
    net.train()
    prefix.eval()
    opt = _sgd(rest.parameters())
    _hold_batchnorm(rest)
    head = nn.Linear(1280, 10)
    h = h_all[:32].clone()
    y = torch.randint(0, 10, (32,))
    out["suffix_step_ms"] = 1e3 * median_time(
        lambda: _step(opt, nn.functional.cross_entropy(head(rest(h)), y)), n
    )
    return out


def cache_dtype(size, n_fit=2000, n_hold=1000, source="release"):
    """The stored prefix outputs rounded to bfloat16 or float16.

    Bytes per image, and the effect on a ridge head solved on the features
    that the rest of the pretrained network computes from them, scored on
    held-out rows of the train split.
    """
    prep, _, cut, prefix, rest = split_lite0(size)
    setting = {"n_train": n_fit, "n_test": n_hold, "source": source}
    X_fit, y_fit, X_hold, y_hold = load_data(setting, holdout=True)

    def stored(X):
        with torch.inference_mode():
            return torch.cat(
                [
                    prefix(prep(torch.from_numpy(X[i : i + 64, None])))
                    for i in range(0, len(X), 64)
                ]
            )

    def features(H):
        with torch.inference_mode():
            return torch.cat([rest(H[i : i + 64]) for i in range(0, len(H), 64)])

    H_fit, H_hold = stored(X_fit), stored(X_hold)
    out = {
        "cut_block": cut,
        "size": size,
        "float32_bytes_per_image": H_fit[0].numel() * 4,
    }
    ref = None
    for name, dtype in (
        ("float32", None),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
    ):

        def rounded(H, dtype=dtype):
            return H if dtype is None else H.to(dtype).float()

        F_fit, F_hold = features(rounded(H_fit)), features(rounded(H_hold))
        T = _targets(y_fit)
        acc = GramAccumulator(F_fit.shape[1], 10)
        for i in range(0, len(F_fit), 32):
            acc.update(F_fit[i : i + 32], T[i : i + 32])
        W, b = ridge_solve(acc, 1e-2 * float(acc.gram.diagonal().mean()))
        pred = (F_hold.double() @ W.double() + b.double()).argmax(1).numpy()
        row = {"holdout_acc": float((pred == y_hold).mean())}
        if ref is None:
            ref = (pred, F_hold)
        else:
            row["pred_changed"] = float((pred != ref[0]).mean())
            row["feature_rel_err"] = float((F_hold - ref[1]).norm() / ref[1].norm())
        out[name] = row
    return out

"""The GPU benchmark: FastRetrainClassifier against a plain torch loop on CUDA.

On a torchvision ResNet-50 at 224 px (SGD with momentum 0.9, batch 32, the
estimator's own preprocessing in both) it measures

1. the SGD epochs' throughput on synthetic images (images/s; the estimator's
   ``dur``, its ``solve_dur`` apart) of the estimator with its default
   freezing and on its plain path (``freeze_prob=0.0, ridge_lambda=None``:
   all layers trained, no solves, as in the plain loop), against a plain
   torch loop (goal: estimator / plain >= 0.9);
2. the same under bf16 autocast: ``precision="bfloat16"``, and the plain
   loop under ``torch.autocast("cuda", dtype=torch.bfloat16)``, channels-last;
3. with ``--weights`` (a ResNet-50 state dict; nothing is downloaded), P1:
   the estimator's (defaults) time to reach plain fine-tuning's best accuracy
   on Fashion-MNIST rows held out of the train split, over plain's time.

Without CUDA it prints that it was skipped and exits 0, writing nothing.
Usage, from the repository root (``--quick``: 1024 images, 2 epochs, else 4096
and 3; ``--smoke``: a ResNet-18 at 64 px on 128 images, 2 epochs, written to a
temporary folder; NAME: ``gpu``)::

    python -m benchmarks.gpu [--quick | --smoke] [--weights PATH] [--n-train N]
        [--epochs E] [--batch-size B] [--out NAME]  # results/NAME.json, .md
"""

import argparse
import copy
import functools
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._lib import results as results_lib
from ._lib.measure import TestAccuracy, machine_info
from ._lib.tables import markdown_table

SKIP_LINE = (
    "benchmarks.gpu: the GPU benchmark needs a CUDA GPU; skipped, nothing written."
)
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
#: Plain-loop rates: the plain path's lr="auto", and benchmarks.transfer's sgdm (P1).
THROUGHPUT_LR, FINE_TUNE_LR = 0.001, 0.003
#: name -> estimator parameters over its defaults (None: the plain loop)
RUNS = {"plain loop": None, "estimator, defaults": {}}
RUNS["estimator, plain path"] = {"freeze_prob": 0.0, "ridge_lambda": None}


def _sync(device):
    # CUDA runs asynchronously: a clock read without this times the queueing.
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _median_epoch(times):
    """Median epoch seconds, the first (warm-up, lr probe, cache fill) left out."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def synthetic_images(n, size, seed=0):
    """Learnable uint8 images (n, 3, size, size), 10 classes: random labels
    could make the estimator's DivergenceGuard stop a fit."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g) % 10
    coarse = torch.rand(10, 3, 8, 8, generator=g)
    templates = (F.interpolate(coarse, size=size) * 153).byte()
    X = torch.randint(0, 103, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return (X + templates[y]).numpy(), y.numpy()


def held_batchnorm(model, momentum):
    """The BatchNorm layers the estimator's ``bn_mode="auto"`` holds in eval mode.

    Those whose running statistics are trained (pretrained); the others
    train on batch statistics and get ``momentum``.
    """
    held = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            if (m.running_mean != 0).any() or (m.running_var != 1).any():
                held.append(m)
            else:
                m.momentum = momentum
    return held


def plain_train(X, y, cfg, *, weights=None, precision="float32", holdout=None):
    """Train ``cfg["arch"]`` with a new 10-class head in a plain torch loop.

    ``X`` (uint8, (n, C, H, W)) stays on the CPU, moved a shuffled batch at a
    time as by the estimator's DataLoader; BatchNorm with trained statistics
    is held in eval mode, as by the estimator's ``bn_mode="auto"``. Returns
    ``dur`` (seconds per epoch) and ``points`` (accuracy on ``holdout`` after
    cumulative seconds of SGD epochs).
    """
    import torchvision

    from ._lib.models import Preprocess

    torch.manual_seed(0)
    dev, bs, bf16 = cfg["device"], cfg["batch_size"], precision == "bfloat16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    prep = Preprocess(cfg["size"], **IMAGENET).to(dev)
    model = torchvision.models.get_model(cfg["arch"], weights=None)
    if weights is not None:  # a state dict, loaded as the estimator loads it
        model.load_state_dict(
            torch.load(weights, map_location="cpu", weights_only=True)
        )
    model.fc = torch.nn.Linear(model.fc.in_features, 10)
    held = held_batchnorm(model, 0.1)  # the estimator's BatchNorm choice
    model = model.to(dev, memory_format=fmt)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()

    def forward(net, xb):
        x = prep(xb.to(dev)).contiguous(memory_format=fmt)
        with torch.autocast(torch.device(dev).type, torch.bfloat16, enabled=bf16):
            return net(x).float()

    def epoch(net, opt, cos, batches, hold=()):
        net.train()
        for m in hold:
            m.eval()
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(net, Xt[idx]), yt[idx]).backward()
            opt.step()
            if cos is not None:
                cos.step()  # per batch, as the estimator's cosine schedule

    sgd = functools.partial(torch.optim.SGD, lr=cfg["lr"], momentum=0.9)
    spare = copy.deepcopy(model)  # warm-up steps that leave the timed model as is
    epoch(spare, sgd(spare.parameters()), None, torch.randperm(len(Xt)).split(bs)[:3])
    opt = sgd(model.parameters())
    steps = cfg["epochs"] * -(-len(Xt) // bs)  # batches in the run
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    cos = cos if cfg.get("cosine") else None
    out = {"dur": [], "points": []}
    for i in range(1, cfg["epochs"] + 1):
        batches = torch.randperm(len(Xt)).split(bs)
        _sync(dev)
        start = time.perf_counter()
        epoch(model, opt, cos, batches, held)
        _sync(dev)
        out["dur"].append(time.perf_counter() - start)
        if holdout is not None:
            model.eval()
            with torch.inference_mode():
                Xh = torch.from_numpy(holdout[0][:, None]).split(256)
                pred = torch.cat([forward(model, b).argmax(1).cpu() for b in Xh])
            acc = float((pred.numpy() == holdout[1]).mean())
            out["points"].append({"epoch": i, "time": sum(out["dur"]), "acc": acc})
    return out


def estimator_train(X, y, cfg, *, weights=None, holdout=None, **params):
    """Fit FastRetrainClassifier (``params`` over its defaults); its timings.

    ``dur``, ``solve_dur``, ``init_solve_dur``, ``fit_wall`` and ``points``
    (held-out accuracy after seconds of fit, lr probe and solves counted).
    skorch's ``dur`` ends with the GPU's work: every batch calls ``.item()``.
    """
    from skfastretrain import FastRetrainClassifier

    class SyncedAccuracy(TestAccuracy):
        def _measure(self, net, epoch, train_loss=None):
            _sync(net.device)
            return super()._measure(net, epoch, train_loss)

    _sync(cfg["device"])
    start = time.perf_counter()  # also TestAccuracy's clock, copied into the fit
    callbacks = [("test_acc", SyncedAccuracy(*holdout, t0=start))] if holdout else []
    clf = FastRetrainClassifier(
        cfg["arch"], weights=weights, device=cfg["device"], input_size=cfg["size"],
        max_epochs=cfg["epochs"], batch_size=cfg["batch_size"], random_state=0,
        verbose=0, callbacks=callbacks, **params)  # fmt: skip
    clf.fit(X, y)
    _sync(cfg["device"])
    h = clf.history_
    out = {k: [row.get(k) for row in h] for k in ("dur", "solve_dur")}
    out["init_solve_dur"], out["lr"] = h[0].get("init_solve_dur"), clf.lr_
    out["diverged"], cb = "diverged" in h[-1], dict(clf.net_.callbacks_).get("test_acc")
    out["fit_wall"] = time.perf_counter() - start - (cb.eval_time_ if cb else 0.0)
    out["points"] = [{"epoch": p["epoch"], "time": p["time"], "acc": p["test_acc"]}
                     for p in (cb.points_ if cb else [])]  # fmt: skip
    return out


def throughput(cfg, precisions=("float32", "bfloat16")):
    """Parts 1 and 2: one record per run of :data:`RUNS` and precision."""
    X, y = synthetic_images(cfg["n_train"], cfg["size"])
    cfg = {**cfg, "epochs": max(2, cfg["epochs"]), "lr": THROUGHPUT_LR}
    records = []
    for precision in precisions:
        for name, params in RUNS.items():
            if params is None:
                r = plain_train(X, y, cfg, precision=precision)
            else:
                r = estimator_train(X, y, cfg, precision=precision, **params)
            r |= {"name": name, "precision": precision, "params": params}
            r["images_per_s"] = len(y) / _median_epoch(r["dur"])
            records.append(r)
            print(f"{name}, {precision}: {r['images_per_s']:.0f} images/s", flush=True)
    return records


def p1(weights, cfg):
    """Part 3: P1 on Fashion-MNIST, scored on rows held out of the train split."""
    from sklearn.model_selection import train_test_split

    from skfastretrain.datasets import load_fashion_mnist

    n_ho = max(100, cfg["n_train"] // 4)
    kw = {"split": "train", "subset": cfg["n_train"] + n_ho, "random_state": 1,
          "return_X_y": True}  # fmt: skip
    try:
        source, (X, y) = "release", load_fashion_mnist(source="release", **kw)
    except FileNotFoundError:  # the release is not installed here
        source, (X, y) = "bundled", load_fashion_mnist(source="bundled", **kw)
    X, X_ho, y, y_ho = train_test_split(X, y, test_size=n_ho, stratify=y,
                                        random_state=0)  # fmt: skip
    kw = {"weights": str(Path(weights).resolve()), "holdout": (X_ho, y_ho)}
    plain = plain_train(X[:, None], y, cfg | {"lr": FINE_TUNE_LR, "cosine": True}, **kw)
    ours = estimator_train(X, y, cfg, **kw)
    best = max(p["acc"] for p in plain["points"])
    t_plain, t_ours = (
        next((p["time"] for p in run["points"] if p["acc"] >= best - 1e-12), None)
        for run in (plain, ours)
    )
    return {"measured": True, "source": source, "n_fit": len(y), "n_holdout": n_ho,
            "plain": plain, "estimator": ours, "plain_best": best, "t_plain": t_plain,
            "t_estimator": t_ours, "value": t_ours and t_ours / t_plain}  # fmt: skip


def render(result):
    """The markdown of a run: throughput, bf16 speed-ups and P1."""
    m, s, p = result["machine"], result["settings"], result["p1"]
    ips = {(r["name"], r["precision"]): r["images_per_s"] for r in result["throughput"]}
    text = (
        f"{m['gpu']}, torch {m['torch']}: {s['arch']} at {s['size']} px, batch "
        f"{s['batch_size']}, {s['n_train']} synthetic images, {max(2, s['epochs'])} "
        "epochs; images/s of the median SGD epoch after the first (warm-up, and the "
        "defaults' lr probe and prefix cache fill). bf16: autocast, channels-last.\n\n"
    )
    rows = []
    for r in result["throughput"]:
        key = (r["name"], r["precision"])
        ratio = ips[key] / ips[("plain loop", r["precision"])]
        vs = f"{ratio:.2f} ({'met' if ratio >= 0.9 else 'missed'})"
        solve = [d for d in r.get("solve_dur", []) if d is not None]
        solve = f"{statistics.median(solve):.2f}" if solve else "-"
        rows.append([*key, f"{ips[key]:.0f}", f"{_median_epoch(r['dur']):.2f}",
                     f"{r['dur'][0]:.2f}", solve, "-" if r["params"] is None else vs,
                     f"{ips[key] / ips[(r['name'], 'float32')]:.2f}x"])  # fmt: skip
    header = ["run", "precision", "images/s", "epoch s", "first epoch s",
              "solve s", "/ plain loop (goal >= 0.9)", "/ float32"]  # fmt: skip
    text += markdown_table(header, rows)
    if not p["measured"]:
        return f"{text}\n\nP1 not measured: {p['reason']}."
    t_ours = "never" if p["t_estimator"] is None else f"{p['t_estimator']:.1f} s"
    value = "never reached" if p["value"] is None else f"{p['value']:.2f}"
    text += (
        f"\n\nP1 on Fashion-MNIST ({p['source']}; {p['n_fit']} fit, {p['n_holdout']} "
        f"held-out train-split rows): plain fine-tuning (lr {FINE_TUNE_LR}, cosine) "
        f"reached its best {p['plain_best']:.3f} after {p['t_plain']:.1f} s of SGD "
        f"epochs, the estimator (defaults; its whole fit counted, lr probe and solves "
        f"included) after {t_ours}: P1 = {value} (goal <= 0.4).\n\n"
    )
    curve = [[run, q["epoch"], f"{q['time']:.1f}", f"{q['acc']:.3f}"]
             for run in ("plain", "estimator") for q in p[run]["points"]]  # fmt: skip
    return text + markdown_table(["run", "epoch", "time s", "held-out acc"], curve)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1024 images, 2 epochs")
    results_lib.add_arguments(
        parser, "ResNet-18 at 64 px, 128 images, 2 epochs: checks the code"
    )
    parser.add_argument("--weights", help="ResNet-50 state dict file, for P1")
    parser.add_argument("--n-train", type=int, help="images (default 4096)")
    parser.add_argument("--epochs", type=int, help="epochs (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="gpu", help="results/<OUT>.json and .md")
    args = parser.parse_args(argv)
    if args.smoke and args.quick:
        parser.error("--smoke and --quick exclude each other")
    # Before any heavy work: CI has no GPU, and saved results must stay.
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    if args.weights and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights}: no such file")
    results = results_lib.Results.from_args(args)
    small = args.quick or args.smoke
    n_train = args.n_train or (128 if args.smoke else 1024 if small else 4096)
    cfg = {"arch": "resnet50", "device": "cuda", "size": 224, "n_train": n_train}
    cfg |= {"epochs": args.epochs or (2 if small else 3), "quick": args.quick}
    if args.smoke:
        cfg |= {"arch": "resnet18", "size": 64, "smoke": True}
    cfg["batch_size"] = args.batch_size
    tf32 = [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
    gpu = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    result = {"machine": machine_info() | gpu | {"tf32": tf32}, "settings": cfg}
    bf16 = torch.cuda.is_bf16_supported()
    result["throughput"] = throughput(cfg, ("float32", "bfloat16")[: 1 + bf16])
    reason = "no --weights given (a ResNet-50 state dict; nothing is downloaded)"
    result["p1"] = p1(args.weights, cfg) if args.weights else {
        "measured": False, "reason": reason}  # fmt: skip
    results.write_json(f"{args.out}.json", result)
    text = render(result)
    results.write_text(f"{args.out}.md", text)
    print(text)
    print(f"\nwrote {results.folder / args.out}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fastai-style baseline: ``Learner.fine_tune`` written out in plain torch.

fastai's recipe for a pretrained CNN, which most practitioners reach for
first (``fastai.callback.schedule.fine_tune``):

1. ``freeze_epochs=1`` epoch that trains only the new head on the frozen
   body, with a one-cycle schedule peaking late (``pct_start=0.99``);
2. the base rate halved, everything unfrozen, and the remaining epochs
   trained with a one-cycle schedule (``pct_start=0.3``, ``div=5``) over
   *discriminative* rates: the layer groups' peak rates rise geometrically
   from ``base_lr / lr_mult`` (the stem) to ``base_lr`` (the head).

The optimizer is fastai's default, Adam with decoupled weight decay 0.01,
``betas=(0.9, 0.99)``, ``eps=1e-5``, its first moment cycled 0.95 -> 0.85 ->
0.95 against the rate. Two deviations, both in the baseline's favour on two
cores: in the frozen epoch the body runs under ``no_grad`` in eval mode
(fastai keeps BatchNorm trainable there, ``train_bn=True``, which needs the
body's activations kept), and the epoch budget is the other methods' (the
frozen epoch counts: ``fine_tune(epochs - 1)``). The base rate and the
BatchNorm mode of the unfrozen epochs come from ``benchmarks.pilot`` on rows
held out of the train split.
"""

import math
import time

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader, TensorDataset

from .data import BATCH_SIZE, SEED, image_size, n_classes_of
from .measure import TestAccuracy
from .models import Preprocess


def even_mults(lo, hi, n):
    """``n`` rates from ``lo`` to ``hi``, evenly spaced in log scale (fastai's)."""
    if n == 1:
        return [hi]
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def layer_groups(backbone):
    """EfficientNet-Lite's parameters in fastai's three groups, stem to head.

    fastai splits a pretrained body in two at its middle and puts the new
    head apart; the rates of :func:`even_mults` follow this order.
    """
    blocks = list(backbone._blocks)
    half = len(blocks) // 2
    groups = (
        [backbone._conv_stem, backbone._bn0, *blocks[:half]],
        [*blocks[half:], backbone._conv_head, backbone._bn1],
        [backbone._fc],
    )
    return [[p for m in group for p in m.parameters()] for group in groups]


class _Predictor:
    """``predict`` for :class:`TestAccuracy`, in eval mode, without grad."""

    def __init__(self, model):
        self.model = model

    def predict(self, X):
        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(X), 256):
                out.append(self.model(torch.from_numpy(X[i : i + 256])).argmax(1))
        self.model.train(was_training)
        return torch.cat(out).numpy()


def _one_cycle(optimizer, max_lrs, steps, *, pct_start, div):
    # fastai's one cycle: start at max/div, end at max/1e5 (torch's
    # final_div_factor is relative to the start rate), momentum 0.95-0.85.
    return OneCycleLR(
        optimizer,
        max_lr=max_lrs,
        total_steps=steps,
        pct_start=pct_start,
        div_factor=div,
        final_div_factor=1e5 / div,
        base_momentum=0.85,
        max_momentum=0.95,
        anneal_strategy="cos",
    )


def _epoch(model, loader, optimizer, scheduler, *, frozen_body=None):
    losses, start = [], time.perf_counter()
    for xb, yb in loader:
        if frozen_body is None:
            logits = model(xb)
        else:
            # The head alone: the body's output needs no graph.
            body, head = frozen_body
            with torch.no_grad():
                features = body(xb)
            logits = head(features)
        loss = nn.functional.cross_entropy(logits, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item() * len(yb))
    return sum(losses) / len(loader.dataset), time.perf_counter() - start


def run_fastai(params, data, setting, *, backbone):
    """Fine-tune as fastai's ``fine_tune`` does; return the runner's tuple.

    ``backbone(params, n_classes)`` builds the pretrained network with a new
    head, its BatchNorm mode and stochastic depth set as for the other
    baseline.
    """
    X_tr, y_tr, X_te, y_te = data
    epochs, size = setting["epochs"], image_size(setting)
    acc_cb = TestAccuracy(X_te, y_te).initialize()
    acc_cb.t0 = time.perf_counter()
    torch.manual_seed(SEED)
    backbone = backbone(params, n_classes_of(y_tr))
    model = nn.Sequential(Preprocess(size), backbone)
    predictor = _Predictor(model)
    fc = backbone._fc
    backbone._fc = nn.Identity()
    body = nn.Sequential(Preprocess(size), backbone)
    dataset = TensorDataset(torch.from_numpy(X_tr[:, None]), torch.from_numpy(y_tr))
    loader = DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(SEED),
    )
    steps = math.ceil(len(dataset) / BATCH_SIZE)
    backbone._fc = fc
    groups = layer_groups(backbone)
    optimizer = torch.optim.AdamW(
        [{"params": g} for g in groups],
        lr=params["lr"],
        betas=(0.9, 0.99),
        eps=1e-5,
        weight_decay=params.get("weight_decay", 0.01),
    )
    acc_cb._measure(predictor, 0)
    history = []
    # 1. The head alone on the frozen body, all groups at base_lr.
    for p in backbone.parameters():
        p.requires_grad_(False)
    for p in fc.parameters():
        p.requires_grad_(True)
    body.eval()
    fc.train()
    backbone._fc = nn.Identity()
    scheduler = _one_cycle(
        optimizer, [params["lr"]] * len(groups), steps, pct_start=0.99, div=25.0
    )
    loss, dur = _epoch(None, loader, optimizer, scheduler, frozen_body=(body, fc))
    backbone._fc = fc
    history.append({"dur": dur, "phase": "head"})
    acc_cb._measure(predictor, 1, loss)
    # 2. Everything, at discriminative rates from base_lr / 2.
    if epochs > 1:
        for p in backbone.parameters():
            p.requires_grad_(True)
        model.train()
        base = params["lr"] / 2
        lrs = even_mults(base / params.get("lr_mult", 100.0), base, len(groups))
        scheduler = _one_cycle(
            optimizer, lrs, steps * (epochs - 1), pct_start=0.3, div=5.0
        )
        for epoch in range(2, epochs + 1):
            loss, dur = _epoch(model, loader, optimizer, scheduler)
            history.append({"dur": dur, "phase": "all"})
            acc_cb._measure(predictor, epoch, loss)
    fit_wall = time.perf_counter() - acc_cb.t0 - acc_cb.eval_time_
    return acc_cb.points_, history, fit_wall, acc_cb.eval_time_, acc_cb.last_pred_, None

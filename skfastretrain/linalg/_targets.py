"""The head solve's targets and score: class labels or real values.

A head solved for classification regresses one-hot targets in {-1, +1} and
is scored by accuracy; a head solved for regression regresses the targets
themselves and is scored by R². Which one a batch asks for is told by its
targets' dtype, as scikit-learn's ``type_of_target`` tells a continuous
target from labels: integer labels are classes, floating-point values are a
regression, so the head solve needs no flag and works in any skorch net.
"""

import torch
import torch.nn.functional as F

__all__ = ["OutputScore", "encode_targets", "is_regression", "row_losses"]


def is_regression(y):
    """Whether targets ``y`` (tensor or array) are real values, not labels."""
    return torch.as_tensor(y).is_floating_point()


def encode_targets(y, n_outputs, *, device=None):
    """The ridge targets (b, ``n_outputs``) of a batch's ``y``.

    Integer labels (b,) become one-hot rows in {-1, +1}; real values (b,) or
    (b, ``n_outputs``) are taken as they are.
    """
    y = torch.as_tensor(y, device=device)
    if is_regression(y):
        return y.reshape(len(y), n_outputs).to(torch.float64)
    t = torch.full((len(y), n_outputs), -1.0, device=y.device)
    t[torch.arange(len(y), device=y.device), y.long()] = 1.0
    return t


def row_losses(outputs, y):
    """Each row's SGD loss: the log loss of integer labels, the squared error
    (averaged over the outputs) of real-valued targets."""
    if is_regression(y):
        t = torch.as_tensor(y, device=outputs.device).to(outputs.dtype)
        return ((outputs - t.reshape(outputs.shape)) ** 2).mean(1)
    return F.cross_entropy(outputs, y, reduction="none")


class OutputScore:
    """The score of a head's outputs on rows added batch by batch.

    The accuracy of the argmax for integer labels; for real targets the
    coefficient of determination R², averaged over the outputs with equal
    weights, as :func:`sklearn.metrics.r2_score` does by default; rows
    weighted as that function's ``sample_weight`` weighs them, when given.
    The running sums are one float64 tensor, :attr:`sums`, which a
    data-parallel fit adds over the ranks.
    """

    def __init__(self):
        self.sums = None
        self.regression = None

    def add(self, outputs, y, weights=None):
        """Add a batch's outputs (b, k) and targets (labels or values), with
        the rows' weights (b,) or None."""
        outputs = outputs.detach()
        y = torch.as_tensor(y, device=outputs.device)
        if self.regression is None:
            self.regression = is_regression(y)
        w = torch.ones(len(y), dtype=torch.float64, device=outputs.device)
        if weights is not None:
            w = torch.as_tensor(weights, device=outputs.device).double()
        if self.regression:
            out = outputs.double().reshape(len(y), -1)
            t = y.double().reshape(out.shape)
            wc = w[:, None]
            # Per output: squared error, target sum, squared target sum; the
            # rows' weight.
            parts = [(wc * (out - t) ** 2).sum(0), (wc * t).sum(0)]
            parts += [(wc * t**2).sum(0), w.sum()[None]]
        else:
            correct = (w * (outputs.argmax(1) == y.long())).sum()
            parts = [correct[None], w.sum()[None]]
        batch = torch.cat(parts).cpu()
        self.sums = batch if self.sums is None else self.sums + batch

    @property
    def value(self):
        """The accuracy or R² of the rows added; NaN before any."""
        if self.sums is None or not self.sums[-1] > 0:
            return float("nan")
        if not self.regression:
            return float(self.sums[0] / self.sums[1])
        n = self.sums[-1]
        sse, total, squares = self.sums[:-1].reshape(3, -1)
        variance = squares - total**2 / n
        # scikit-learn's convention for a constant target: 1 if predicted
        # exactly, else 0.
        r2 = torch.where(
            variance > 0,
            1 - sse / variance.clamp_min(1e-300),
            (sse == 0).double(),
        )
        return float(r2.mean())

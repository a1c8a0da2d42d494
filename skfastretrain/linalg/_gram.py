"""Batch-by-batch accumulation of the Gram statistics of the head solve.

Pure tensor arithmetic: no hooks, no skorch, no torch.distributed.
"""

import torch

from ._targets import OutputScore, encode_targets, is_regression

__all__ = [
    "GramAccumulator",
    "HeadStatistics",
    "sum_statistics",
    "update_folds",
]


class GramAccumulator:
    """Running sums for a ridge regression that never holds the feature matrix.

    For features ``H`` (n, d) and targets ``T`` (n, k) seen in mini-batches it
    keeps ``G = sum H_b^T H_b``, ``B = sum H_b^T T_b``, the column sums of ``H``
    and ``T``, the sum of squared targets and the row count ``n``. These are
    exactly the statistics of a full-batch ridge fit with an intercept, so
    :func:`~skfastretrain.ridge_solve` gives the same answer as solving on all
    of ``H`` at once. Batches are gathered until :attr:`CHUNK_ROWS` rows
    wait, then added in one product (small products run at a fraction of
    the GEMM rate); reading any sum adds the rest first.

    Parameters
    ----------
    n_features : int
        Width ``d`` of the features.
    n_targets : int
        Number ``k`` of target columns.
    dtype : torch.dtype, default=torch.float64
        Accumulation dtype. float64 keeps the centering exact enough for a
        ridge strength near zero; float32 halves memory and is faster on GPUs.
    device : str or torch.device, default="cpu"
        Where the sums live: keep them beside the features to avoid copies.

    Attributes
    ----------
    gram : torch.Tensor of shape (d, d)
    cross : torch.Tensor of shape (d, k)
    feature_sum : torch.Tensor of shape (d,)
    target_sum : torch.Tensor of shape (k,)
    target_sq_sum : torch.Tensor of shape ()
    n_samples : int or float
        The number of rows seen, or the sum of their weights once a batch
        came with weights.

    Examples
    --------
    >>> import torch
    >>> from skfastretrain import GramAccumulator
    >>> acc = GramAccumulator(3, 2)
    >>> H, T = torch.ones(4, 3), torch.zeros(4, 2)
    >>> acc.update(H[:2], T[:2])
    >>> acc.update(H[2:], T[2:])
    >>> acc.n_samples, acc.gram[0, 0].item()
    (4, 4.0)
    """

    #: Rows gathered before they are added to the sums: one large update
    #: runs near the GEMM rate, many small ones well below it (the
    #: Benchmarks page, P4).
    CHUNK_ROWS = 256

    def __init__(
        self,
        n_features: int,
        n_targets: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ):
        self.n_features = n_features
        self.n_targets = n_targets
        self.dtype = dtype
        self.device = torch.device(device)
        kw = {"dtype": dtype, "device": self.device}
        self._sums = (
            torch.zeros(n_features, n_features, **kw),
            torch.zeros(n_features, n_targets, **kw),
            torch.zeros(n_features, **kw),
            torch.zeros(n_targets, **kw),
            torch.zeros((), **kw),
        )
        self._pending = []
        self.n_samples = 0

    def update(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> None:
        """Add one batch.

        Parameters
        ----------
        features : torch.Tensor of shape (b, d)
        targets : torch.Tensor of shape (b, k)
        weights : torch.Tensor of shape (b,) or None, default=None
            Non-negative row weights: every sum weighs its rows by them, and
            :attr:`n_samples` adds their sum, so that an integer weight
            equals repeating the row and a zero weight leaves it out. None
            weighs every row 1. They are not checked for signs or NaN here
            (that would synchronize a GPU per batch): check them once, as
            the estimator does.
        """
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"features must have shape (b, {self.n_features}), "
                f"got {tuple(features.shape)}"
            )
        if targets.shape != (features.shape[0], self.n_targets):
            raise ValueError(
                f"targets must have shape ({features.shape[0]}, {self.n_targets}), "
                f"got {tuple(targets.shape)}"
            )
        h = features.detach().to(device=self.device, dtype=self.dtype, copy=True)
        t = targets.detach().to(device=self.device, dtype=self.dtype, copy=True)
        w = None
        if weights is not None:
            if tuple(weights.shape) != (features.shape[0],):
                raise ValueError(
                    f"weights must have shape ({features.shape[0]},), "
                    f"got {tuple(weights.shape)}"
                )
            w = weights.detach().to(device=self.device, dtype=self.dtype)
            self.n_samples += float(w.sum())
        else:
            self.n_samples += h.shape[0]
        self._pending.append((h, t, w))
        if sum(len(p[0]) for p in self._pending) >= self.CHUNK_ROWS:
            self._flush()

    def _flush(self):
        if not self._pending:
            return
        h = torch.cat([p[0] for p in self._pending])
        t = torch.cat([p[1] for p in self._pending])
        w = None
        if any(p[2] is not None for p in self._pending):
            w = torch.cat(
                [
                    p[2] if p[2] is not None else p[0].new_ones(len(p[0]))
                    for p in self._pending
                ]
            )
        self._pending = []
        gram, cross, feature_sum, target_sum, target_sq_sum = self._sums
        # Weighted sums: the weighted rows on one side of each product.
        hw, tw = (h, t) if w is None else (h * w[:, None], t * w[:, None])
        # Sums made under inference mode (a feature pass) can only be
        # updated in it, and this may run after the pass has ended.
        with torch.inference_mode(gram.is_inference()):
            gram.addmm_(hw.T, h)
            cross.addmm_(hw.T, t)
            feature_sum += hw.sum(0)
            target_sum += tw.sum(0)
            target_sq_sum += (tw * t).sum()

    def _combine(self, other, sign):
        if (self.n_features, self.n_targets) != (other.n_features, other.n_targets):
            raise ValueError("Cannot combine accumulators of different shapes.")
        out = GramAccumulator(
            self.n_features, self.n_targets, dtype=self.dtype, device=self.device
        )
        for mine, theirs, new in zip(
            self.tensors(), other.tensors(), out.tensors(), strict=True
        ):
            new.copy_(mine + sign * theirs.to(mine))
        out.n_samples = self.n_samples + sign * other.n_samples
        return out

    def __add__(self, other):
        """Statistics of the union of both sets of rows."""
        return self._combine(other, 1)

    def __sub__(self, other):
        """Statistics of these rows without ``other``'s (a subset of them)."""
        return self._combine(other, -1)

    def tensors(self):
        """The sums as a tuple, in a fixed order (for all-reduce or saving)."""
        self._flush()
        return self._sums

    gram = property(lambda self: self.tensors()[0])
    cross = property(lambda self: self.tensors()[1])
    feature_sum = property(lambda self: self.tensors()[2])
    target_sum = property(lambda self: self.tensors()[3])
    target_sq_sum = property(lambda self: self.tensors()[4])

    def with_targets(self, n_new, fill=-1.0):
        """The statistics with ``n_new`` more target columns, equal to
        ``fill`` on every row seen.

        A class that none of the rows seen belongs to has the target
        ``fill`` on all of them (``-1`` in the classifier's one-hot coding in
        {-1, +1}), so its sums follow from the kept ones: ``fill`` times the
        feature sums and the row count. No row is revisited.

        Parameters
        ----------
        n_new : int
            Target columns to add, after the current ones.
        fill : float, default=-1.0
            Their value on every row seen so far.

        Returns
        -------
        GramAccumulator
            ``n_targets`` is ``self.n_targets + n_new``.

        Examples
        --------
        >>> import torch
        >>> from skfastretrain import GramAccumulator
        >>> acc = GramAccumulator(2, 1)
        >>> acc.update(torch.ones(3, 2), -torch.ones(3, 1))
        >>> wide = acc.with_targets(1)
        >>> wide.cross[:, 1].tolist(), wide.target_sum.tolist()
        ([-3.0, -3.0], [-3.0, -3.0])
        """
        gram, cross, feature_sum, target_sum, target_sq_sum = self.tensors()
        n = self.n_samples
        out = GramAccumulator(
            self.n_features,
            self.n_targets + n_new,
            dtype=self.dtype,
            device=self.device,
        )
        new_cross = fill * feature_sum[:, None].expand(-1, n_new)
        new_target_sum = torch.full_like(target_sum[:1].expand(n_new), fill * n)
        for new, value in zip(
            out.tensors(),
            (
                gram,
                torch.cat([cross, new_cross], dim=1),
                feature_sum,
                torch.cat([target_sum, new_target_sum]),
                target_sq_sum + fill * fill * n * n_new,
            ),
            strict=True,
        ):
            new.copy_(value)
        out.n_samples = n
        return out

    def scaled(self, scale):
        """The statistics of ``H[:, keep] * scale[keep]``, ``keep = scale != 0``.

        Scaling the features by a diagonal ``D`` maps the sums to ``D G D``,
        ``D B`` and ``D h``; the targets' sums are unchanged. Columns with a
        zero scale are dropped rather than kept as zeros, so that a solve on
        the result costs what its kept columns cost.

        Parameters
        ----------
        scale : torch.Tensor of shape (d,)

        Returns
        -------
        GramAccumulator
            ``n_features`` is the number of nonzero entries of ``scale``.
        """
        scale = torch.as_tensor(scale).to(device=self.device, dtype=self.dtype)
        if scale.shape != (self.n_features,):
            raise ValueError(
                f"scale must have shape ({self.n_features},), got {tuple(scale.shape)}."
            )
        keep = scale != 0
        s = scale[keep]
        gram, cross, feature_sum, target_sum, target_sq_sum = self.tensors()
        out = GramAccumulator(
            int(keep.sum()), self.n_targets, dtype=self.dtype, device=self.device
        )
        for new, value in zip(
            out.tensors(),
            (
                gram[keep][:, keep] * s[:, None] * s,
                cross[keep] * s[:, None],
                feature_sum[keep] * s,
                target_sum,
                target_sq_sum,
            ),
            strict=True,
        ):
            new.copy_(value)
        out.n_samples = self.n_samples
        return out

    def centered(self):
        """Gram and cross products of the column-centered ``H`` and ``T``.

        They are computed in float64 whatever the accumulation dtype (the
        float64 final step of a float32 accumulation), into one new d x d
        matrix.

        Returns
        -------
        gram_c : torch.Tensor of shape (d, d)
        cross_c : torch.Tensor of shape (d, k)
        feature_mean : torch.Tensor of shape (d,)
        target_mean : torch.Tensor of shape (k,)
        """
        if self.n_samples == 0:
            raise ValueError("GramAccumulator is empty: call update() first.")
        n = self.n_samples
        sums = self.tensors()
        cross, feature_sum, target_sum = (t.to(torch.float64) for t in sums[1:4])
        mu_h = feature_sum / n
        mu_t = target_sum / n
        # In place on a copy: an outer product would be a second d x d matrix.
        gram_c = sums[0].to(torch.float64, copy=True)
        gram_c.addr_(mu_h, mu_h, alpha=-n)
        cross_c = cross - n * torch.outer(mu_h, mu_t)
        return gram_c, cross_c, mu_h, mu_t


def sum_statistics(accumulators):
    """One :class:`GramAccumulator` holding the sums of several, added in place."""
    first = accumulators[0]
    total = GramAccumulator(
        first.n_features, first.n_targets, dtype=first.dtype, device=first.device
    )
    for acc in accumulators:
        if (acc.n_features, acc.n_targets) != (total.n_features, total.n_targets):
            raise ValueError("Cannot combine accumulators of different shapes.")
        for mine, theirs in zip(total.tensors(), acc.tensors(), strict=True):
            mine += theirs.to(mine)
        total.n_samples += acc.n_samples
    return total


def update_folds(folds, start, features, targets, weights=None):
    """Add rows to per-fold statistics, assigned round-robin by position.

    Row ``i`` of the batch is row ``start + i`` of the pass and goes to fold
    ``(start + i) % len(folds)``, so the folds do not depend on batch size.
    ``weights`` (b,) weigh the rows (see :meth:`GramAccumulator.update`).
    """
    if len(folds) == 1:
        folds[0].update(features, targets, weights)
        return
    fold = torch.arange(start, start + len(features), device=features.device)
    fold = fold % len(folds)
    for f, acc in enumerate(folds):
        mask = fold == f
        acc.update(
            features[mask], targets[mask], None if weights is None else weights[mask]
        )


class HeadStatistics:
    """What a head solve gathers batch by batch from features and targets.

    Per-fold :class:`GramAccumulator` s (rows assigned round-robin by their
    position, for ``ridge_lambda="auto"``), a sample of rows for the
    temperature fit, and the score of the current head's outputs
    (:class:`OutputScore`: accuracy for class labels, R² for real values).

    Parameters
    ----------
    n_outputs : int
        The head's outputs: the classes, or the regression targets.
    n_folds : int, default=1
    keep : ndarray of bool or None, default=None
        Positions (in arrival order) of the rows kept as a sample.
    dtype : torch.dtype, default=torch.float64
        Accumulation dtype.
    """

    def __init__(self, n_outputs, *, n_folds=1, keep=None, dtype=torch.float64):
        self.n_outputs = n_outputs
        self.n_folds = n_folds
        self.keep = keep
        self.dtype = dtype
        self.folds = None
        self.kept_h, self.kept_y = [], []
        self.score = OutputScore()
        #: Whether the targets are real values (None before any batch).
        self.regression = None
        self.n_seen = 0

    def add(self, features, targets, outputs=None, weights=None):
        """Add a batch of features (b, d), targets (integer labels (b,) or
        real values) and the head's outputs, with row weights (b,) for the
        statistics, or None."""
        h = features.detach()
        y = torch.as_tensor(targets, device=h.device)
        if self.folds is None:
            self.folds = [
                GramAccumulator(
                    h.shape[1], self.n_outputs, dtype=self.dtype, device=h.device
                )
                for _ in range(self.n_folds)
            ]
        if self.regression is None:
            self.regression = is_regression(y)
        t = encode_targets(y, self.n_outputs)
        if weights is not None:
            weights = torch.as_tensor(weights, device=h.device)
        update_folds(self.folds, self.n_seen, h, t, weights)
        if outputs is not None:
            self.score.add(outputs, y)
        if self.keep is not None:
            mask = self.keep[self.n_seen : self.n_seen + len(y)]
            mask = torch.from_numpy(mask).to(h.device)
            self.kept_h.append(h[mask].double().cpu())
            self.kept_y.append(y[mask].cpu())
        self.n_seen += len(y)

    def total(self):
        """The statistics of all rows."""
        if self.folds is None:
            raise ValueError("No batch was added.")
        return sum_statistics(self.folds)

    def sample(self):
        """The kept rows as (features float64, targets) on the CPU."""
        if not self.kept_y:
            return None, None
        return torch.cat(self.kept_h), torch.cat(self.kept_y)

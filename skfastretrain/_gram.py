"""Batch-by-batch accumulation of the Gram statistics of the head solve."""

import torch

__all__ = ["GramAccumulator"]


class GramAccumulator:
    """Running sums for a ridge regression that never holds the feature matrix.

    For features ``H`` (n, d) and targets ``T`` (n, k) seen in mini-batches it
    keeps ``G = sum H_b^T H_b``, ``B = sum H_b^T T_b``, the column sums of ``H``
    and ``T``, the sum of squared targets and the row count ``n``. These are
    exactly the statistics of a full-batch ridge fit with an intercept, so
    :func:`~skfastretrain.ridge_solve` gives the same answer as solving on all
    of ``H`` at once.

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
    n_samples : int

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

    def __init__(self, n_features, n_targets, *, dtype=torch.float64, device="cpu"):
        self.n_features = n_features
        self.n_targets = n_targets
        self.dtype = dtype
        self.device = torch.device(device)
        kw = {"dtype": dtype, "device": self.device}
        self.gram = torch.zeros(n_features, n_features, **kw)
        self.cross = torch.zeros(n_features, n_targets, **kw)
        self.feature_sum = torch.zeros(n_features, **kw)
        self.target_sum = torch.zeros(n_targets, **kw)
        self.target_sq_sum = torch.zeros((), **kw)
        self.n_samples = 0

    def update(self, features, targets):
        """Add one batch.

        Parameters
        ----------
        features : torch.Tensor of shape (b, d)
        targets : torch.Tensor of shape (b, k)
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
        h = features.to(device=self.device, dtype=self.dtype)
        t = targets.to(device=self.device, dtype=self.dtype)
        self.gram.addmm_(h.T, h)
        self.cross.addmm_(h.T, t)
        self.feature_sum += h.sum(0)
        self.target_sum += t.sum(0)
        self.target_sq_sum += (t * t).sum()
        self.n_samples += h.shape[0]

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
        return (
            self.gram,
            self.cross,
            self.feature_sum,
            self.target_sum,
            self.target_sq_sum,
        )

    def centered(self):
        """Gram and cross products of the column-centered ``H`` and ``T``.

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
        mu_h = self.feature_sum / n
        mu_t = self.target_sum / n
        gram_c = self.gram - n * torch.outer(mu_h, mu_h)
        cross_c = self.cross - n * torch.outer(mu_h, mu_t)
        return gram_c, cross_c, mu_h, mu_t

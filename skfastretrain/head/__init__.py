"""What the head solve does besides solving: feature passes, dense recomputation.

:class:`~skfastretrain.RidgeHeadSolver` gathers the head's input features
with these passes (an eval-mode pass over the training rows, or a tap on the
SGD epoch's own forwards) and, for ``RidgeHead(update="residual")``,
recomputes every dense layer of the head from the softmax residual. The
arithmetic itself is :mod:`skfastretrain.linalg`'s.
"""

__all__ = []

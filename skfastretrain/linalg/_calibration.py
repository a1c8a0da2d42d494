"""The head step's calibration: one temperature for the solved head's logits."""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

__all__ = ["calibrated_scale"]


def calibrated_scale(logits, y, max_scale):
    """The temperature in [0.01, ``max_scale``] that minimizes the mean
    cross-entropy of ``softmax(scale * logits)`` against labels ``y``."""

    # Ridge outputs sit near +-1, so their softmax is nearly flat and the
    # cross-entropy gradients that the next SGD epoch sends into the backbone
    # are large. One temperature, fitted on training rows, fixes the scale
    # without changing any argmax. It is capped: the head's norm multiplies
    # the gradients the backbone receives, and on well-separated training
    # rows the unconstrained optimum runs off toward hard labels, which made
    # SGD diverge in our runs.
    def loss(log_s):
        z = np.exp(log_s) * logits
        return -log_softmax(z, axis=1)[np.arange(len(y)), y].mean()

    res = minimize_scalar(
        loss, bounds=(np.log(1e-2), np.log(max_scale)), method="bounded"
    )
    return float(np.exp(res.x))

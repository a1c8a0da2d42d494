"""Warnings that name the user's line, however deep inside the package."""

import os
import sys

import sklearn

__all__ = ["outside_stacklevel"]

# Frames in these folders are skipped, so that a warning names the user's
# line (fit's call goes through sklearn's _fit_context wrapper, and a
# subclass's fit through the base's).
_INTERNAL = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(sklearn.__file__)) + os.sep,
)


def outside_stacklevel():
    """The ``stacklevel`` of the first caller outside the package and
    scikit-learn, for a ``warnings.warn`` in the caller of this function."""
    # Level 2 is the caller of the function that warns.
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level

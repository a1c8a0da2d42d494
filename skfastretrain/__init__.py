"""skfastretrain: fast transfer learning with a scikit-learn API."""

__version__ = "0.1.0.dev0"

__all__ = [
    "__version__",
]

"""Data set loaders.

:func:`load_fashion_mnist` reads the Fashion-MNIST IDX files from a local
folder (by default where Debian's ``dataset-fashion-mnist`` package puts
them) and, where they are not installed, a stratified subset of them bundled
with the package; nothing is downloaded.
"""

from ._fashion_mnist import load_fashion_mnist

__all__ = ["load_fashion_mnist"]

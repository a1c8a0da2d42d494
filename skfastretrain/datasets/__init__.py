"""Data set loaders.

:func:`load_fashion_mnist` reads the Fashion-MNIST IDX files from a local
folder (by default where Debian's ``dataset-fashion-mnist`` package puts
them) and, where they are not installed, a stratified subset of them bundled
with the package; nothing is downloaded. :func:`load_image_folder` lists (and
optionally decodes) the image files of a folder of one subfolder per class,
as ``FastRetrainClassifier.fit(folder)`` reads it.
"""

from ._fashion_mnist import load_fashion_mnist
from ._image_folder import load_image_folder

__all__ = ["load_fashion_mnist", "load_image_folder"]

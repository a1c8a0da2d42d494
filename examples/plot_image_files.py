"""
Training from image files on disk
=================================

``X`` can be a list of image file paths instead of an array: the images are
then opened with PIL batch by batch, so a data set larger than memory can be
used as it lies on disk (see :ref:`inputs`). This example writes 600
Fashion-MNIST images (from the full release where Debian's
``dataset-fashion-mnist`` is installed, from the subset bundled with
skfastretrain otherwise) as PNG files into a temporary folder, fine-tunes the
pretrained EfficientNet-Lite0 for one epoch at 64 pixels on the paths of 500
of them, predicts the other 100 from their paths, and shows a few of them
with their predicted labels.

It runs in under half a minute on two CPU cores.
"""

# %%
# Write the images as PNG files
# -----------------------------

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from PIL import Image
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist


def load_data(n=600, n_test=100):
    """Return ``(name, X_train, y_train, X_test, y_test, class_names)``:
    ``n`` Fashion-MNIST training images, stratified, split into ``n - n_test``
    to train on and ``n_test`` to predict. ``name`` says whether they come
    from the full release or the bundled subset."""
    data = load_fashion_mnist(split="train", subset=n)
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=n_test, stratify=data.target, random_state=0
    )
    name = f"Fashion-MNIST ({data.source})"
    return name, X_train, y_train, X_test, y_test, list(data.target_names)


def write_png_files(images, folder, prefix):
    """Save uint8 (H, W) images as 8-bit grayscale PNG files; return their
    paths."""
    paths = []
    for i, image in enumerate(images):
        path = Path(folder) / f"{prefix}_{i:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


name, X_train, y_train, X_test, y_test, class_names = load_data()
folder = tempfile.TemporaryDirectory()
paths_train = write_png_files(X_train, folder.name, "train")
paths_test = write_png_files(X_test, folder.name, "test")
n_files = len(paths_train) + len(paths_test)
print(f"wrote {n_files} {name} images as PNG files to {folder.name}")

# %%
# Fit and predict on the paths
# ----------------------------
# The grayscale PNGs are decoded as RGB for the three-channel backbone and
# resized to ``input_size`` inside the model.

clf = FastRetrainClassifier(
    "efficientnet_lite0",
    weights="DEFAULT",
    input_size=64,
    lr=0.001,
    freeze_mode="prefix",
    ridge_lambda="auto",
    max_epochs=1,
    random_state=0,
)
clf.fit(paths_train, y_train)
y_pred = clf.predict(paths_test)
accuracy = accuracy_score(y_test, y_pred)
print(f"test accuracy on {len(paths_test)} image files: {accuracy:.3f}")

# %%
# A few test images and their predictions
# ---------------------------------------
# Green titles are correct predictions, red ones mistakes (with the true
# label below).

fig, axes = plt.subplots(2, 6, figsize=(10, 4))
for ax, path, true, pred in zip(axes.flat, paths_test, y_test, y_pred, strict=False):
    ax.imshow(Image.open(path), cmap="gray")
    title = class_names[pred]
    if pred != true:
        title += f"\n(true: {class_names[true]})"
    ax.set_title(title, color="tab:green" if pred == true else "tab:red", fontsize=9)
    ax.set_axis_off()
fig.suptitle(f"EfficientNet-Lite0 fine-tuned on {len(paths_train)} PNG files")
fig.tight_layout()
plt.show()

folder.cleanup()

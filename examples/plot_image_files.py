"""
Training from image files on disk
=================================

``X`` can be a list of image file paths instead of an array: the images are
then opened with PIL batch by batch, so a data set larger than memory can be
used as it lies on disk (see :ref:`inputs`). This example writes 600
Fashion-MNIST images (or sklearn's digits, when Debian's
``dataset-fashion-mnist`` is not installed) as PNG files into a temporary
folder, fine-tunes the pretrained EfficientNet-Lite0 for one epoch at 64
pixels on the paths of 500 of them, predicts the other 100 from their paths,
and shows a few of them with their predicted labels.
"""

# %%
# Write the images as PNG files
# -----------------------------

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist


def load_images(n=600):
    try:
        data = load_fashion_mnist(split="train", subset=n)
        return "Fashion-MNIST", data.data, data.target, list(data.target_names)
    except FileNotFoundError:
        print("Fashion-MNIST files not found: using sklearn's digits instead.")
        X, y = load_digits(return_X_y=True)
        images = (X[:n].reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
        return "sklearn digits", images, y[:n], [str(d) for d in range(10)]


name, images, labels, class_names = load_images()
folder = tempfile.TemporaryDirectory()
paths = []
for i, image in enumerate(images):
    path = Path(folder.name) / f"{i:04d}.png"
    Image.fromarray(image).save(path)  # uint8 (H, W): 8-bit grayscale
    paths.append(str(path))
print(f"wrote {len(paths)} {name} images as PNG files to {folder.name}")

paths_train, paths_test, y_train, y_test = train_test_split(
    paths, labels, test_size=100, stratify=labels, random_state=0
)

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

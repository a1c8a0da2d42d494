"""
Tuning ``freeze_prob`` and ``ridge_lambda`` with GridSearchCV
=============================================================

:class:`~skfastretrain.FastRetrainClassifier` is a scikit-learn estimator, so
its two main settings, the fraction of layers frozen in each epoch
(``freeze_prob``) and the ridge strength of the head solve
(``ridge_lambda``), can be tuned by cross-validation like any other
hyper-parameter. This example runs a 3-fold
:class:`~sklearn.model_selection.GridSearchCV` over both on sklearn's digits
(8x8 grayscale images) with a small convolutional backbone trained from
scratch, and draws the mean cross-validated accuracy as a heat map.

``ridge_lambda=None`` turns the head solves off (plain SGD with layer
freezing), and ``freeze_prob=0`` trains every layer: the corner
``(0, None)`` is plain SGD with momentum.

It runs in under half a minute on two CPU cores.
"""

# %%
# Data: the digits as uint8 images
# --------------------------------
# ``load_digits`` gives 8x8 images with values 0-16; scaled to 0-255 and
# stored as ``uint8`` they are images of shape ``(n, H, W)``, the layout
# ``FastRetrainClassifier`` reads as grayscale.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from torch import nn

from skfastretrain import FastRetrainClassifier

X, y = load_digits(return_X_y=True)
images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
X_train, X_test, y_train, y_test = train_test_split(
    images, y, test_size=0.25, stratify=y, random_state=0
)
print(f"{len(X_train)} training and {len(X_test)} test images of shape 8x8")

# %%
# A small CNN backbone
# --------------------
# A zero-argument callable that returns a module is a valid ``backbone``: it
# is called at every fit, so each fold of the search starts from a fresh
# network. Its output is flattened and fed to a new linear head. Its four
# convolutions are the layers that ``freeze_prob`` counts:
# ``freeze_prob=0.25`` freezes one of them in each epoch, ``0.75`` three.


def conv_block(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


def tiny_cnn():
    return nn.Sequential(
        *conv_block(1, 16),
        *conv_block(16, 16),
        nn.MaxPool2d(2),
        *conv_block(16, 32),
        *conv_block(32, 32),
        nn.AdaptiveAvgPool2d(2),
    )


# %%
# The grid search
# ---------------
# Two epochs per fit, three folds, 4 x 4 settings: 48 short fits, and one
# more to refit the best setting on the whole training set. ``"auto"``
# chooses the ridge strength at every solve by an inner cross-validation on
# the Gram statistics.

clf = FastRetrainClassifier(
    tiny_cnn, max_epochs=2, lr=0.05, batch_size=64, random_state=0
)
param_grid = {
    "freeze_prob": [0.0, 0.25, 0.5, 0.75],
    "ridge_lambda": [None, 1.0, 100.0, "auto"],
}
search = GridSearchCV(clf, param_grid, cv=3, n_jobs=1)
search.fit(X_train, y_train)
print("best parameters:", search.best_params_)
print(f"best mean CV accuracy: {search.best_score_:.3f}")
print(f"test accuracy of the refitted best model: {search.score(X_test, y_test):.3f}")

# %%
# Heat map of the cross-validated accuracy
# ----------------------------------------

freeze_values = param_grid["freeze_prob"]
lambda_values = param_grid["ridge_lambda"]
scores = np.empty((len(freeze_values), len(lambda_values)))
for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
):
    i = freeze_values.index(params["freeze_prob"])
    j = lambda_values.index(params["ridge_lambda"])
    scores[i, j] = score

fig, ax = plt.subplots(figsize=(5, 4.5))
image = ax.imshow(scores, cmap="viridis", origin="lower")
ax.set_xticks(range(len(lambda_values)), [str(v) for v in lambda_values])
ax.set_yticks(range(len(freeze_values)), [str(v) for v in freeze_values])
ax.set_xlabel("ridge_lambda")
ax.set_ylabel("freeze_prob")
middle = (scores.max() + scores.min()) / 2
for i in range(scores.shape[0]):
    for j in range(scores.shape[1]):
        ax.text(
            j,
            i,
            f"{scores[i, j]:.3f}",
            ha="center",
            va="center",
            color="black" if scores[i, j] > middle else "white",
        )
fig.colorbar(image, ax=ax, label="mean CV accuracy")
ax.set_title("3-fold CV accuracy, 2 epochs, digits")
fig.tight_layout()
plt.show()

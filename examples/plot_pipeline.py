"""
A scikit-learn Pipeline with preprocessing
==========================================

:class:`~skfastretrain.FastRetrainClassifier` takes 2-D ``(n, features)``
arrays when its backbone starts with a linear layer, so it can be the last
step of a :class:`~sklearn.pipeline.Pipeline` behind any scikit-learn
transformer. Here a :class:`~sklearn.preprocessing.StandardScaler`
standardizes the 64 pixel values of sklearn's digits before a two-layer MLP
backbone, trained with random layer freezing and ridge head solves. The
pipeline is evaluated on a held-out split with
:func:`~sklearn.metrics.classification_report` and a confusion matrix, and the
training history is drawn with :func:`~skfastretrain.plot_history`.

It runs in a few seconds on two CPU cores.
"""

# %%
# Data and pipeline
# -----------------

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.metrics import ConfusionMatrixDisplay, classification_report
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from skfastretrain import FastRetrainClassifier, plot_history

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)

# The backbone: an MLP whose output (64 features) feeds a new linear head.
# A module is deep-copied at fit, so the pipeline can be fitted again.
mlp = nn.Sequential(
    nn.Linear(64, 128),
    nn.ReLU(),
    nn.Linear(128, 64),
    nn.ReLU(),
)
pipe = make_pipeline(
    StandardScaler(),
    FastRetrainClassifier(
        mlp,
        freeze_prob=0.5,
        ridge_lambda="auto",
        max_epochs=8,
        lr=0.01,
        random_state=0,
    ),
)
pipe.fit(X_train, y_train)
print(f"test accuracy: {pipe.score(X_test, y_test):.3f}")

# %%
# Classification report
# ---------------------

y_pred = pipe.predict(X_test)
print(classification_report(y_test, y_pred, digits=3))

# %%
# Confusion matrix and training history
# -------------------------------------
# ``train_acc`` is the accuracy of each epoch's model (after its head solve) on
# up to 2,048 training rows.

clf = pipe[-1]
fig, (ax_cm, ax_hist) = plt.subplots(1, 2, figsize=(10, 4.2))
ConfusionMatrixDisplay.from_predictions(
    y_test, y_pred, ax=ax_cm, colorbar=False, cmap="Blues"
)
ax_cm.set_title("test confusion matrix")
plot_history(clf, keys=["train_loss", "train_acc"], ax=ax_hist)
ax_hist.set_title("training history")
fig.tight_layout()
plt.show()

"""
The other methods of the research under one API
================================================

Recomputation of dense layers (``head="residual"``), L2-SP and DELTA
(``regularizer="l2sp"`` and ``"delta"``, or :class:`~skfastretrain.L2SP` and
:class:`~skfastretrain.DeltaRegularizer` instances to set their strengths)
are parameters of the same estimator, so they compare on one task. L2-SP
and DELTA run as regularizers of plain fine-tuning, as in their papers. Each
fine-tunes ImageNet EfficientNet-Lite0 at 32 px on 600 of sklearn's digits
for two epochs and is scored on 400 held-out digits. DELTA's channel
attention is shown for its last compared layer.

It runs in about a minute and a half on two CPU cores.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skfastretrain import FastRetrainClassifier, RidgeHead, SGDEpoch

X, y = load_digits(return_X_y=True)
images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
X_train, X_test, y_train, y_test = train_test_split(
    images, y, train_size=600, test_size=400, stratify=y, random_state=0
)

common = {
    "backbone": "efficientnet_lite0",
    "weights": "DEFAULT",
    "input_size": 32,
    "freeze_mode": "prefix",
    "ridge_lambda": "auto",
    "lr": 0.001,
    "max_epochs": 2,
    "random_state": 0,
}
# L2-SP and DELTA regularize plain fine-tuning in their papers: a new random
# head, every layer trained, no head solves, and a cosine learning rate.
# (DELTA then measures its channel attention with a ridge head solved on the
# frozen network for the purpose.)
fine_tune = {
    "freeze_prob": 0.0,
    "ridge_lambda": None,
    "head": RidgeHead(init="random"),
    "lr": 0.003,
    "sgd": SGDEpoch(lr_schedule="cosine"),
}
methods = {
    "fast retraining": {},
    "dense recomputation": {"head": "residual"},
    "L2-SP": {**fine_tune, "regularizer": "l2sp"},
    "DELTA": {**fine_tune, "regularizer": "delta"},
}
scores, fitted = {}, {}
for name, params in methods.items():
    clf = FastRetrainClassifier(**{**common, **params}).fit(X_train, y_train)
    scores[name] = clf.score(X_test, y_test)
    fitted[name] = clf
    print(f"{name:>20}: test accuracy {scores[name]:.3f}")

attention = fitted["DELTA"].attention_
layer = list(attention)[-1]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
ax1.barh(list(scores), list(scores.values()))
ax1.set_xlabel("test accuracy")
ax2.plot(np.sort(attention[layer])[::-1])
ax2.set_title(f"DELTA attention, {layer}")
ax2.set_xlabel("channel (sorted)")
ax2.set_ylabel("weight")
fig.tight_layout()
plt.show()

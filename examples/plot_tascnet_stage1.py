"""
Configuring the deeper layers (TASCNet stage 1) with GridSearchCV
=================================================================

TASCNet's first stage replaces the last layers of a pretrained network by a
configuration searched for the target task. With :class:`FastRetrainClassifier`
this is an ordinary hyperparameter search over the head's
:class:`~skfastretrain.RidgeHead` parameters: ``head__reinit_layers``
re-initializes the backbone's last conv and linear layers and
``head__hidden`` gives the head hidden layers. The search runs on ImageNet
EfficientNet-Lite0 at 32 px over a small subset of sklearn's digits, so it
finishes in about a minute on two cores.

It runs in about a minute on two CPU cores.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skfastretrain import FastRetrainClassifier, RidgeHead

X, y = load_digits(return_X_y=True)
images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)[:600]
y = y[:600]

search = GridSearchCV(
    FastRetrainClassifier(
        "efficientnet_lite0",
        weights="DEFAULT",
        input_size=32,
        freeze_mode="prefix",
        ridge_lambda="auto",
        head=RidgeHead(),
        lr=0.001,
        max_epochs=1,
        random_state=0,
    ),
    {"head__reinit_layers": [0, 1, 2], "head__hidden": [None, (128,)]},
    cv=2,
)
search.fit(images, y)
reinit_values, hidden_values = [0, 1, 2], [None, (128,)]
scores = np.zeros((len(reinit_values), len(hidden_values)))
for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
):
    i = reinit_values.index(params["head__reinit_layers"])
    scores[i, hidden_values.index(params["head__hidden"])] = score
for i, reinit in enumerate(reinit_values):
    print(f"reinit_layers={reinit}:", np.round(scores[i], 3))
print("best:", search.best_params_)

fig, ax = plt.subplots(figsize=(5, 3))
for j, hidden in enumerate(hidden_values):
    ax.bar(
        np.arange(3) + 0.4 * j - 0.2,
        scores[:, j],
        width=0.4,
        label=f"hidden={hidden}",
    )
ax.set_xticks(np.arange(3), reinit_values)
ax.legend()
ax.set_xlabel("re-initialized last layers")
ax.set_ylabel("cross-validated accuracy")
fig.tight_layout()
plt.show()

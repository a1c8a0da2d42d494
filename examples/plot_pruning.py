"""
Pruning similar filters (TASCNet), before and after
===================================================

:func:`skfastretrain.prune_filters` takes a fitted estimator and returns a new
one with physically fewer filters: it records the filters over a short
fine-tuning history, pulls the most similar pairs together, removes the one of
each pair with the smaller L1 norm and fine-tunes, for as long as the held-out
accuracy stays within ``max_accuracy_drop`` of the best seen. Here a small CNN
on sklearn's digits is pruned and compared before and after.

It runs in a few seconds on two CPU cores.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from skfastretrain import FastRetrainClassifier, prune_filters

X, y = load_digits(return_X_y=True)
images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
X_train, X_test, y_train, y_test = train_test_split(
    images, y, test_size=0.3, stratify=y, random_state=0
)
X_fit, X_val, y_fit, y_val = train_test_split(
    X_train, y_train, test_size=0.25, stratify=y_train, random_state=0
)


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 96, 3, padding=1),
        nn.BatchNorm2d(96),
        nn.ReLU(),
        nn.Conv2d(96, 48, 3, padding=1),
        nn.BatchNorm2d(48),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
    )


clf = FastRetrainClassifier(cnn, max_epochs=4, lr=0.01, random_state=0)
clf.fit(X_fit, y_fit)
pruned = prune_filters(
    clf,
    X_fit,
    y_fit,
    validation_data=(X_val, y_val),
    min_filters=40,
    pair_fraction=0.1,
    max_rounds=3,
    history_epochs=1,
    random_state=0,
)
report = pruned.pruning_report_

rows = [
    ("parameters", report.params_before, report.params_after),
    ("FLOPs (MACs)", report.flops_before, report.flops_after),
    ("test accuracy", clf.score(X_test, y_test), pruned.score(X_test, y_test)),
]
for name, before, after in rows:
    print(f"{name:>14}: {before:>10.4g} -> {after:>10.4g}")
print("filters per pruned layer:", report.filters_before, "->", report.filters_after)

fig, ax = plt.subplots(figsize=(5, 3))
labels = ["parameters", "FLOPs"]
ax.bar(np.arange(2) - 0.2, [1, 1], width=0.4, label="before")
ax.bar(
    np.arange(2) + 0.2,
    [
        report.params_after / report.params_before,
        report.flops_after / report.flops_before,
    ],
    width=0.4,
    label="after pruning",
)
ax.set_xticks(np.arange(2), labels)
ax.set_ylabel("relative to the unpruned model")
ax.legend()
fig.tight_layout()
plt.show()

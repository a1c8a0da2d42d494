"""Hashes of ``predict_proba`` for a default fit and the research variants.

A refactoring of the fit path must leave every result bit-identical: run
this before and after, and compare the two JSON files::

    python tools/fit_fingerprint.py before.json
    python tools/fit_fingerprint.py after.json
    python tools/fit_fingerprint.py --compare before.json after.json

Each fit runs on 800 rows of the bundled Fashion-MNIST subset for two epochs
(the default fit for three), on the CPU, in a fixed seed; the hash is of
``predict_proba`` on 200 test rows rounded to 5 decimals.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from skfastretrain import (
    EarlyStopping,
    FastRetrainClassifier,
    RidgeHead,
    SGDEpoch,
)
from skfastretrain.datasets import load_fashion_mnist

#: The default estimator and the research variants, each a change of the
#: defaults: every optional stage of the fit runs in at least one of them.
VARIANTS = {
    "default": {"max_epochs": 3},
    "random_freezing": {"freeze_mode": "random"},
    "residual_head": {"head": "residual"},
    "mlp_head_reinit": {"head": RidgeHead(hidden=[32], reinit_layers=2)},
    "reuse_features_random_init": {
        "head": RidgeHead(reuse_features=True, init="random", blend=0.3)
    },
    "no_solve": {"ridge_lambda": None, "lr": 0.003},
    "l2sp": {"regularizer": "l2sp"},
    "delta": {"regularizer": "delta"},
    "feature_map": {"regularizer": "feature_map", "ridge_lambda": 1.0},
    "early_stopping_cosine": {
        "early_stopping": EarlyStopping(n_iter_no_change=None),
        "sgd": SGDEpoch(lr_schedule="cosine", bn_mode="train"),
    },
    "augment_schedule": {
        "sgd": SGDEpoch(augment="light", weight_decay=1e-4),
        "freeze_prob": [0.75, 0.25],
    },
}


def fingerprint(name):
    """(sha1 of the rounded probabilities, seconds) for one variant."""
    X, y = load_fashion_mnist(subset=1000, return_X_y=True)
    X_te, y_te = load_fashion_mnist(subset=200, split="test", return_X_y=True)
    params = {"max_epochs": 2, "random_state": 0, "verbose": 0, **VARIANTS[name]}
    start = time.perf_counter()
    clf = FastRetrainClassifier(**params).fit(X[:800], y[:800])
    proba = np.round(clf.predict_proba(X_te), 5)
    digest = hashlib.sha1(np.ascontiguousarray(proba).tobytes()).hexdigest()
    return {
        "sha1": digest,
        "score": float(clf.score(X_te, y_te)),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="output JSON, or two to compare")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.paths)
        shared = [k for k in before if k in after]
        changed = [k for k in shared if before[k]["sha1"] != after[k]["sha1"]]
        for name in before:
            mark = "CHANGED" if name in changed else "same"
            print(f"{name:30s} {mark if name in shared else 'not run'}")
        return 1 if changed else 0
    results = {}
    for name in args.only:
        results[name] = fingerprint(name)
        print(name, results[name], flush=True)
    Path(args.paths[0]).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The transfer benchmark's methods: their settings, in the records' flat names.

``estimator_kwargs`` turns a record's flat settings into
FastRetrainClassifier's parameters and components; ``runners`` fits them.
"""

from skfastretrain import L2SP, DeltaRegularizer, RidgeHead, SGDEpoch

#: FastRetrainClassifier as plain fine-tuning with sgdm's settings: a new
#: random head, no freezing or head solves, lr 0.003 with the cosine schedule
#: and the pretrained BatchNorm held in eval mode.
_FINE_TUNE = {
    "kind": "estimator",
    "freeze_prob": 0.0,
    "ridge_lambda": None,
    "init_head": "random",
    "lr": 0.003,
    "lr_schedule": "cosine",
}

#: Hyperparameters of each method. ``benchmarks.pilot`` chose sgdm's lr,
#: BatchNorm mode and stochastic depth (results/pilot.md) and kept lr 0.001
#: for the estimator.
METHODS = {
    "sgdm": {
        "kind": "sgdm",
        "lr": 0.003,
        "bn": "eval",
        "bn_momentum": 0.1,
        "stochastic_depth": False,
    },
    # fastai's fine_tune in plain torch (_lib/fastai.py); base rate and
    # BatchNorm mode from the pilot, like sgdm's.
    "fastai": {
        "kind": "fastai",
        "lr": 0.005,
        "bn": "eval",
        "bn_momentum": 0.1,
        "stochastic_depth": False,
    },
    # The estimator exactly as a user who sets nothing gets it (the epoch
    # budget and input size of the setting aside): what the targets judge.
    "default": {"kind": "default"},
    "linear_probe": {"kind": "linear_probe", "C": 1.0, "max_iter": 5000},
    "sgdm_freeze": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": None,
        "init_head": "random",
        "lr": 0.001,
    },
    "sgdm_ridge": {
        "kind": "estimator",
        "freeze_prob": 0.0,
        "ridge_lambda": "auto",
        "lr": 0.001,
    },
    "ours": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": "auto",
        "lr": 0.001,
    },
    "ours_random": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "random",
        "ridge_lambda": "auto",
        "lr": 0.001,
    },
    # The other methods of the research. L2-SP and DELTA regularize plain
    # fine-tuning in their papers, so the regularizer is their only
    # difference from sgdm.
    "l2sp": {**_FINE_TUNE, "regularizer": "l2sp"},
    "delta": {**_FINE_TUNE, "regularizer": "delta"},
    # Dense recomputation of the head from the softmax residual, in ours.
    "residual": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": "auto",
        "head_update": "residual",
        "lr": 0.001,
    },
    # ours, then one round of TASCNet filter pruning (its time is added).
    "pruned": {
        "kind": "pruned",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": "auto",
        "lr": 0.001,
        "prune": {
            "max_rounds": 1,
            "history_epochs": 1,
            "pull_epochs": 1,
            "finetune_epochs": 1,
        },
    },
}


#: Extra variants, run only when named in ``--methods``.
EXTRA_METHODS = {
    # ours with sgdm's optimizer settings: lr 0.003 and the same cosine
    # schedule, so freezing and head solves are the only differences.
    "ours_cosine": {**METHODS["ours"], "lr": 0.003, "lr_schedule": "cosine"},
    # and the frozen prefix shrinking to nothing over the epochs
    "ours_cosine_unfreeze": {
        **METHODS["ours"],
        "lr": 0.003,
        "lr_schedule": "cosine",
        "freeze_prob": [0.5, 0.5, 0.25, 0.0],
    },
    # the estimator as plain fine-tuning, the control of l2sp and delta
    "finetune": _FINE_TUNE,
    # ours with the Gram statistics gathered in the SGD epoch's forward pass
    "ours_reuse": {**METHODS["ours"], "reuse_features": True},
    # ours with three quarters of the layers frozen (pilot: same holdout
    # accuracy as 0.5, SGD epochs 30% shorter)
    "ours_p75": {**METHODS["ours"], "freeze_prob": 0.75},
    # ours with the frozen prefix's output stored once (cache_prefix=True):
    # the same function, with only the rest of the network run after epoch 1
    "ours_cached": {**METHODS["ours"], "cache_prefix": True},
    # ours under bf16 autocast with channels-last (precision="bfloat16")
    "ours_bf16": {**METHODS["ours"], "precision": "bfloat16"},
    # the methods' own schedule (section 1: frozen fraction 0, 0, .25, .25,
    # .5, .5, .75, .75 over 8 epochs) compressed to the full run's 4 epochs
    "ours_paper_schedule": {
        **METHODS["ours"],
        "lr": 0.003,
        "lr_schedule": "cosine",
        "freeze_prob": [0.0, 0.25, 0.5, 0.75],
    },
}


#: The flat setting names of the records (the estimator's parameters before
#: they moved into its components) -> the component's parameter name.
SGD_SETTINGS = {
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "lr_schedule": "lr_schedule",
    "bn_mode": "bn_mode",
    "bn_momentum": "bn_momentum",
    "cache_prefix": "cache_prefix",
    "cache_dtype": "cache_dtype",
}
HEAD_SETTINGS = {
    "head_update": "update",
    "head_blend": "blend",
    "init_head": "init",
    "solve_every": "solve_every",
    "reuse_features": "reuse_features",
    "head_hidden": "hidden",
    "reinit_layers": "reinit_layers",
}
REGULARIZER_SETTINGS = {
    "reg_alpha": "alpha",
    "reg_beta": "beta",
    "reg_layers": "layers",
}
#: The ``regularizer`` names and the callback each stands for.
_REGULARIZERS = {
    "l2sp": (L2SP, {}),
    "delta": (DeltaRegularizer, {}),
    "feature_map": (DeltaRegularizer, {"weighted": False}),
}


def _pop(settings, names):
    return {new: settings.pop(old) for old, new in names.items() if old in settings}


def estimator_kwargs(settings):
    """FastRetrainClassifier keyword arguments for a record's flat settings.

    The records (METHODS, the pilots' runs, the saved JSON) keep one flat,
    JSON-serializable dict per run, in the names the estimator had before its
    head, SGD epoch and regularizer became objects: ``cache_prefix``,
    ``lr_schedule``, ``bn_mode``, ... go into one :class:`SGDEpoch` (``sgd``);
    ``init_head``, ``head_blend``, ``head_update``, ``reuse_features``, ...
    into one :class:`RidgeHead` (``head``); ``reg_alpha``, ``reg_beta`` and
    ``reg_layers`` into the :class:`L2SP` or :class:`DeltaRegularizer` that
    ``regularizer`` names. Every other key is passed as it is.
    """
    kwargs = dict(settings)
    sgd = _pop(kwargs, SGD_SETTINGS)
    head = _pop(kwargs, HEAD_SETTINGS)
    reg = _pop(kwargs, REGULARIZER_SETTINGS)
    if sgd:
        kwargs["sgd"] = SGDEpoch(**sgd)
    if head:
        if kwargs.get("head") == "residual":
            head = {"update": "residual", **head}
        kwargs["head"] = RidgeHead(**head)
    if reg:
        name = kwargs.get("regularizer")
        if name not in _REGULARIZERS:
            raise ValueError(f"{sorted(reg)} need a regularizer name, got {name!r}")
        cls, fixed = _REGULARIZERS[name]
        kwargs["regularizer"] = cls(**fixed, **reg)
    return kwargs

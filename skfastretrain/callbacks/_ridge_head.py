"""The head step: a closed-form ridge refinement of the linear head."""

import time
import warnings
from numbers import Integral
from typing import ClassVar

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from skorch.callbacks import Callback

from .._data import split_weights
from .._distributed import all_gather_rows, all_reduce_head_statistics, local_shard
from .._params import (
    POSITIVE,
    POSITIVE_INT,
    RIDGE_LAMBDA,
    UNIT_INTERVAL,
    Number,
    validate_constraints,
)
from ..backbones._module import find_head
from ..head._features import TrainingFeatureTap, feature_pass
from ..head._residual import dense_layers, recompute_dense
from ..linalg._calibration import calibrated_scale
from ..linalg._gram import HeadStatistics
from ..linalg._solve import (
    STAGE_WEIGHT_GRID,
    lambda_unit,
    ridge_solve,
    select_lambda,
    select_stage_weight,
    stage_scale,
)
from ..linalg._targets import OutputScore
from ._divergence import DivergenceError, current_lr, lower_lr_hint
from ._history_keys import (
    INIT,
    LAYER_LAMBDAS,
    SOLVE_DUR,
    SOLVE_LAMBDA,
    STAGE_WEIGHT,
    score_keys,
)

__all__ = ["RidgeHeadSolver"]


class RidgeHeadSolver(Callback):
    """Refine a linear head in closed form after SGD epochs.

    One pass over the training set in eval mode, under
    :func:`torch.inference_mode` and without augmentation, captures the head's
    input features ``H`` batch by batch into a :class:`GramAccumulator`. The
    ridge solution ``W*`` (intercept unpenalized, as in
    :class:`sklearn.linear_model.Ridge`) of one-hot targets in {-1, +1} is then
    blended into the head: ``W <- W + blend * (W* - W)``.

    The {-1, +1} targets give logits on a small scale: with ``calibrate=True``
    the solution is multiplied by the temperature that minimizes the
    cross-entropy of its softmax on a random subset of the training rows,
    capped at ``max_scale``, so ``predict_proba`` and the next SGD epoch see
    logits on a sensible scale; the argmax does not change.

    With ``recalibrate_bn=True`` the same pass re-estimates the running
    statistics of the trainable BatchNorm layers (on batch statistics, as in
    SGD; running averages reset and recomputed exactly over the pass), so
    the solved head matches the features SGD sees and predict uses, at no
    extra pass. Works in any skorch net whose module ends in an
    ``nn.Linear`` head, trained on integer class labels or, in a
    :class:`~skorch.NeuralNetRegressor`, on real-valued targets (float, one
    column per output): the solve then regresses the targets themselves,
    with no temperature, and the scores it records are R² (``train_r2``,
    ``train_r2_before_solve``, ``train_r2_ridge``) instead of accuracies.

    Parameters
    ----------
    ridge_lambda : float or "auto", default=1.0
        Ridge strength. ``"auto"`` picks it at every solve by ``n_folds``-fold
        cross-validation computed from per-fold Gram statistics alone (see
        :func:`select_lambda`; the grid is :data:`LAMBDA_GRID` times the mean
        eigenvalue of the centered Gram matrix).
    blend : float, default=0.5
        Step ``eta`` in (0, 1] toward the solution.
    solve_every : int, default=1
        Solve after every ``solve_every``-th epoch.
    init_solve : bool, default=True
        Also solve once before the first epoch, replacing the head entirely
        (a linear probe on the starting features).
    head : str or None, default=None
        Name of the head submodule; None means the last leaf ``nn.Linear``.
    calibrate : bool, default=True
        Rescale the solution's logits as described above (class labels
        only; a regression head is not rescaled).
    gram_dtype : torch.dtype, default=torch.float64
        Accumulation dtype of the Gram statistics.
    max_scale : float, default=4.0
        Upper bound of the calibrated temperature.
    recalibrate_bn : bool, default=True
        Re-estimate BatchNorm running statistics during the feature pass.
    calibration_samples : int, default=2048
        Training rows kept (at most) for the temperature fit.
    n_folds : int, default=5
        Folds of ``ridge_lambda="auto"``; rows are assigned round-robin.
    feature_source : {"pass", "sgd"}, default="pass"
        ``"pass"`` runs the separate eval-mode feature pass described above.
        ``"sgd"`` gathers the statistics from the SGD epoch's own forward
        passes instead (train mode, while the backbone moves; a dropout
        layer feeding the head is looked through), which removes the pass's
        cost; the solve before the first epoch still uses a pass.
    update : {"blend", "residual"}, default="blend"
        ``"blend"`` moves the top layer toward its ridge solution as above.
        ``"residual"`` is the recomputation of dense layers: every
        ``nn.Linear`` of the head is corrected by a ridge solve on the
        softmax residual, pulled back through the layers above, with a random
        keep-mask (the dense-layer recomputation of :ref:`other_methods`); ``blend``
        is then the rate of the correction.
    keep_prob : float, default=0.9
        Fraction of weights updated by a ``"residual"`` correction.
    random_state : int, RandomState instance or None, default=None
        Chooses the calibration rows and the keep-masks.
    distributed : bool, default=False
        In a data-parallel net under an initialized torch.distributed process
        group: each rank's feature pass covers its own shard of the training
        set, and the Gram statistics (every fold's), the accuracy counts and
        the re-estimated BatchNorm statistics are reduced over the ranks
        before the solve, and the calibration logits gathered, so every rank
        computes the same head. ``random_state`` must be the same on every
        rank.
    stage_widths : sequence of int or None, default=None
        The head's input is the pooled outputs of several stages of the
        network, these wide, the last layer's last (a
        :class:`FastRetrainModule` built with ``stages``, whose
        ``stage_widths`` this is). Each solve then rescales every feature
        of the earlier stages to the last layer's average scale and weighs
        them by a factor of ``stage_weights`` (see
        :func:`~skfastretrain.stage_scale`); the head gets the weights of
        the unscaled features. With ``ridge_lambda="auto"`` the factor and
        the strength are chosen together by the same cross-validation
        (:func:`~skfastretrain.select_stage_weight`) at the first solve; the
        later solves keep the factor and the strength relative to the mean
        eigenvalue of the scaled Gram matrix, because every candidate costs
        one eigendecomposition per fold. With a fixed ``ridge_lambda`` the
        factor is 1. Only with ``update="blend"``.
    stage_weights : sequence of float, default=STAGE_WEIGHT_GRID
        Candidate factors of the earlier stages (0 leaves them out).
    sgd_updates_head : bool, default=True
        Whether the SGD epochs update the head too. False holds the head's
        parameters (``requires_grad=False``) for the time of the fit, so
        that only the solves move it, while SGD still trains the network
        through it. With a head on rescaled features of several stages,
        the solved weights of low-variance features are large and one SGD
        step moves the logits in proportion to the features' squared norm:
        the head's own step undid the solve (the Benchmarks page).
    keep_statistics : bool, default=False
        Keep :attr:`stats_` in a pickle of the net (the net in memory keeps
        them either way), so that :meth:`partial_solve` can add rows after
        loading. They are d x d float64 for d head inputs.

    Attributes
    ----------
    stats_ : GramAccumulator
        Statistics of the last solve.
    stats_exact_ : bool
        Whether :attr:`stats_` are those of the model's eval-mode features:
        taken in a separate pass without BatchNorm re-estimation, with no
        change to the backbone since. Only then does :meth:`partial_solve`
        add rows to them exactly (otherwise it warns).
    scale_ : float
        Temperature of the last solve (1.0 without calibration).
    ridge_lambda_ : float
        Ridge strength of the last solve.
    stage_weight_ : float or None
        Factor of the earlier stages (None without ``stage_widths``).

    References
    ----------
    .. [1] Zhang, Yang, Akilan, Wu, Liu, "Fast Transfer Learning Method Using
       Random Layer Freezing and Feature Refinement Strategy", IEEE
       Transactions on Cybernetics, 2024, doi:10.1109/TCYB.2024.3483068.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain import RidgeHeadSolver
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> net = NeuralNetClassifier(
    ...     module, criterion=torch.nn.CrossEntropyLoss, max_epochs=2,
    ...     train_split=None, verbose=0,
    ...     callbacks=[RidgeHeadSolver(ridge_lambda=1.0, random_state=0)])
    >>> X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> net = net.fit(X, (X[:, 0] > 0).astype("int64"))
    >>> len(net.history[:, "solve_dur"])
    2
    """

    _parameter_constraints: ClassVar[dict] = {
        "ridge_lambda": RIDGE_LAMBDA,
        "blend": [UNIT_INTERVAL],
        "solve_every": [POSITIVE_INT],
        "init_solve": ["boolean"],
        "head": [str, None],
        "calibrate": ["boolean"],
        "max_scale": [POSITIVE],
        "recalibrate_bn": ["boolean"],
        "calibration_samples": [POSITIVE_INT],
        "n_folds": [Number(Integral, 2, None, closed="left")],
        "feature_source": [StrOptions({"pass", "sgd"})],
        "update": [StrOptions({"blend", "residual"})],
        "keep_prob": [UNIT_INTERVAL],
        "random_state": ["random_state"],
        "distributed": ["boolean"],
        "stage_widths": ["array-like", None],
        "stage_weights": ["array-like"],
        "sgd_updates_head": ["boolean"],
        "keep_statistics": ["boolean"],
    }

    def __init__(
        self,
        ridge_lambda=1.0,
        *,
        blend=0.5,
        solve_every=1,
        init_solve=True,
        head=None,
        calibrate=True,
        max_scale=4.0,
        gram_dtype=torch.float64,
        recalibrate_bn=True,
        calibration_samples=2048,
        n_folds=5,
        feature_source="pass",
        update="blend",
        keep_prob=0.9,
        random_state=None,
        distributed=False,
        stage_widths=None,
        stage_weights=STAGE_WEIGHT_GRID,
        sgd_updates_head=True,
        keep_statistics=False,
    ):
        self.ridge_lambda = ridge_lambda
        self.blend = blend
        self.solve_every = solve_every
        self.init_solve = init_solve
        self.head = head
        self.calibrate = calibrate
        self.max_scale = max_scale
        self.gram_dtype = gram_dtype
        self.recalibrate_bn = recalibrate_bn
        self.calibration_samples = calibration_samples
        self.n_folds = n_folds
        self.feature_source = feature_source
        self.update = update
        self.keep_prob = keep_prob
        self.random_state = random_state
        self.distributed = distributed
        self.stage_widths = stage_widths
        self.stage_weights = stage_weights
        self.sgd_updates_head = sgd_updates_head
        self.keep_statistics = keep_statistics

    def initialize(self):
        self.stats_ = None
        self.stats_exact_ = False
        self.scale_ = 1.0
        self.ridge_lambda_ = None
        self.stage_weight_ = None
        self._relative_lambda = None
        self._held = []
        self._rng = check_random_state(self.random_state)
        self._generator = torch.Generator().manual_seed(
            int(self._rng.randint(np.iinfo(np.int32).max))
        )
        self._init_record = {}
        self._collecting = None
        return self

    def _layers(self, net):
        head = find_head(net.module_, self.head)
        layers = [] if head is None else dense_layers(head)
        if not layers:
            raise ValueError(
                "RidgeHeadSolver needs an nn.Linear head: the module's last leaf "
                "is not one, so name it with head=<submodule name>."
            )
        return layers

    def _head(self, net):
        # The solved layer: the head itself, or the last Linear of a deeper head.
        return self._layers(net)[-1]

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        validate_constraints(self)
        self._collecting = None
        self._held = []
        if not self.sgd_updates_head:
            self._held = [p for p in self._head(net).parameters() if p.requires_grad]
            for p in self._held:
                p.requires_grad_(False)
        if self.init_solve:
            # The first solve fits the top layer outright, whatever the update
            # rule: there is no trained head yet to correct.
            self._init_record = self.solve(
                net, net.get_split_datasets(X, y)[0], blend=1.0, residual=False
            )

    def _auto_lambda(self):
        return isinstance(self.ridge_lambda, str)

    def _new_statistics(self, head, n_rows):
        keep = None
        if self.calibrate:
            keep = np.zeros(n_rows, dtype=bool)
            m = min(n_rows, self.calibration_samples)
            keep[self._rng.choice(n_rows, size=m, replace=False)] = True
        return HeadStatistics(
            head.out_features,
            n_folds=self.n_folds if self._auto_lambda() else 1,
            keep=keep,
            dtype=self.gram_dtype,
        )

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        # The epoch's SGD moves the backbone away from the last statistics.
        self.stats_exact_ = False
        epoch = len(net.history)
        if (
            self.feature_source != "sgd"
            or self.update == "residual"
            or epoch % self.solve_every
        ):
            return
        # Gather the statistics from the SGD epoch's own forward passes: the
        # backbone moves while they are collected, but no extra pass is run.
        head = self._head(net)
        stats = self._new_statistics(head, len(dataset_train))
        self._collecting = (stats, TrainingFeatureTap(net.module_, head))

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if not training or not self._collecting:
            return
        stats, tap = self._collecting
        features = tap.pop()
        if features is not None:
            stats.add(features, batch[1], y_pred, split_weights(batch[0])[1])

    def on_epoch_end(self, net, dataset_train=None, **kwargs):
        epoch = len(net.history)
        record = {}
        if epoch == 1:
            record.update({INIT + k: v for k, v in self._init_record.items()})
        if self._collecting:
            stats, tap = self._collecting
            tap.remove()
            self._collecting = None
            start = time.perf_counter()
            record.update(self._apply(net, stats, self.blend))
            record[SOLVE_DUR] = time.perf_counter() - start
            # Taken in train mode while the backbone moved.
            self.stats_exact_ = False
        elif epoch % self.solve_every == 0:
            record.update(self.solve(net, dataset_train, blend=self.blend))
        for key, value in record.items():
            net.history.record(key, value)

    def on_train_end(self, net, **kwargs):
        # An interrupted epoch leaves its collecting hook on the head.
        if self._collecting:
            self._collecting[1].remove()
            self._collecting = None
        for p in getattr(self, "_held", ()):
            p.requires_grad_(True)
        self._held = []

    def _feature_pass(self, net, dataset, head, n_rows, recalibrate_bn=None):
        captured = []
        hook = head.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        # A shard keeps its share of the calibration rows: the mask spans
        # the whole training set.
        stats = self._new_statistics(head, n_rows)
        batches = feature_pass(
            net,
            dataset,
            recalibrate_bn=(
                self.recalibrate_bn if recalibrate_bn is None else recalibrate_bn
            ),
            distributed=self.distributed,
        )
        try:
            for logits, yi, wi in batches:
                stats.add(captured.pop(), yi, logits, wi)
        finally:
            hook.remove()
        return stats

    def solve(self, net, dataset, *, blend, residual=True):
        """Run the feature pass and the solve, and move the head toward it.

        Returns
        -------
        record : dict
            ``solve_dur`` (seconds), ``train_acc_before_solve`` (accuracy of the model
            before this solve, in eval mode, on the whole training set),
            ``ridge_lambda`` (the strength used) and, with ``calibrate``,
            ``train_acc_ridge`` (accuracy of the ridge solution on the calibration
            rows) and, outside a data-parallel fit, ``train_acc`` (accuracy
            of the updated head on them).
        """
        if not 0 < blend <= 1:
            raise ValueError(f"blend must be in (0, 1], got {blend!r}.")
        start = time.perf_counter()
        n_rows = len(dataset)
        if self.distributed:
            dataset = local_shard(dataset)
        if self.update == "residual" and residual:
            acc, alphas = recompute_dense(
                net,
                dataset,
                self._layers(net),
                alpha=self.ridge_lambda,
                rate=blend,
                keep_prob=self.keep_prob,
                generator=self._generator,
                recalibrate_bn=self.recalibrate_bn,
                n_folds=self.n_folds,
                distributed=self.distributed,
            )
            return {
                SOLVE_DUR: time.perf_counter() - start,
                score_keys(False).before_solve: acc,
                SOLVE_LAMBDA: alphas[-1],
                LAYER_LAMBDAS: alphas,
            }
        stats = self._feature_pass(net, dataset, self._head(net), n_rows)
        record = self._apply(net, stats, blend)
        # A pass that re-estimates BatchNorm runs it on batch statistics.
        self.stats_exact_ = not self.recalibrate_bn
        return {SOLVE_DUR: time.perf_counter() - start, **record}

    def _apply(self, net, stats, blend):
        if self.distributed:
            all_reduce_head_statistics(stats)
        total = stats.total()
        if not all(torch.isfinite(t).all() for t in total.tensors()):
            lr = current_lr(net)
            raise DivergenceError(
                f"Training diverged: the head's input features hold NaN or inf "
                f"after epoch {len(net.history)} (lr={lr:.3g}). "
                f"{lower_lr_hint(lr)}",
                epoch=len(net.history),
                lr=lr,
            )
        if self.stage_widths is None:
            alpha, scale_columns = self._lambda(stats), None
        else:
            alpha, scale_columns = self._stage_solve_setup(stats, total)
        return self._solve_total(net, stats, total, alpha, scale_columns, blend)

    def _solve_total(self, net, stats, total, alpha, scale_columns, blend):
        # Solve on ``total`` and move the head; ``stats`` are the rows of
        # this pass (the calibration sample and the accuracy before it).
        head = self._head(net)
        coef, intercept = ridge_solve(
            total, alpha, fit_intercept=head.bias is not None, scale=scale_columns
        )
        scale = 1.0
        kept_h, kept_y = stats.sample()
        outputs = None
        if kept_y is not None:
            outputs = (kept_h.to(coef.device) @ coef + intercept).cpu().numpy()
            kept_y = kept_y.numpy()
        if self.distributed:
            outputs, kept_y = all_gather_rows(outputs, kept_y)
        kept = kept_y is not None and len(kept_y) > 0
        if kept and self.calibrate and not stats.regression:
            scale = calibrated_scale(outputs, kept_y, self.max_scale)
        with torch.no_grad():
            w = (scale * coef.T).to(head.weight)
            head.weight.add_(blend * (w - head.weight))
            if head.bias is not None:
                b = (scale * intercept).to(head.bias)
                head.bias.add_(blend * (b - head.bias))
        self.stats_, self.scale_, self.ridge_lambda_ = total, scale, alpha
        keys = score_keys(stats.regression)
        record = {keys.before_solve: stats.score.value, SOLVE_LAMBDA: alpha}
        if self.stage_weight_ is not None:
            record[STAGE_WEIGHT] = self.stage_weight_
        if kept:
            # How well a linear head still fits the features: a collapse of
            # the backbone shows here (DivergenceGuard watches it).
            record[keys.ridge] = _score(outputs, kept_y)
        if kept and not self.distributed:
            # The updated head's score on the kept rows: what DivergenceGuard
            # scores the model of each epoch by.
            with torch.no_grad():
                updated = head(kept_h.to(head.weight)).cpu().numpy()
            record[keys.train] = _score(updated, kept_y)
        return record

    def partial_solve(self, net, dataset):
        """Add ``dataset``'s rows to the kept statistics; solve the head on all.

        The rows' features are taken in one eval-mode pass under the net's
        current backbone (BatchNorm on its running statistics, which stay
        as they are), added to :attr:`stats_`, and the head is set to the
        ridge solution on every row seen so far (no blend). Classes that the
        head has gained since :attr:`stats_` was taken (more outputs) get
        the target -1 on every earlier row, which needs none of them again.
        The first call, with no statistics yet, solves as the first solve of
        a fit does (choosing ``ridge_lambda="auto"`` and the stages' weight
        by cross-validation on its rows); later calls keep the weight and
        the strength relative to the features' scale (:func:`lambda_unit`).
        This is what the estimator's ``partial_fit`` runs.

        Parameters
        ----------
        net : skorch.NeuralNet
            An initialized net whose module has the head.
        dataset : torch Dataset
            The new rows, as the net's ``get_dataset`` makes them.

        Returns
        -------
        record : dict
            As :meth:`solve`'s.
        """
        validate_constraints(self)
        if self.update != "blend" or len(self._layers(net)) > 1:
            raise ValueError(
                "partial_solve needs a single linear head updated by 'blend'; "
                "a head with hidden layers or update='residual' is not a ridge "
                "solution of its statistics."
            )
        start = time.perf_counter()
        head = self._head(net)
        previous = self.stats_
        if previous is None and self.ridge_lambda_ is not None:
            raise ValueError(
                "The head was solved before, but its statistics were not kept "
                "(a pickled net leaves them out): rows cannot be added to them. "
                "Fit with RidgeHeadSolver(keep_statistics=True), or "
                "FastRetrainClassifier(head=RidgeHead(keep_statistics=True)), "
                "to keep them in the pickle."
            )
        if previous is not None and not self.stats_exact_:
            warnings.warn(
                "The kept head statistics are not those of the model's features: "
                "they were gathered during an SGD epoch (reuse_features), in a "
                "pass that re-estimated BatchNorm, or before the model was put "
                "back to an earlier epoch. The new rows are added to them as "
                "they are, so the head is close to, not equal to, the ridge "
                "solution on every row's features.",
                UserWarning,
                stacklevel=2,
            )
        if previous is not None and previous.n_targets < head.out_features:
            previous = previous.with_targets(head.out_features - previous.n_targets)
        stats = self._feature_pass(
            net, dataset, head, len(dataset), recalibrate_bn=False
        )
        if previous is None:
            record = self._apply(net, stats, 1.0)
            self.stats_exact_ = True
            return {SOLVE_DUR: time.perf_counter() - start, **record}
        if self.distributed:
            all_reduce_head_statistics(stats)
        total = previous + stats.total()
        alpha, scale_columns = self._kept_strength(previous, total)
        record = self._solve_total(net, stats, total, alpha, scale_columns, 1.0)
        return {SOLVE_DUR: time.perf_counter() - start, **record}

    def _kept_strength(self, previous, total):
        # The strength and column scaling of a solve on ``total`` that keeps
        # those of the solve on ``previous``: the same stage weight, and the
        # same strength relative to the features' scale.
        scale = None
        if self.stage_widths is not None:
            widths = [int(w) for w in self.stage_widths]
            weight = 1.0 if self.stage_weight_ is None else self.stage_weight_
            scale = stage_scale(total, widths, weight)
            before = previous.scaled(stage_scale(previous, widths, weight))
            after = total.scaled(scale)
        else:
            before, after = previous, total
        if not self._auto_lambda():
            return self.ridge_lambda, scale
        return self.ridge_lambda_ / lambda_unit(before) * lambda_unit(after), scale

    def _lambda(self, stats):
        if stats.n_folds > 1:
            return select_lambda(stats.folds)[0]
        return self.ridge_lambda

    def _stage_solve_setup(self, stats, total):
        # The ridge strength and the column scaling of a head that reads
        # several stages (see ``stage_widths``).
        widths = [int(w) for w in self.stage_widths]
        if stats.n_folds == 1:
            self.stage_weight_ = 1.0
            return self.ridge_lambda, stage_scale(total, widths, 1.0)
        if self.stage_weight_ is None or self._relative_lambda is None:
            weight, alpha, _ = select_stage_weight(
                stats.folds, widths, [float(w) for w in self.stage_weights]
            )
            scale = stage_scale(total, widths, weight)
            self.stage_weight_ = weight
            self._relative_lambda = alpha / lambda_unit(total.scaled(scale))
            return alpha, scale
        scale = stage_scale(total, widths, self.stage_weight_)
        return self._relative_lambda * lambda_unit(total.scaled(scale)), scale


def _score(outputs, targets):
    """The accuracy, or the R² of real-valued ``targets``, of ``outputs``."""
    score = OutputScore()
    score.add(torch.as_tensor(outputs), targets)
    return score.value

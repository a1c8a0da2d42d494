"""The skorch net behind FastRetrainClassifier: the SGD epochs' loop."""

from collections import defaultdict

import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.utils import to_tensor
from torch import nn

from ._data import split_weights
from ._distributed import DataParallelSteps
from .callbacks._checkpoint import net_state_without_caches
from .callbacks._history_keys import (
    DIVERGED,
    LAYER_LAMBDAS,
    PREFIX_STORE_ROWS,
    VALID_ACC,
    VALID_DUR,
    VALID_LOSS,
)
from .callbacks._progress import EpochTable
from .linalg._targets import row_losses

__all__ = ["FastRetrainNet", "FastRetrainRegressionNet", "make_net"]


class _FastRetrainSteps(DataParallelSteps):
    """What the nets of both estimators add to skorch's base nets: training
    steps that, in a data-parallel fit (``ddp_device`` set), run through
    :class:`~torch.nn.parallel.DistributedDataParallel`
    (:class:`DataParallelSteps`), a per-epoch table that keeps its columns
    (:class:`EpochTable`), a loss weighted by the rows' ``sample_weight``,
    and pickles that leave out what only more training would use.

    Parameters
    ----------
    *args, **kwargs
        Those of the skorch net it is mixed into.
    ddp_device : str or None, default=None
        The device of this rank in a data-parallel fit; None trains alone.
    table_columns : sequence of str or None, default=None
        The columns of the per-epoch table (:class:`EpochTable`), fixed so
        that every row lines up; None takes the first row's keys.
    keep_training_state : bool, default=False
        Whether a pickle keeps what only more training would use: the
        optimizer's momentum buffers and the last head solve's Gram
        statistics (``RidgeHeadSolver.stats_``), each as large as the model
        or larger. The net in memory keeps them either way.

    Notes
    -----
    The validation split (``train_split``) is scored by a
    :class:`ValidationScoring` callback after the epoch's other callbacks
    (the head solve), so skorch's own validation pass during the epoch,
    which would score the model before the solve, does not run, and
    neither do its ``valid_loss`` and ``valid_acc`` scorers.
    """

    def __init__(
        self,
        *args,
        ddp_device=None,
        table_columns=None,
        keep_training_state=False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.ddp_device = ddp_device
        self.table_columns = table_columns
        self.keep_training_state = keep_training_state

    def __getstate__(self):
        optimizer = vars(self).get("optimizer_")
        slim = optimizer is not None and not self.keep_training_state
        if slim:
            # skorch serializes the optimizer inside super().__getstate__, so
            # its state is swapped out only for that call.
            saved, optimizer.state = optimizer.state, defaultdict(dict)
        try:
            state = super().__getstate__()
        finally:
            if slim:
                optimizer.state = saved
        if vars(self).get("module_") is not None and self.module is self.module_:
            # skorch trains the module it was given: without this, a pickle
            # would hold it twice (``module`` and, apart, ``module_``).
            state["module"] = _SAME_AS_MODULE_
        if slim:
            state = net_state_without_caches(state)
        return state

    def __setstate__(self, state):
        same = (
            isinstance(state.get("module"), str) and state["module"] == _SAME_AS_MODULE_
        )
        super().__setstate__(state)
        if same:
            self.module = self.module_

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """skorch's loss, weighted by the rows' ``sample_weight`` when the
        input carries one (:class:`~skfastretrain._data.WeightedRows`): the
        weighted mean of the per-row cross-entropy (squared error for a
        regression), plus a DELTA penalty where the criterion adds one."""
        _, weights = split_weights(X)
        if weights is None:
            return super().get_loss(y_pred, y_true, X=X, training=training)
        y_true = to_tensor(y_true, device=self.device)
        weights = to_tensor(weights, device=self.device).to(y_pred.dtype)
        per_row = row_losses(y_pred, y_true)
        loss = (weights * per_row).sum() / weights.sum().clamp_min(1e-12)
        regularizer = getattr(self.criterion_, "regularizer", None)
        if regularizer is not None:
            loss = loss + regularizer.penalty()
        return loss

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if not training and prefix == "valid":
            # ValidationScoring scores these rows after the head solve.
            return None
        return super().run_single_epoch(
            iterator, training, prefix, step_fn, **fit_params
        )

    @property
    def _default_callbacks(self):
        drop = {VALID_LOSS, VALID_ACC, "print_log"}
        columns = self.table_columns
        return [
            *(
                (name, cb)
                for name, cb in super()._default_callbacks
                if name not in drop
            ),
            ("print_log", EpochTable(columns, keys_ignored=_UNTABULATED)),
        ]


class FastRetrainNet(_FastRetrainSteps, NeuralNetClassifier):
    """The skorch net of :class:`FastRetrainClassifier`.

    A :class:`~skorch.NeuralNetClassifier` with the steps, table, weighted
    loss and pickles of :class:`_FastRetrainSteps`, whose parameters it
    adds to skorch's.
    """


class FastRetrainRegressionNet(_FastRetrainSteps, NeuralNetRegressor):
    """The skorch net of :class:`FastRetrainRegressor`.

    A :class:`~skorch.NeuralNetRegressor` with the steps, table, weighted
    loss and pickles of :class:`_FastRetrainSteps`, whose parameters it
    adds to skorch's. Its targets are 2-D (n, n_outputs) float32.
    """


#: Stands for ``module_`` in the pickle of a net whose module is module_.
_SAME_AS_MODULE_ = "<module_>"


def make_net(
    module,
    *,
    callbacks,
    lr,
    momentum,
    weight_decay,
    batch_size,
    max_epochs,
    device,
    generator,
    verbose,
    num_workers=0,
    pin_memory=False,
    train_collate=None,
    criterion=nn.CrossEntropyLoss,
    regression=False,
    train_sampler=None,
    ddp_device=None,
    train_split=None,
    table_columns=None,
):
    """A :class:`FastRetrainNet` over ``module`` trained by SGD with momentum
    (a :class:`FastRetrainRegressionNet` with ``regression``).

    ``train_collate`` (augmentation) goes to the training iterator only, so
    the head solve's feature pass and predict see the data unchanged.
    ``train_sampler`` (a rank's shard) replaces the training shuffle,
    ``ddp_device`` makes the training steps data-parallel, and
    ``train_split`` holds out the validation rows. ``callbacks`` are the
    named stages of a :class:`FitPipeline`, in order.
    """
    loader = {"num_workers": num_workers, "pin_memory": pin_memory}
    if train_sampler is None:
        train_loader = {**loader, "shuffle": True, "generator": generator}
    else:
        train_loader = {**loader, "sampler": train_sampler}
    if train_collate is not None:
        train_loader["collate_fn"] = train_collate
    net_class = FastRetrainRegressionNet if regression else FastRetrainNet
    return net_class(
        module,
        criterion=criterion,
        optimizer=torch.optim.SGD,
        lr=lr,
        optimizer__momentum=momentum,
        optimizer__weight_decay=weight_decay,
        batch_size=batch_size,
        max_epochs=max_epochs,
        train_split=train_split,
        callbacks=callbacks,
        device=device,
        verbose=verbose,
        **{f"iterator_train__{k}": v for k, v in train_loader.items()},
        **{f"iterator_valid__{k}": v for k, v in loader.items()},
        ddp_device=ddp_device,
        table_columns=table_columns,
    )


#: Records the table leaves out: lists, long messages and details of the
#: start of the fit (``init_*``, dropped by EpochTable itself).
_UNTABULATED = (LAYER_LAMBDAS, DIVERGED, VALID_DUR, PREFIX_STORE_ROWS)

"""Iterative filter pruning of a fitted FastRetrainClassifier (TASCNet stage 2).

The steps live in their own modules: ``_prune_inputs`` (input checks),
``_prune_plan`` (:func:`find_prunable`), ``_similarity`` (filter history,
pairs and pull), ``_surgery`` (:func:`remove_filters`), ``_prune_round`` (one
round) and ``_flops`` (:func:`count_flops`, :func:`count_params`).
"""

import copy
from dataclasses import dataclass, field
from numbers import Real

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions, validate_params
from torch import nn

from .._params import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, Number
from ._flops import count_flops, count_params
from ._inputs import _check_inputs
from ._plan import LayerPlan, find_prunable
from ._round import _bn_mode, _prune_round
from ._surgery import remove_filters

__all__ = [
    "LayerPlan",
    "PruningReport",
    "count_flops",
    "count_params",
    "find_prunable",
    "prune_filters",
    "remove_filters",
]


@dataclass
class PruningReport:
    """What :func:`prune_filters` did.

    Attributes
    ----------
    params_before, params_after : int
        Parameters of the whole model (head included), see :func:`count_params`.
    flops_before, flops_after : int
        Multiply-accumulates for one sample of the fitted input shape, see
        :func:`count_flops`.
    val_accuracy : list of float
        Validation accuracy before pruning, then after each round run
        (including a last, rejected round).
    rounds : list of dict
        One record per round run: ``round``, ``val_accuracy``, ``accepted``,
        ``removed`` (filters removed per layer), ``pair_similarity`` (per
        layer, the mean over the selected pairs of their cosine similarity
        averaged over the history) and ``pull_cosine`` (their cosine
        similarity after the pull epochs).
    filters_before, filters_after : dict of str to int
        Output channels of every convolution, by qualified name in
        ``module_``, before pruning and in the returned model.
    skipped : dict of str to str
        Convolutions with more than ``min_filters`` filters that could not be
        pruned, with the reason (such as feeding a residual add).
    stop_reason : str
        Why the rounds stopped.
    """

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    val_accuracy: list = field(default_factory=list)
    rounds: list = field(default_factory=list)
    filters_before: dict = field(default_factory=dict)
    filters_after: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    stop_reason: str = ""

    @property
    def filters_removed(self):
        """Output channels removed per convolution (nonzero only).

        Depthwise convolutions shrunk along with a pruned one are included.
        """
        return {
            name: n - self.filters_after[name]
            for name, n in self.filters_before.items()
            if n != self.filters_after[name]
        }

    @property
    def n_rounds(self):
        """Number of accepted rounds."""
        return sum(r["accepted"] for r in self.rounds)


def _accuracy(est, X, y):
    return float(np.mean(est.net_.predict(X) == y))


def _filters(module):
    return {
        name: m.out_channels
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    }


@validate_params(
    {
        "estimator": "no_validation",
        "X": "no_validation",
        "y": ["array-like", None],
        "pair_fraction": [Number(Real, 0, 0.5, closed="right")],
        "min_filters": [POSITIVE_INT],
        "max_accuracy_drop": [NON_NEGATIVE],
        "validation_fraction": [Number(Real, 0, 1, closed="neither")],
        "validation_data": [tuple, list, None],
        "max_rounds": [POSITIVE_INT],
        "history_epochs": [NON_NEGATIVE_INT],
        "pull_epochs": [NON_NEGATIVE_INT],
        "finetune_epochs": [NON_NEGATIVE_INT],
        "pull_strength": [NON_NEGATIVE],
        "pull_terms": [StrOptions({"layer", "pair"})],
        "merge": ["boolean"],
        "random_state": ["random_state"],
        "verbose": [NON_NEGATIVE_INT],
    },
    prefer_skip_nested_validation=True,
)
def prune_filters(
    estimator,
    X,
    y,
    *,
    pair_fraction=0.05,
    min_filters=128,
    max_accuracy_drop=0.02,
    validation_fraction=0.2,
    validation_data=None,
    max_rounds=5,
    history_epochs=2,
    pull_epochs=1,
    finetune_epochs=1,
    pull_strength=1.0,
    pull_terms="layer",
    merge=False,
    random_state=None,
    verbose=0,
):
    """Remove redundant conv filters of a fitted classifier (TASCNet stage 2).

    Rounds of the filter pruning of TASCNet (Basha et al., 2022) run on a
    deep copy of ``estimator``; the input is not modified. Each round:

    1. Finds the prunable convolutions: more than ``min_filters`` filters and
       an output that reaches exactly one consumer convolution or linear
       layer (the head included) through BatchNorm, depthwise convolutions,
       activations, dropout, pooling or flattening only, found by tracing
       the backbone with :mod:`torch.fx`. Convolutions whose output feeds a
       residual add, a concatenation or several branches are skipped (see
       ``pruning_report_.skipped``), as are grouped convolutions.
    2. Fine-tunes ``history_epochs`` epochs, recording every prunable
       layer's filters at the start and after each epoch, and scores each
       pair of filters in a layer by their cosine similarity averaged over
       these snapshots. The ``pair_fraction * n_filters`` most similar
       disjoint pairs of each layer are selected (at least one, and never so
       many that the layer drops below ``min_filters``).
    3. Fine-tunes ``pull_epochs`` epochs on the cross-entropy plus, for
       each layer, ``pull_strength * exp(-sum of the selected pairs' cosine
       similarities)``, which pulls the pairs together. The term's gradient
       is added by a callback in ``on_grad_computed``.
    4. Removes the filter of each pair with the smaller L1 norm (with
       ``merge=True``, merges it into its partner) as physically smaller
       tensors, shrinking the BatchNorm layers, depthwise convolutions and
       consumer that depend on it, and fine-tunes ``finetune_epochs`` epochs.

    A round is kept while the accuracy on a held-out stratified
    ``validation_fraction`` of ``X, y`` stays within ``max_accuracy_drop`` of
    the best seen (starting with the input estimator's); the first round that
    falls below ends the pruning, and the model of the last kept round is
    returned (the unpruned copy if none was kept).

    All training runs through the estimator's own skorch net
    (``net_.partial_fit``): its SGD settings, random freezing, ridge head
    solves (each call starts with a full solve) and BatchNorm mode apply,
    and the epochs are appended to its history. The optimizer is re-created
    after each surgery, so SGD momentum restarts.

    Parameters
    ----------
    estimator : FastRetrainClassifier
        A fitted estimator.
    X : array-like
        Images (or features) as accepted by ``estimator.predict``.
    y : array-like of shape (n,)
        Labels, all among ``estimator.classes_``.
    pair_fraction : float, default=0.05
        Pairs selected (and filters removed) per layer and round, as a
        fraction of the layer's filters, in (0, 0.5].
    min_filters : int, default=128
        Only convolutions with more filters are pruned, and never below it.
    max_accuracy_drop : float, default=0.02
        Largest drop in validation accuracy below the best seen that a round
        may cause.
    validation_fraction : float, default=0.2
        Share of ``X, y`` held out (stratified) for the validation accuracy;
        the rest is used for fine-tuning.
    validation_data : pair of array-like or None, default=None
        ``(X_val, y_val)`` to measure the validation accuracy on instead; all
        of ``X, y`` is then used for fine-tuning. Pass it when ``X, y`` are
        the data the estimator was fitted on: a split of them holds rows the
        input model was trained on, so its accuracy there (the first "best
        seen") is optimistic and the bound gets stricter than intended.
    max_rounds : int, default=5
        Largest number of rounds.
    history_epochs : int, default=2
        Fine-tuning epochs recorded for the similarity; 0 uses the current
        weights only.
    pull_epochs : int, default=1
        Epochs with the pull term.
    finetune_epochs : int, default=1
        Epochs after the surgery.
    pull_strength : float, default=1.0
        The pull term's weight ``lambda``; 0 disables it.
    pull_terms : {"layer", "pair"}, default="layer"
        ``"layer"``: one ``exp(-sum of cosines)`` term per layer, as in
        TASCNet. ``"pair"``: one ``exp(-cosine)`` term per pair.
    merge : bool, default=False
        Merge each removed filter into its partner (L1-weighted average of
        the two, and their consumer weights summed) instead of dropping it.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the shuffling and the torch RNG.
    verbose : int, default=0
        1 prints one line per round.

    Returns
    -------
    pruned : FastRetrainClassifier
        A new fitted estimator with attribute ``pruning_report_``, a
        :class:`PruningReport`.

    Notes
    -----
    The pull term ``exp(-sum of similarities)`` is taken per layer rather
    than over the whole network, so that layers do not damp one another.
    Its gradient still shrinks as ``exp(-sum)`` while a layer's pairs add
    up: for 5 % of a 1280-filter layer (64 pairs) it is negligible, and
    such layers are pruned on the history similarity alone.
    ``pull_terms="pair"`` keeps the pull at any size.
    ``pruning_report_.rounds`` records the pairs' cosine after the pull.

    References
    ----------
    .. [1] Basha, Tula, Vinakota, Dubey, "Target Aware Network Architecture
       Search and Compression for Efficient Knowledge Transfer" (TASCNet),
       arXiv:2205.05967, 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from torch import nn
    >>> from skfastretrain import FastRetrainClassifier
    >>> from skfastretrain.pruning import prune_filters
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)[:200]
    >>> cnn = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1), nn.BatchNorm2d(24),
    ...                     nn.ReLU(), nn.Conv2d(24, 16, 3), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1))
    >>> clf = FastRetrainClassifier(cnn, max_epochs=1, random_state=0)
    >>> clf = clf.fit(X, y[:200])
    >>> small = prune_filters(clf, X, y[:200], pair_fraction=0.2, min_filters=16,
    ...                       max_accuracy_drop=1.0, max_rounds=1,
    ...                       history_epochs=1, random_state=0)
    >>> small.pruning_report_.filters_removed
    {'backbone.0': 5}
    >>> small.module_.backbone[0].weight.shape
    torch.Size([19, 1, 3, 3])
    """
    params = {
        "pair_fraction": pair_fraction,
        "min_filters": min_filters,
        "max_accuracy_drop": max_accuracy_drop,
        "validation_fraction": validation_fraction,
        "max_rounds": max_rounds,
        "history_epochs": history_epochs,
        "pull_epochs": pull_epochs,
        "finetune_epochs": finetune_epochs,
        "pull_strength": pull_strength,
        "pull_terms": pull_terms,
        "merge": merge,
    }
    rng = check_random_state(random_state)
    if validation_data is not None and len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val).")
    X_fit, y_fit, X_val, y_val = _check_inputs(
        estimator,
        X,
        y,
        validation_fraction if validation_data is None else validation_data,
        rng.randint(np.iinfo(np.int32).max),
    )
    seed = int(rng.randint(np.iinfo(np.int32).max))
    accepted = copy.deepcopy(estimator)
    module = accepted.module_
    shape = accepted.input_shape_
    _, skipped = find_prunable(module, min_filters)
    report = PruningReport(
        params_before=count_params(module),
        params_after=count_params(module),
        flops_before=count_flops(module, shape),
        flops_after=count_flops(module, shape),
        filters_before=_filters(module),
        skipped=skipped,
        stop_reason=f"max_rounds={max_rounds} reached",
    )
    bn_mode = _bn_mode(estimator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        accepted.net_.iterator_train__generator = torch.Generator().manual_seed(seed)
        best = _accuracy(accepted, X_val, y_val)
        report.val_accuracy.append(best)
        for round_ in range(1, max_rounds + 1):
            plans, _ = find_prunable(accepted.module_, min_filters)
            if not plans:
                report.stop_reason = "no prunable layer left"
                break
            current = copy.deepcopy(accepted)
            record = _prune_round(current, plans, X_fit, y_fit, bn_mode, params)
            acc = _accuracy(current, X_val, y_val)
            record.update(round=round_, val_accuracy=acc)
            record["accepted"] = acc >= best - max_accuracy_drop
            report.rounds.append(record)
            report.val_accuracy.append(acc)
            if verbose:
                print(
                    f"prune_filters round {round_}: removed "
                    f"{sum(record['removed'].values())} filters, validation "
                    f"accuracy {acc:.4f} (best {best:.4f}), "
                    f"{'kept' if record['accepted'] else 'rejected'}"
                )
            if not record["accepted"]:
                report.stop_reason = (
                    f"validation accuracy {acc:.4f} fell more than "
                    f"max_accuracy_drop={max_accuracy_drop} below {best:.4f}"
                )
                break
            accepted, best = current, max(best, acc)
    module = accepted.module_
    report.params_after = count_params(module)
    report.flops_after = count_flops(module, shape)
    report.filters_after = _filters(module)
    accepted.n_iter_ = len(accepted.net_.history)
    accepted.pruning_report_ = report
    return accepted

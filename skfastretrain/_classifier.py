"""FastRetrainClassifier: the scikit-learn estimator over the whole path."""

import os
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._base import BaseFastRetrain
from ._config import resolve_config
from ._docs import fill_doc
from ._model import build_model
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
    EarlyStopping,
    RidgeHead,
    SGDEpoch,
)
from ._train import run_net
from ._validation import check_fit_input
from .callbacks import L2SP, DeltaRegularizer

__all__ = ["FastRetrainClassifier"]


@fill_doc
class FastRetrainClassifier(PredictMixin, ClassifierMixin, BaseFastRetrain):
    """Fine-tune a torch backbone with random layer freezing and ridge heads.

    Each epoch is an SGD-with-momentum epoch in which a random fraction of the
    backbone's layers is frozen (:class:`LayerFreezer`), followed by a
    closed-form ridge solve of the linear head from Gram statistics gathered
    batch by batch (:class:`RidgeHeadSolver`). The training loop is a skorch
    :class:`~skorch.NeuralNetClassifier`, available after fit as ``net_``.

    Parameters
    ----------
    <the estimators' common parameters>
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, with scikit-learn's meaning: a dict from
        label to weight, or ``"balanced"``, ``n_samples / (n_classes *
        np.bincount(y))``. They multiply ``fit``'s ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    <the estimators' common attributes>
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
        **BaseFastRetrain._parameter_constraints,
        "class_weight": [StrOptions({"balanced"}), dict, None],
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
        super().__init__(
            backbone,
            weights=weights,
            freeze_prob=freeze_prob,
            freeze_mode=freeze_mode,
            ridge_lambda=ridge_lambda,
            head=head,
            regularizer=regularizer,
            sgd=sgd,
            max_epochs=max_epochs,
            early_stopping=early_stopping,
            lr=lr,
            batch_size=batch_size,
            input_size=input_size,
            precision=precision,
            num_workers=num_workers,
            device=device,
            distributed=distributed,
            random_state=random_state,
            verbose=verbose,
            callbacks=callbacks,
        )
        self.class_weight = class_weight

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
        return super().fit(X, y, sample_weight=sample_weight, resume=resume)

    def _check_fit_input(self, X, y, sample_weight):
        return check_fit_input(
            self, X, y, sample_weight=sample_weight, class_weight=self.class_weight
        )

    def _collect_targets(self, fit_input):
        self.classes_ = fit_input.classes

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

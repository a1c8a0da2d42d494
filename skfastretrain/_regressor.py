"""FastRetrainRegressor: the same path with real-valued targets."""

from sklearn.base import RegressorMixin

from ._base import BaseFastRetrain
from ._docs import fill_doc
from ._predict import RegressionPredictMixin
from ._validation import check_fit_input

__all__ = ["FastRetrainRegressor"]


@fill_doc
class FastRetrainRegressor(RegressionPredictMixin, RegressorMixin, BaseFastRetrain):
    """Fine-tune a torch backbone for regression, with ridge regression heads.

    The path of :class:`FastRetrainClassifier` (backbones, random or prefix
    freezing, the stored prefix, heads that read every stage, the
    learning-rate probe, early stopping, checkpoints, data-parallel fits,
    progress) with real-valued targets of one or several columns:

    - the targets are standardized, each column by its mean and standard
      deviation at fit (``y_mean_``, ``y_scale_``), so that one ridge
      strength and one learning rate suit targets of any scale;
      :meth:`predict` maps the head's outputs back;
    - the SGD epochs minimize the mean squared error (weighted by
      ``sample_weight``);
    - each head solve is the closed-form ridge regression of the
      standardized targets on the head's features
      (:class:`RidgeHeadSolver`, whose ``ridge_lambda="auto"``
      cross-validates the same squared error), blended into the head;
    - :meth:`score` is R², the held-out score of ``early_stopping`` the
      mean squared error (``valid_loss``) and R² (``valid_r2``).

    The training loop is a skorch :class:`~skorch.NeuralNetRegressor`,
    available after fit as ``net_``.

    Parameters
    ----------
    <the estimators' common parameters>

    Attributes
    ----------
    n_outputs_ : int
        Number of targets (1 for 1-D ``y``).
    y_mean_, y_scale_ : ndarray of shape () or (n_outputs,)
        Mean and standard deviation of each target at fit (weighted by
        ``sample_weight``; a constant target's scale is 1). Their shape is
        that of one row of ``y``: () for 1-D ``y``.
    <the estimators' common attributes>
    net_ : FastRetrainRegressionNet
        The fitted skorch net (a :class:`~skorch.NeuralNetRegressor`).
    module_ : FastRetrainModule
        The trained torch model, head included; its outputs are the
        standardized targets.
    attention_ : dict of str to ndarray or None
        Channel weights of ``regularizer="delta"`` or ``"feature_map"``.
    history_ : skorch.History
        Per-epoch records, as the classifier's with R² in place of
        accuracy: ``train_r2``, ``train_r2_before_solve``,
        ``train_r2_ridge`` (on up to 2,048 training rows) and, with
        ``early_stopping``, ``valid_loss`` (mean squared error of the
        standardized targets) and ``valid_r2``.

    See Also
    --------
    FastRetrainClassifier : The same path for classes.
    sklearn.compose.TransformedTargetRegressor : For a transform of ``y``
        (a log, say) before the fit.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.datasets import load_digits
    >>> from skfastretrain import FastRetrainRegressor
    >>> X, digit = load_digits(return_X_y=True)
    >>> y = digit / 9  # the digit's value, a number to regress
    >>> _ = torch.manual_seed(0)  # the module's initial weights
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
    >>> reg = FastRetrainRegressor(mlp, max_epochs=2, random_state=0)
    >>> reg.fit(X / 16, y).score(X / 16, y) > 0.7
    True
    """

    def fit(
        self, X, y=None, *, sample_weight=None, resume=False
    ) -> "FastRetrainRegressor":
        """Fine-tune the backbone and its regression head.

        Parameters
        ----------
        X : array-like, sequence of paths or images, or torch Dataset
            Images (n, H, W), (n, H, W, C) or (n, C, H, W) of any integer
            dtype in [0, 255] or float in [0, 1]; feature vectors (n, d);
            image file paths; a list of PIL images, arrays or tensors; or a
            torch Dataset, as :meth:`FastRetrainClassifier.fit` reads them.
            A folder is refused: its labels are class names.
        y : array-like of shape (n,) or (n, n_outputs)
            Real targets (finite). None only when X is a Dataset of
            (image, target) items.
        sample_weight : array-like of shape (n,) or None, default=None
            Non-negative weights of the rows: the SGD loss is their weighted
            mean squared error, the head's Gram statistics are weighted
            sums, and the targets' standardization and the held-out score
            of ``early_stopping`` use them. Route it with ``set_fit_request``
            in a ``Pipeline`` or ``GridSearchCV``.
        resume : bool, default=False
            Continue from the file of the :class:`TrainingCheckpoint` in
            ``callbacks``, as :meth:`FastRetrainClassifier.fit` does.

        Returns
        -------
        self : FastRetrainRegressor
        """
        return super().fit(X, y, sample_weight=sample_weight, resume=resume)

    def _check_fit_input(self, X, y, sample_weight):
        return check_fit_input(self, X, y, sample_weight=sample_weight, regression=True)

    def _collect_targets(self, fit_input):
        self.y_mean_ = fit_input.target_mean
        self.y_scale_ = fit_input.target_scale
        self.n_outputs_ = fit_input.n_outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # One head output per column of y.
        tags.target_tags.multi_output = True
        return tags

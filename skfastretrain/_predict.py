"""Prediction: a classifier's logits, probabilities and labels, and a
regressor's values, from the head's outputs (``BaseFastRetrain._outputs``)."""

import numpy as np
from scipy.special import softmax

__all__ = ["PredictMixin", "RegressionPredictMixin"]


class PredictMixin:
    """A classifier's ``decision_function``, ``predict_proba`` and
    ``predict`` over ``net_``.

    Inference runs batch by batch through the skorch net, with a progress bar
    when ``verbose`` is set (``"auto"``: in a terminal or a notebook), and
    returns float64 NumPy arrays.
    """

    def _logits(self, X):
        return self._outputs(X)

    def decision_function(self, X) -> np.ndarray:
        """Logits of the head.

        Parameters
        ----------
        X : array-like, sequence of images or paths, folder or torch Dataset
            As in :meth:`fit`. Image arrays of another height and width than
            at fit are resized to it, as files are; a folder's images are
            predicted in the order of
            ``skfastretrain.datasets.load_image_folder(folder).filenames``.

        Returns
        -------
        scores : ndarray of shape (n,) or (n, n_classes)
            For two classes, the logit difference of the second class over
            the first, as scikit-learn expects.
        """
        logits = self._logits(X)
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the logits.

        Parameters
        ----------
        X : array-like, sequence of images or paths, folder or torch Dataset
            As in :meth:`fit`. Image arrays of another height and width than
            at fit are resized to it, as files are; a folder's images are
            predicted in the order of
            ``skfastretrain.datasets.load_image_folder(folder).filenames``.

        Returns
        -------
        proba : ndarray of shape (n, n_classes)
        """
        return softmax(self._logits(X), axis=1)

    def predict(self, X) -> np.ndarray:
        """Predicted class labels.

        Parameters
        ----------
        X : array-like, sequence of images or paths, folder or torch Dataset
            As in :meth:`fit`. Image arrays of another height and width than
            at fit are resized to it, as files are; a folder's images are
            predicted in the order of
            ``skfastretrain.datasets.load_image_folder(folder).filenames``.

        Returns
        -------
        y : ndarray of shape (n,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class RegressionPredictMixin:
    """A regressor's ``predict``: the head's outputs on the targets' scale."""

    def predict(self, X) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array-like, sequence of images or paths, or torch Dataset
            As in :meth:`fit`. Image arrays of another height and width than
            at fit are resized to it, as files are.

        Returns
        -------
        y : ndarray of shape (n,) or (n, n_outputs)
            1-D when ``y`` was 1-D at fit.
        """
        # The head regresses the standardized targets.
        values = self._outputs(X) * self.y_scale_ + self.y_mean_
        return values.reshape(len(values), *np.shape(self.y_mean_))

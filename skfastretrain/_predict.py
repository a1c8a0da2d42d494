"""Prediction: logits, probabilities and labels of a fitted estimator."""

import numpy as np
import torch
from scipy.special import softmax
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._progress import resolve_verbose
from ._validation import check_predict_input

__all__ = ["PredictMixin"]


class PredictMixin:
    """``decision_function``, ``predict_proba`` and ``predict`` over ``net_``.

    Inference runs batch by batch through the skorch net, with a progress bar
    when ``verbose`` is set (``"auto"``: in a terminal or a notebook), and
    returns float64 NumPy arrays.
    """

    def _logits(self, X):
        check_is_fitted(self)
        data = check_predict_input(self, X)
        batches = self.net_.forward_iter(data, training=False)
        if resolve_verbose(self.verbose):
            total = -(-len(data) // self.net_.batch_size)
            batches = tqdm(batches, total=total, desc="predict", leave=False)
        return torch.cat([b.cpu() for b in batches]).double().numpy()

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

"""scikit-learn's estimator checks on FastRetrainClassifier with an MLP backbone."""

from conftest import make_mlp
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfastretrain import FastRetrainClassifier

EXPECTED_FAILED_CHECKS = {
    "check_methods_subset_invariance": (
        "Inference runs in float32 and the BLAS kernels block a batch "
        "differently from its sub-batches, so logits of one sample can differ "
        "in the 7th significant digit (about 1e-7 relative) between a full "
        "batch and a subset; the check demands agreement to 1e-7 absolute."
    ),
}


@parametrize_with_checks(
    [FastRetrainClassifier(make_mlp, max_epochs=5, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)

"""The examples' data loading, without Debian's Fashion-MNIST folder.

Each example that uses Fashion-MNIST defines a module-level ``load_data()``.
The tests run it with the default folder pointed to one that does not exist,
so the images come from the subset bundled with the package, and check what
the example unpacks, without running the example's training: the gallery
examples do their work at module level (sphinx-gallery renders it cell by
cell), so importing them with runpy would train. Only their imports and
definitions are executed.
"""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import skfastretrain.datasets
from skfastretrain.datasets import _fashion_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The train and test sizes each example announces in its docstring.
SIZES = {
    "quickstart.py": (4000, 1000),
    "plot_ablation.py": (500, 300),
    "plot_class_incremental.py": (1000, 1000),
    "plot_image_files.py": (500, 100),
}


def fashion_examples():
    """The examples that load Fashion-MNIST."""
    return sorted(
        path.name
        for path in EXAMPLES.glob("*.py")
        if "load_fashion_mnist" in path.read_text()
    )


def definitions(path):
    """Execute an example's imports and top-level definitions only.

    Parameters
    ----------
    path : pathlib.Path
        The example script.

    Returns
    -------
    namespace : dict
        The example's module namespace: its imported names, functions and
        classes. Every other top-level statement (the training, the plots)
        is left out.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    namespace = {"__name__": f"example_{path.stem}", "__file__": str(path)}
    exec(compile(tree, str(path), "exec"), namespace)
    return namespace


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """No release in the default folder; records the source of every load."""
    monkeypatch.setattr(_fashion_mnist, "DEFAULT_PATH", tmp_path / "missing")
    used = []
    load = _fashion_mnist.load_fashion_mnist

    def recording_load(*args, return_X_y=False, **kwargs):
        bunch = load(*args, **kwargs)
        used.append(bunch.source)
        return (bunch.data, bunch.target) if return_X_y else bunch

    # The examples import it from skfastretrain.datasets when executed.
    monkeypatch.setattr(skfastretrain.datasets, "load_fashion_mnist", recording_load)
    return used


def test_every_fashion_example_is_tested():
    assert fashion_examples() == sorted(SIZES)


@pytest.mark.parametrize("example", sorted(SIZES))
def test_no_fallback_to_other_data(example):
    """load_fashion_mnist always returns images: no example catches its
    FileNotFoundError to load something else."""
    source = (EXAMPLES / example).read_text()
    assert "FileNotFoundError" not in source
    assert "load_digits" not in source


@pytest.mark.parametrize("example", sorted(SIZES))
def test_load_data_without_release(example, sources):
    path = EXAMPLES / example
    namespace = definitions(path)
    name, X_train, y_train, X_test, y_test, *rest = namespace["load_data"]()

    assert sources and set(sources) == {"bundled"}
    assert name.startswith("Fashion-MNIST") and "bundled" in name
    n_train, n_test = SIZES[example]
    for X, y, n in ((X_train, y_train, n_train), (X_test, y_test, n_test)):
        assert isinstance(X, np.ndarray) and X.dtype == np.uint8
        assert X.shape == (n, 28, 28)
        assert isinstance(y, np.ndarray) and np.issubdtype(y.dtype, np.integer)
        assert y.shape == (n,)
        counts = np.bincount(y, minlength=10)
        assert counts.max() - counts.min() <= 1  # stratified
    np.testing.assert_array_equal(np.unique(y_train), np.arange(10))
    np.testing.assert_array_equal(np.unique(y_test), np.unique(y_train))
    if rest:
        assert rest == [list(_fashion_mnist.TARGET_NAMES)]

    # The sizes are those the example's docstring announces.
    doc = ast.get_docstring(ast.parse(path.read_text()))
    for n in (n_train, n_test):
        assert re.search(rf"\b({n}|{n:,})\b", doc), f"{n} not in {example}'s docs"

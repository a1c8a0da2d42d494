"""The package's layout: the promises of the Design page, measured from the code."""

import ast
import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest

import skfastretrain

PACKAGE = Path(skfastretrain.__file__).resolve().parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def _dotted(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """Package modules that ``path`` imports, lazy imports included."""
    name = _dotted(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c in _ALL)
    return found - {name}


_ALL = {_dotted(p) for p in MODULES}


def test_no_import_cycle():
    graph = {_dotted(p): _imports(p) for p in MODULES}
    done, on_path = set(), []

    def visit(node):
        if node in on_path:
            cycle = [*on_path[on_path.index(node) :], node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        on_path.append(node)
        for child in sorted(graph[node]):
            visit(child)
        on_path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_imports_run_one_way_between_the_steps():
    # The arithmetic and the backbones never reach up into the callbacks,
    # the net or the estimator.
    lower = ("skfastretrain.linalg", "skfastretrain.backbones", "skfastretrain.head")
    upper = tuple(
        f"skfastretrain.{m}"
        for m in (
            "callbacks",
            "_config",
            "_pipeline",
            "_model",
            "_train",
            "_net",
            "_base",
            "_classifier",
            "_regressor",
            "pruning",
        )
    )
    for path in MODULES:
        name = _dotted(path)
        if any(name.startswith(prefix) for prefix in lower):
            assert not {m for m in _imports(path) if m.startswith(upper)}, name


def _external_imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_linalg_is_pure():
    # Accumulators and solves only: no skorch, no hooks, no reduction over
    # ranks (the callbacks reduce what they gather).
    for path in (PACKAGE / "linalg").glob("*.py"):
        imported = _external_imports(path) | _imports(path)
        assert not {
            m
            for m in imported
            if m.startswith(("skorch", "torch.distributed", "skfastretrain"))
            and not m.startswith("skfastretrain.linalg")
        }, path.name
        assert "register_forward" not in path.read_text(), path.name


def test_docstring_examples_import_public_paths_only():
    finder = doctest.DocTestFinder()
    private = re.compile(r"from skfastretrain\S*\._|import skfastretrain\S*\._")
    offenders = []
    for path in MODULES:
        module = importlib.import_module(_dotted(path))
        for test in finder.find(module):
            offenders += [
                f"{test.name}: {ex.source.strip()}"
                for ex in test.examples
                if private.search(ex.source)
            ]
    assert not offenders


def test_fit_reads_the_estimator_only_to_resolve_its_configuration():
    # After resolve_config, the steps of a fit (module, pipeline, net,
    # training) read the RunConfig: none of their modules takes an
    # estimator.
    for name in ("_model", "_pipeline", "_train", "_net"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert not re.search(r"\best\b", source), name


@pytest.mark.parametrize(
    "package",
    ["skfastretrain", "backbones", "callbacks", "datasets", "linalg", "pruning"],
)
def test_public_names_are_documented(package):
    name = package if package == "skfastretrain" else f"skfastretrain.{package}"
    module = importlib.import_module(name)
    for public in module.__all__:
        obj = getattr(module, public)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, public


@pytest.mark.parametrize(
    "estimator",
    [skfastretrain.FastRetrainClassifier, skfastretrain.FastRetrainRegressor],
)
def test_each_estimator_documents_each_of_its_parameters(estimator):
    # The shared entries are written once (_docs.py) and filled into both.
    documented = re.findall(r"^    (\w+) :", estimator.__doc__, re.MULTILINE)
    parameters = list(inspect.signature(estimator).parameters)
    assert [p for p in documented if p in parameters] == parameters
    assert "<the estimators' common" not in estimator.__doc__
    assert "    best_epoch_ : int or None" in estimator.__doc__

"""Sphinx configuration of the skfastretrain documentation.

Build with ``make html`` in this folder (or ``python -m sphinx -b html . _build/html``).
Needs the ``docs`` extra: ``pip install -e ".[docs]"``.
"""

import os
import re
import sys
from datetime import date
from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Build from the working tree even when the package is not installed; the
# docs' own helper modules sit next to this file.
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _benchmark_page import write_benchmark_page  # noqa: E402

import skfastretrain  # noqa: E402

# -- Project information -----------------------------------------------------

project = "skfastretrain"
author = "The skfastretrain developers"
copyright = f"{date.today().year}, {author}"
release = skfastretrain.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

extensions = [
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    # MathJax copied into _static: the pages render math without a network.
    "sphinx-mathjax-offline",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"
default_role = "literal"

# autosummary writes one page per public object listed in api.rst.
autosummary_generate = True
# Inherited members are documented where they are the estimator API
# (predict, score, ...): see _skip_inherited_members below.
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"

# numpydoc renders the Parameters/Returns sections; the class member tables
# come from autosummary so that every method gets its own entry.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False


# -- Intersphinx -------------------------------------------------------------
# The build machines have no network access, and intersphinx would try to
# download every inventory below (and warn for each one it cannot reach).
# The mapping is therefore off by default: set SKFR_DOCS_INTERSPHINX=1 in
# the environment to enable the cross-project links on a connected machine.

if os.environ.get("SKFR_DOCS_INTERSPHINX", "0") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable/", None),
    }
else:
    intersphinx_mapping = {}

# -- Sphinx-Gallery ----------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    # Every example runs, the quickstart (README's first command) first.
    "filename_pattern": r"/(plot_|quickstart)",
    "within_subsection_order": "_gallery_order.QuickstartFirst",
    # The computation-times page loads jQuery and DataTables from CDNs.
    "write_computation_times": False,
    # A failing example fails the build instead of leaving a broken page.
    "abort_on_example_error": True,
    "doc_module": ("skfastretrain",),
    "reference_url": {"skfastretrain": None},
    "backreferences_dir": "generated/backreferences",
    "download_all_examples": False,
}

# -- Benchmark results -------------------------------------------------------
# benchmarks.rst includes generated/benchmark_results.inc, written by
# _benchmark_page.py from the saved runs in benchmarks/ (the headline figure,
# the summary, the findings of benchmarks/README.md and the raw tables).

write_benchmark_page(HERE.parent / "benchmarks", HERE / "generated")

# -- HTML output -------------------------------------------------------------

if find_spec("pydata_sphinx_theme") is not None:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        # The six top-level pages in the header, none behind "More".
        "header_links_before_dropdown": 7,
        "navbar_align": "left",
        "navbar_end": ["theme-switcher"],
    }
    # Pages without subpages get no (empty) section navigation.
    html_sidebars = {page: [] for page in ("index", "benchmarks", "references")}
else:
    html_theme = "alabaster"
    html_theme_options = {}

html_title = f"skfastretrain {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

# -- Hooks -------------------------------------------------------------------


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods that scikit-learn generates.

    They belong to scikit-learn's metadata routing and are documented there.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


#: Inherited methods documented on a class's page: the estimator API.
_INHERITED_API = {
    "decision_function",
    "fit",
    "get_params",
    "predict",
    "predict_proba",
    "score",
    "set_params",
}


def _skip_inherited_members(app, what, name, obj, skip, options):
    """Document inherited methods only where they are this package's own or
    the scikit-learn API (``predict``, ``score``, ``get_params``, ...).

    ``inherited-members`` is on so that ``FastRetrainClassifier`` lists
    ``predict`` and ``score``; without this, a callback's page would list
    every skorch hook and a module's every ``torch.nn.Module`` method.
    """
    if what != "class" or name in _INHERITED_API:
        return None
    function = getattr(obj, "fget", obj)
    if not callable(function):
        return None
    module = getattr(function, "__module__", None) or ""
    return None if module.startswith("skfastretrain") else True


def _local_refs_only(app, what, name, obj, options, lines):
    """Docstrings inherited from scikit-learn (``score``) point at labels of
    its user guide, which this build does not have: show them as text."""
    if getattr(obj, "__module__", "").startswith("sklearn"):
        lines[:] = [re.sub(r":ref:`([^`<]+?)(?: <[^>]+>)?`", r"\1", x) for x in lines]


def _quickstart_figure(app):
    """getting_started.rst includes the quickstart's figure where the gallery
    drew it (an executed build), and a link otherwise."""
    image = HERE / "auto_examples" / "images" / "sphx_glr_quickstart_001.png"
    if image.is_file():
        text = (
            ".. figure:: auto_examples/images/sphx_glr_quickstart_001.png\n"
            "   :alt: Test accuracy of the quickstart after every epoch\n"
            "   :width: 80%\n\n"
            "   The quickstart's test accuracy after every epoch, against the\n"
            "   linear probe (epoch 0), as the gallery ran it.\n"
        )
    else:
        text = (
            "(The figure appears when the documentation is built with the\n"
            "gallery executed.)\n"
        )
    _write_if_changed(HERE / "generated" / "quickstart_figure.inc", text)


def _write_if_changed(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)
    app.connect("autodoc-skip-member", _skip_inherited_members)
    app.connect("autodoc-process-docstring", _local_refs_only)
    # After sphinx-gallery (priority 500) has run the examples.
    app.connect("builder-inited", _quickstart_figure, priority=900)

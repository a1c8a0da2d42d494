"""Sphinx configuration of the skfastretrain documentation.

Build with ``make html`` in this folder (or ``python -m sphinx -b html . _build/html``).
Needs the ``docs`` extra: ``pip install -e ".[docs]"``.
"""

import os
import sys
from datetime import date
from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Build from the working tree even when the package is not installed.
sys.path.insert(0, str(HERE.parent))

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
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"
default_role = "literal"

# autosummary writes one page per public object listed in api.rst.
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
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
    "filename_pattern": "/plot_",
    # A failing example fails the build instead of leaving a broken page.
    "abort_on_example_error": True,
    "doc_module": ("skfastretrain",),
    "reference_url": {"skfastretrain": None},
    "backreferences_dir": "generated/backreferences",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
}

# -- HTML output -------------------------------------------------------------

if find_spec("pydata_sphinx_theme") is not None:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
    }
else:
    html_theme = "alabaster"
    html_theme_options = {}

html_title = f"skfastretrain {release}"
html_static_path = []

# -- Hooks -------------------------------------------------------------------


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods that scikit-learn generates.

    They belong to scikit-learn's metadata routing and are documented there.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)

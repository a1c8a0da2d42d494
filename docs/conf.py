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

# -- Benchmark results -------------------------------------------------------
# benchmarks.rst includes generated/benchmark_results.inc, written here from
# the result files of benchmarks/transfer.py that exist at build time, so
# that a missing run leaves a note instead of a broken image (an error with
# -W).

BENCHMARK_RESULTS = HERE.parent / "benchmarks" / "results"
BENCHMARK_RUNS = {
    "quick": (
        "Quick run",
        "1,500 training and 500 test images, 2 epochs",
        "transfer.py --quick",
    ),
    "full": (
        "Full run",
        "10,000 training and 2,000 test images, 4 epochs",
        "transfer.py --full",
    ),
    "pilot_variants": (
        "Variants pilot",
        "Variants of the method on 4,000 training-split images, evaluated on "
        "1,000 others (never the test split), 3 epochs",
        "pilot.py --variants",
    ),
    "levers": (
        "Speed levers",
        "The Lite0 step under each lever, and float32 Gram accumulation",
        "levers.py",
    ),
}


def _benchmark_results_rst():
    lines = []
    for name, (title, setting, command) in BENCHMARK_RUNS.items():
        lines += [title, "-" * len(title), ""]
        png = BENCHMARK_RESULTS / f"{name}.png"
        md = BENCHMARK_RESULTS / f"{name}.md"
        if not png.is_file() and not md.is_file():
            lines += [
                f"No saved results: run ``python benchmarks/{command}``",
                f"({setting}).",
                "",
            ]
            continue
        lines += [f"{setting}. Files ``benchmarks/results/{name}.*``.", ""]
        if png.is_file():
            # Image paths are relative to benchmarks.rst, the including file.
            lines += [
                f".. figure:: ../benchmarks/results/{name}.png",
                f"   :alt: Test accuracy against fit time, {name} run",
                "   :width: 100%",
                "",
                "   Test accuracy against fit wall time.",
                "",
            ]
        if md.is_file():
            lines += _markdown_tables_rst(md.read_text())
    return "\n".join(lines)


def _rst_cell(text):
    # Backslash-escape what reStructuredText would read as markup: inline
    # markup characters anywhere, list and comment markers at the start.
    text = re.sub(r"([\\*`_|])", r"\\\1", text.strip())
    if text[:1] in ("-", "+", "#", ".", ":"):
        text = "\\" + text
    return text


def _markdown_tables_rst(markdown):
    """The pipe tables of a markdown file as list-tables, other text as is."""
    lines = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        rows = [row.strip() for row in block.splitlines() if row.strip()]
        is_table = (
            len(rows) >= 2
            and all(row.startswith("|") and row.endswith("|") for row in rows)
            and set(rows[1]) <= set("|-: ")
        )
        if not is_table:
            lines += [".. code-block:: text", ""]
            lines += ["   " + row for row in block.splitlines()] + [""]
            continue
        cells = [
            [_rst_cell(cell) for cell in row[1:-1].split("|")]
            for i, row in enumerate(rows)
            if i != 1
        ]
        lines += [".. list-table::", "   :header-rows: 1", ""]
        for row in cells:
            lines.append(f"   * - {row[0]}".rstrip())
            lines += [f"     - {cell}".rstrip() for cell in row[1:]]
        lines.append("")
    return lines


def _write_if_changed(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


_write_if_changed(
    HERE / "generated" / "benchmark_results.inc", _benchmark_results_rst()
)

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

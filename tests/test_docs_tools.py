"""The documentation's own tools: the offline check of a built site and the
markdown the Benchmarks page is made from."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


offline = _load(ROOT / "tools" / "check_docs_offline.py")
page = _load(ROOT / "docs" / "_benchmark_page.py")

GOOD = """<html><head>
<script src="_static/mathjax/tex-chtml.js"></script>
<link rel="stylesheet" href="_static/site.css">
</head><body>
<div class="math">x</div><a id="top"></a>
<a href="other.html#part">other</a> <a href="#top">top</a>
<a href="https://doi.org/10.1109/TCYB.2024.3483068">a paper</a>
<img src="_images/plot.png">
</body></html>"""


@pytest.fixture
def site(tmp_path):
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    (tmp_path / "_static" / "site.css").write_text("body { color: black; }")
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "plot.png").write_bytes(b"png")
    (tmp_path / "index.html").write_text(GOOD)
    (tmp_path / "other.html").write_text('<p id="part">here</p>')
    return tmp_path


def test_a_self_contained_site_passes(site):
    assert offline.check(site) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            '"_static/mathjax/tex-chtml.js"',
            '"https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"',
            "loads https://cdn.jsdelivr.net",
        ),
        ('href="_static/site.css"', 'href="//cdn.example.org/x.css"', "loads //cdn"),
        ('src="_images/plot.png"', 'src="_images/gone.png"', "is not in the build"),
        ('href="other.html#part"', 'href="missing.html"', "link missing.html"),
        ('href="other.html#part"', 'href="other.html#nowhere"', "anchor other.html"),
        (
            '<script src="_static/mathjax/tex-chtml.js"></script>',
            "",
            "has math but loads no MathJax",
        ),
    ],
)
def test_each_offline_problem_is_found(site, old, new, problem):
    (site / "index.html").write_text(GOOD.replace(old, new))
    problems = offline.check(site)
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_stylesheet_that_fetches_a_font_is_found(site):
    (site / "_static" / "site.css").write_text(
        "@font-face { src: url('https://fonts.example.org/a.woff2'); }"
    )
    assert offline.check(site) == ["_static/site.css: loads a URL from the network"]


def test_markdown_becomes_restructured_text():
    markdown = (
        "Intro with `code`, **bold** and lr_ at the end.\n\n"
        "- **P1**: first\n  continued\n  - nested `x`\n- second\n\n"
        "| a | b |\n|---|---|\n| 1 | `q` |\n\n"
        "| header | only |\n|---|---|\n\n"
        "```\npython run.py\n```\n"
    )
    lines = page.markdown_rst(markdown)
    text = "\n".join(lines)
    assert "Intro with ``code``, **bold** and lr\\_ at the end." in text
    assert "* **P1**: first\n  continued" in text
    assert "   * nested ``x``" in text
    assert "* second" in text
    assert ".. list-table::" in text and "     - ``q``" in text
    # A table without rows and code fences are left out.
    assert text.count(".. list-table::") == 1 and "run.py" not in text


def test_the_benchmark_page_is_written_from_the_saved_runs(tmp_path):
    pytest.importorskip("matplotlib")
    page.write_benchmark_page(ROOT / "benchmarks", tmp_path)
    text = (tmp_path / "benchmark_results.inc").read_text()
    assert (tmp_path / "benchmark_headline.png").stat().st_size > 0
    for heading in ("Accuracy against time", "The methods", "Findings", "Raw results"):
        assert heading in text
    # Captions are prose, not code blocks.
    assert ".. code-block::" not in text

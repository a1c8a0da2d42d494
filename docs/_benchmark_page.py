"""The Benchmarks page's generated parts, from ``benchmarks/`` at build time.

``docs/conf.py`` calls :func:`write_benchmark_page`, which writes
``generated/benchmark_results.inc`` (included by ``benchmarks.rst``) and the
headline figure from the saved runs of ``benchmarks.transfer``: the
figure and the summary table from the full run's JSON, the method names,
the targets and the findings from ``benchmarks/README.md``, and the raw
tables of every run from its ``.md`` file. A run that is missing leaves a
sentence saying how to make it, not a broken image.
"""

import json
import re

#: The methods of the headline, in the legend's order, with their labels.
HEADLINE = {
    "default": "FastRetrainClassifier() with its defaults",
    "ours": "ours (fast retraining, the ablation's settings)",
    "fastai": "fastai-style fine_tune",
    "sgdm": "plain fine-tuning (SGD with momentum)",
    "linear_probe": "linear probe (logistic regression on frozen features)",
}

#: Raw result files, each with its title and setting in words.
RUNS = {
    "full": ("Full run", "10,000 training and 2,000 test images, 4 epochs"),
    "native": (
        "Native-size run",
        "1,000 training and 1,000 test images at 224 px, 3 epochs",
    ),
    "quick": ("Quick run", "1,500 training and 500 test images, 2 epochs"),
    "full_extra": ("Extra full-setting variants", "the full setting"),
    "pilot_variants": (
        "Variants pilot",
        "4,000 training-split images, scored on 1,000 others of the training "
        "split (never the test split), 3 epochs",
    ),
    "defaults": (
        "Defaults pilot",
        "rows held out of the training split of the bundled Fashion-MNIST "
        "subset and of scikit-learn's digits",
    ),
    "levers": ("Speed levers", "the Lite0 step under each lever"),
    "diagnostics": ("Side measurements", "memory and timing details"),
    "stages": (
        "Heads that read every stage",
        "ridge heads on pretrained Lite0 features, no training, scored on rows "
        "held out of each task's training split",
    ),
    "stage_head": (
        "The estimator's head on every stage",
        "FastRetrainClassifier with and without stages, 3 epochs, scored on rows "
        "held out of each task's training split",
    ),
    "per_task": (
        "Per-task choices",
        "FastRetrainClassifier with one setting changed per run, 3 epochs, "
        "scored on rows held out of each task's training split, with leave one "
        "task out",
    ),
    "four_tasks": (
        "Four tasks against tuned baselines",
        "baselines tuned on rows held out of each task's training split, every "
        "method then scored on the task's test split",
    ),
    "class_weight": (
        "class_weight on an imbalanced task",
        "the defaults with class_weight=None and 'balanced' on ELPV, scored on "
        "its test split",
    ),
}


def _inline(text):
    """Markdown inline markup (code, bold, links) as reStructuredText."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"``{part[1:-1]}``")
            continue
        part = re.sub(r"([\\|])", r"\\\1", part)
        # A word ending in "_" (lr_) would be a reference in rST.
        part = re.sub(r"(\w)_(?!\w)", r"\1\\_", part)
        part = re.sub(r"(?<![\w*])\*(?!\*)", r"\\*", part)
        part = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"`\1 <\2>`__", part)
        out.append(part)
    return "".join(out)


def _is_table(rows):
    return (
        len(rows) >= 2
        and all(r.startswith("|") and r.endswith("|") for r in rows)
        and set(rows[1]) <= set("|-: ")
    )


def _list_table(rows, *, caption="", css_class=None):
    """``rows`` (the first is the header) as an rST list-table."""
    lines = [f".. list-table:: {caption}".rstrip(), "   :header-rows: 1"]
    if css_class:
        lines.append(f"   :class: {css_class}")
    lines.append("")
    for row in rows:
        lines.append(f"   * - {row[0]}".rstrip())
        lines += [f"     - {cell}".rstrip() for cell in row[1:]]
    return [*lines, ""]


def _table(rows):
    if len(rows) < 3:
        return []  # a header without rows
    cells = [
        [_inline(c.strip()) for c in row[1:-1].split("|")]
        for i, row in enumerate(rows)
        if i != 1
    ]
    return _list_table(cells, css_class="wide-table")


def markdown_rst(markdown):
    """Paragraphs, bullet lists and pipe tables of markdown as rST lines.

    The subset ``benchmarks/README.md`` and the result files use: text and
    ``-`` bullets (nested by two spaces), inline code, bold and links,
    pipe tables. Headings, code fences and images are left out (the page
    has its own).
    """
    lines = []
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    for block in re.split(r"\n\s*\n", text.strip()):
        rows = [r.rstrip() for r in block.splitlines() if r.strip()]
        if not rows or rows[0].startswith(("#", "![")):
            continue
        if _is_table([r.strip() for r in rows]):
            lines += _table([r.strip() for r in rows])
            continue
        item = None
        for row in rows:
            bullet = re.match(r"^(\s*)- (.*)$", row)
            if bullet:
                if item is not None:
                    lines += [*item, ""]
                depth = len(bullet.group(1)) // 2
                item = ["   " * depth + "* " + _inline(bullet.group(2))]
            elif item is not None:
                depth = (len(item[0]) - len(item[0].lstrip())) // 3
                item.append("   " * depth + "  " + _inline(row.strip()))
            else:
                lines.append(_inline(row.strip()))
        if item is not None:
            lines += item
        lines.append("")
    return lines


def _section(readme, title):
    """The body of the ``###`` section of ``readme`` that starts with title."""
    match = re.search(rf"^### {re.escape(title)}.*?$(.*?)(?=^##)", readme, re.M | re.S)
    return match.group(1) if match else ""


def _headline_figure(full, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, label in HEADLINE.items():
        record = full["methods"].get(name)
        if record is None:
            continue
        points = [p for p in record["points"] if p.get("test_acc") is not None]
        times = [p["time"] / 60 for p in points]
        accs = [p["test_acc"] for p in points]
        style = "o" if len(points) == 1 else "o-"
        ax.plot(times, accs, style, label=label, markersize=5)
    ax.set_xlabel("fit wall time (minutes, 2 CPU cores)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.8, None)
    ax.grid(alpha=0.3)
    # Below the axes, so that no curve is hidden.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary(full):
    methods = full["methods"]
    sgdm = methods["sgdm"]
    paired = full.get("paired_vs_sgdm", {})
    rows = [
        [
            "method",
            "final test accuracy",
            "fit time (s)",
            "time / plain fine-tuning",
            "McNemar p vs plain fine-tuning",
        ]
    ]
    for name, label in HEADLINE.items():
        record = methods.get(name)
        if record is None:
            continue
        p = (paired.get(name) or {}).get("p")
        if name == "sgdm":
            p_text = "(the reference)"
        else:
            p_text = "not measured" if p is None else f"{p:.2g}"
        rows.append(
            [
                label,
                f"{record['points'][-1]['test_acc']:.3f}",
                f"{record['fit_wall']:.0f}",
                f"{record['fit_wall'] / sgdm['fit_wall']:.2f}",
                p_text,
            ]
        )
    return _list_table(rows, caption="The headline methods in the full run")


def _targets(full):
    rows = [["target", "goal", "measured", "met"]]
    for name, target in full["targets"].items():
        if not isinstance(target, dict):  # "judged": the method's name
            continue
        value = target.get("value")
        rows.append(
            [
                name.replace("_", " "),
                target.get("target", ""),
                "not measured" if value is None else f"{value:.2f}",
                "yes" if target.get("met") else "**no**",
            ]
        )
    return _list_table(rows, caption="The targets, measured in the full run")


def write_benchmark_page(benchmarks, generated):
    """Write ``generated/benchmark_results.inc`` and the headline figure."""
    results = benchmarks / "results"
    readme = (benchmarks / "README.md").read_text()
    lines = ["Accuracy against time", "---------------------", ""]
    full_json = results / "full.json"
    if full_json.is_file():
        full = json.loads(full_json.read_text())
        _headline_figure(full, generated / "benchmark_headline.png")
        lines += [
            ".. figure:: generated/benchmark_headline.png",
            "   :alt: Test accuracy against fit time of the headline methods",
            "   :width: 100%",
            "",
            "   Test accuracy against fit wall time, ImageNet EfficientNet-Lite0 "
            "fine-tuned on 10,000 Fashion-MNIST images at 64 px and scored on "
            "2,000 test images after every epoch (the full run). Each method ran "
            "in its own process on the same 2 CPU cores; the linear probe is one "
            "point, its feature pass and fit.",
            "",
            *_summary(full),
            *_targets(full),
        ]
    else:
        lines += [
            "No full run is saved: run ``python -m benchmarks.transfer --full``.",
            "",
        ]
    sections = [
        ("The methods compared", "Methods"),
        ("What the targets mean", "Targets"),
        ("Findings: where the targets stand, and why", "Findings"),
    ]
    for title, heading in sections:
        body = _section(readme, heading)
        if body:
            lines += [title, "-" * len(title), "", *markdown_rst(body)]
    lines += ["Raw results", "-----------", ""]
    lines += [
        "Every table the runs wrote, from ``benchmarks/results/<name>.md``; "
        "each file's first paragraph says on which machine and code it ran.",
        "",
    ]
    for name, (title, setting) in RUNS.items():
        md = results / f"{name}.md"
        lines += [title, "~" * len(title), ""]
        if not md.is_file():
            lines += [f"Not saved ({setting}).", ""]
            continue
        lines += [
            f"{setting[0].upper()}{setting[1:]}.",
            "",
            *markdown_rst(md.read_text()),
        ]
    text = "\n".join(lines) + "\n"
    path = generated / "benchmark_results.inc"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)

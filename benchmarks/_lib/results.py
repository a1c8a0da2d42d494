"""Where a run's JSON and markdown go: ``benchmarks/results/`` or elsewhere.

Only a run written to ``benchmarks/results/`` updates the tables between the
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers of
``benchmarks/README.md``; a ``--smoke`` run writes to a new temporary folder
unless ``--results-dir`` names one.
"""

import argparse
import json
import tempfile
from pathlib import Path

from . import tasks as tasks_lib

#: The saved runs, and the README whose tables show them.
RESULTS = Path(__file__).resolve().parents[1] / "results"
README = RESULTS.parent / "README.md"


def add_arguments(parser, smoke_help):
    """``--smoke`` (what it runs: ``smoke_help``) and ``--results-dir``."""
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="folder for the JSON and markdown (default: benchmarks/results; "
        "with --smoke a new temporary folder)",
    )


def comma_list(text):
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (an argparse ``type``)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parts_parser(description, parts, smoke_help):
    """The command line of an entry measured in parts: ``--report``,
    ``--parts`` (a list; the others are kept from the saved run), ``--smoke``
    and ``--results-dir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--report", action="store_true", help="re-print a saved run")
    parser.add_argument(
        "--parts",
        type=comma_list,
        default=",".join(parts),
        help=f"comma-separated subset of {','.join(parts)}; the others are kept "
        "from the saved run",
    )
    add_arguments(parser, smoke_help)
    return parser


def tasks_parser(description, tasks, smoke_help):
    """The command line of an entry measured task by task: ``--report``,
    ``--tasks`` (``all`` or a list of ``tasks``; the others are kept from the
    saved run), ``--smoke`` and ``--results-dir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--report", action="store_true", help="re-print a saved run")
    parser.add_argument(
        "--tasks",
        type=comma_list,
        help=f"'all' or a comma-separated subset of {','.join(tasks)} (default: "
        "the entry's); the others are kept from the saved run",
    )
    add_arguments(parser, smoke_help)
    return parser


def chosen_tasks(args, parser, tasks, default=None):
    """The tasks ``--tasks`` names among ``tasks`` (``default`` without it,
    all of ``tasks`` for ``all``). Without elpv-dataset a ``--smoke`` run
    skips the ELPV tasks and a full run stops with the install command."""
    names = args.tasks or list(tasks if default is None else default)
    if names == ["all"]:
        names = list(tasks)
    unknown = sorted(set(names) - set(tasks))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {list(tasks)}")
    if any(n.startswith("elpv") for n in names) and not tasks_lib.elpv_available():
        if not args.smoke:
            tasks_lib.require_elpv()
        print("elpv-dataset is not installed: the ELPV tasks are skipped")
        names = [n for n in names if not n.startswith("elpv")]
    return names


class Results:
    """The folder a run reads its saved records from and writes to."""

    def __init__(self, folder=None, *, smoke=False):
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="skfr_bench_")) if smoke else RESULTS
        self.folder = Path(folder)
        self.saved = self.folder.resolve() == RESULTS.resolve()

    @classmethod
    def from_args(cls, args):
        return cls(args.results_dir, smoke=args.smoke)

    def path(self, name):
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / name

    def read_json(self, name, default=None):
        """The saved record ``name``, or ``default`` when there is none."""
        path = self.folder / name
        if default is not None and not path.is_file():
            return default
        return json.loads(path.read_text())

    def write_json(self, name, record, indent=1):
        self.path(name).write_text(json.dumps(record, indent=indent))

    def write_text(self, name, text):
        self.path(name).write_text(text + "\n")

    def publish(self, name, text):
        """Write ``text`` as ``name.md``, put it in the README between the
        ``name`` markers (saved runs only) and print it with the folder."""
        self.write_text(f"{name}.md", text)
        self.update_readme(name, text)
        print(text)
        print(f"written to {self.folder}")

    def update_readme(self, name, text):
        """Put ``text`` between the README's ``name`` markers (saved runs only).

        Returns whether the README was updated.
        """
        return self.saved and update_readme(README, name, text)


def update_readme(readme, name, text):
    """Replace the block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

    Returns whether the README had the markers (it is left alone otherwise).
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not readme.exists():
        return False
    content = readme.read_text()
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    return True

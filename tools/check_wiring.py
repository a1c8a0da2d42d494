"""Check that the test suite notices a hyperparameter that is read wrongly.

For every read of ``ridge_lambda``, ``blend``, ``freeze_prob``, ``lr``,
``momentum`` and ``weight_decay`` off an estimator, its run configuration
(``config``, ``config.head``, ``config.sgd``), a settings object (``head``,
``sgd``) or a callback in the package, this replaces that one read by the
parameter's default value (the value a test that sets nothing would not
notice), runs the test suite with
``-x`` and reports whether it failed. A mutant the suite survives is a
parameter the tests do not see. The package is restored after each run.

Run it from the project's root (it takes a few minutes per surviving mutant,
seconds per killed one)::

    python tools/check_wiring.py            # every read
    python tools/check_wiring.py --list     # only list the reads
    python tools/check_wiring.py -k _head   # reads in files matching _head

It is the targeted complement of mutmut (configured in setup.cfg), which
mutates operators and literals rather than parameter reads.
"""

import argparse
import inspect
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skfastretrain"
NAMES = ("ridge_lambda", "blend", "freeze_prob", "lr", "momentum", "weight_decay")
RECEIVERS = ("config.head", "config.sgd", "config", "est", "head", "sgd", "self")
READ = re.compile(
    rf"\b({'|'.join(map(re.escape, RECEIVERS))})\.({'|'.join(NAMES)})\b(?!\s*=[^=])"
)
# The tests that see wiring fastest run first, and the whole suite only when
# they pass (pytest would merge the files into the folder's own order).
TESTS = [
    ["tests/test_net.py", "tests/test_classifier_params.py"],
    [
        "tests/test_validation.py",
        "tests/callbacks/test_ridge_head.py",
        "tests/callbacks/test_freezing.py",
    ],
    ["tests/callbacks/test_lr_probe.py", "tests/callbacks/test_regularizers.py"],
    [],
]


def owners():
    """The class whose parameters each receiver (or ``self`` in a module) reads."""
    sys.path.insert(0, str(ROOT))
    import skfastretrain as sk

    return {
        "est": sk.FastRetrainClassifier,
        # The run configuration holds the estimator's parameters resolved.
        "config": sk.FastRetrainClassifier,
        "head": sk.RidgeHead,
        "config.head": sk.RidgeHead,
        "sgd": sk.SGDEpoch,
        "config.sgd": sk.SGDEpoch,
        "_classifier.py": sk.FastRetrainClassifier,
        "_config.py": sk.FastRetrainClassifier,
        "_freezing.py": sk.LayerFreezer,
        "_ridge_head.py": sk.RidgeHeadSolver,
    }


def reads():
    """(path, line number, regex match) of every read, in file order."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in READ.finditer(line):
                found.append((path, number, match))
    return found


def default(path, match, classes):
    receiver, name = match.groups()
    cls = classes.get(path.name) if receiver == "self" else classes[receiver]
    if cls is None:
        raise SystemExit(f"{path}: no known owner of self.{name}")
    return inspect.signature(cls).parameters[name].default


def killed(path, number, match, value):
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    line = lines[number - 1]
    lines[number - 1] = line[: match.start()] + repr(value) + line[match.end() :]
    path.write_text("".join(lines))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly"]
    try:
        for tests in TESTS:
            run = subprocess.run(command + tests, cwd=ROOT, capture_output=True)
            if run.returncode != 0:
                return True
    finally:
        path.write_text(original)
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="only list the reads")
    parser.add_argument("-k", default="", help="only files whose path has this")
    args = parser.parse_args()
    classes = owners()
    survivors = []
    for path, number, match in reads():
        if args.k not in str(path):
            continue
        value = default(path, match, classes)
        where = f"{path.relative_to(ROOT)}:{number} {match.group(0)} -> {value!r}"
        if args.list:
            print(where)
            continue
        alive = not killed(path, number, match, value)
        print(f"{'SURVIVED' if alive else 'killed  '} {where}", flush=True)
        survivors += [where] if alive else []
    if survivors:
        print(f"\n{len(survivors)} surviving mutants:", *survivors, sep="\n  ")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())

"""A benchmark function run in a fresh Python process.

Timings and peak memory (``ru_maxrss``) are a process's own, so every
measurement that needs them runs as::

    python -m benchmarks._lib.worker MODULE:FUNCTION --kwargs JSON --result FILE

which imports ``FUNCTION`` from ``MODULE``, calls it with the keyword
arguments and writes its return value (JSON) to ``FILE``. The parent side is
:func:`run_in_process` (wait for the result) and :func:`start_in_process` (a
competing load, stopped by the caller).
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: The folder that holds the ``benchmarks`` package: workers start there.
ROOT = Path(__file__).resolve().parents[2]


def omp_env(policy="PASSIVE"):
    """This environment with ``OMP_WAIT_POLICY=policy``.

    ``None`` drops the variable: libgomp's default busy-waiting. Passive
    waiting is the benchmarks' default: busy-waiting OpenMP threads slow
    torch several times when another process shares the cores.
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    return env


def _name(func):
    """``MODULE:QUALNAME`` of ``func``, importable from a fresh process."""
    module = func.__module__
    if module == "__main__":  # an entry run with ``python -m``
        module = sys.modules["__main__"].__spec__.name
    return f"{module}:{func.__qualname__}"


def _command(func, kwargs, result):
    return [
        sys.executable,
        "-m",
        "benchmarks._lib.worker",
        _name(func),
        "--kwargs",
        json.dumps(kwargs or {}),
        "--result",
        str(result),
    ]


def run_in_process(func, kwargs=None, *, env=None, cwd=ROOT, timeout=None, check=True):
    """Call ``func(**kwargs)`` in a fresh interpreter; return what it returned.

    ``env`` is the worker's whole environment (default: :func:`omp_env`) and
    ``cwd`` the folder its ``benchmarks`` and ``skfastretrain`` are imported
    from. With ``check=True`` the worker's output is shown and a failure
    raises; with ``check=False`` its output is captured and a failure returns
    ``{"error": <the last line of its stderr>}``.
    """
    with tempfile.TemporaryDirectory(prefix="skfr_bench_") as tmp:
        result = Path(tmp) / "result.json"
        out = subprocess.run(
            _command(func, kwargs, result),
            env=omp_env() if env is None else env,
            cwd=cwd,
            timeout=timeout,
            check=check,
            capture_output=not check,
            text=True,
        )
        if out.returncode:
            lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
            return {"error": lines[-1][:300]}
        return json.loads(result.read_text())


def start_in_process(func, kwargs=None, *, env=None, cwd=ROOT):
    """Start ``func(**kwargs)`` in a fresh interpreter; return its ``Popen``.

    For a competing load that runs until the caller stops it (its return
    value, if any, is dropped).
    """
    return subprocess.Popen(
        _command(func, kwargs, os.devnull),
        env=omp_env() if env is None else env,
        cwd=cwd,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("function", help="MODULE:FUNCTION to call")
    parser.add_argument("--kwargs", default="{}", help="its keyword arguments, JSON")
    parser.add_argument("--result", required=True, help="file for its return value")
    args = parser.parse_args(argv)
    module, _, name = args.function.partition(":")
    func = importlib.import_module(module)
    for part in name.split("."):
        func = getattr(func, part)
    value = func(**json.loads(args.kwargs))
    Path(args.result).write_text(json.dumps(value))


if __name__ == "__main__":
    main()

"""Every method of a run in its own process, on one copy of the code.

A run of the transfer benchmark or of the pilot takes tens of minutes; the
package may be edited meanwhile. :func:`package_snapshot` copies
``skfastretrain`` and ``benchmarks`` once, and :func:`spawn_method` runs each
method from that copy in a fresh interpreter, so that every record of the run
comes from the same code and its peak memory is the method's own.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .gram import run_gemm
from .runners import run_method
from .worker import ROOT, omp_env, run_in_process


def _git(*args):
    out = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True
    )
    return out.stdout.strip()


@contextmanager
def package_snapshot():
    """Copy skfastretrain and the benchmarks once, for every worker of a run.

    Yields the folder the workers run from (the copies are imported from it,
    before any installed skfastretrain) and a record of what was copied (git
    HEAD, whether the package had local edits, and a hash of its sources).
    """
    root = Path(tempfile.mkdtemp(prefix="skfr_bench_pkg_"))
    try:
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "skfastretrain", root / "skfastretrain", ignore=skip)
        skip_results = shutil.ignore_patterns("__pycache__", "results", "micro")
        shutil.copytree(ROOT / "benchmarks", root / "benchmarks", ignore=skip_results)
        digest = hashlib.sha1()
        for f in sorted((root / "skfastretrain").rglob("*")):
            if f.is_file():
                digest.update(str(f.relative_to(root)).encode() + f.read_bytes())
        info = {
            "git_head": _git("rev-parse", "--short", "HEAD"),
            "package_dirty": bool(_git("status", "--porcelain", "--", "skfastretrain")),
            "package_sha1": digest.hexdigest()[:12],
        }
        yield root, info
    finally:
        shutil.rmtree(root, ignore_errors=True)


def spawn(func, kwargs, package=None):
    """Call ``func(**kwargs)`` in a fresh interpreter; return its record.

    ``package`` is a folder from :func:`package_snapshot` to run from (default:
    the repository). The worker waits passively for OpenMP
    (``OMP_WAIT_POLICY=PASSIVE``) unless the variable is set: libgomp's
    default busy-waiting makes MKL and oneDNN crawl (up to 50x for eigh) when
    another process shares the cores.
    """
    policy = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    cwd = ROOT if package is None else package
    start = time.perf_counter()
    record = run_in_process(func, kwargs, env=omp_env(policy), cwd=cwd)
    record["process_wall"] = time.perf_counter() - start
    record["omp_wait_policy"] = policy
    return record


def spawn_method(method, params, setting, *, holdout=False, package=None):
    """One method of the benchmark (:func:`~.runners.run_method`), as :func:`spawn`."""
    kwargs = {"method": method, "params": params, "setting": setting}
    return spawn(run_method, {**kwargs, "holdout": holdout}, package)


def spawn_gemm(package=None, **kwargs):
    """P4's measurement (:func:`~.gram.run_gemm`), as :func:`spawn`."""
    return spawn(run_gemm, kwargs, package)

"""The GPU benchmark (``python -m benchmarks.gpu``) without a GPU: CI has none,
so it must skip cleanly."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "gpu.json"


def _state(path):
    """Whether ``path`` exists, and its modification time if it does."""
    return (True, path.stat().st_mtime_ns) if path.exists() else (False, None)


def test_gpu_benchmark_skips_without_cuda():
    before = _state(RESULT)
    # No visible device: torch.cuda.is_available() is False even on a GPU host.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    assert "needs a CUDA GPU" in lines[0]
    assert "skipped" in lines[0]
    assert _state(RESULT) == before

"""Micro-benchmarks (pytest-benchmark): the Gram accumulation, the ridge
solve and one training step. Run from the repository root with
``python -m pytest benchmarks/micro --benchmark-only``; the normal test run
does not collect them (setup.cfg's ``testpaths``).
(OpenMP threads wait passively unless ``OMP_WAIT_POLICY`` is set, as
``benchmarks/__init__.py`` sets it.)
"""

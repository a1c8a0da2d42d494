"""The benchmarks of skfastretrain, run from the repository root.

Each entry answers one question and is run as a module::

    python -m benchmarks.defaults     # the pilot behind the estimator's defaults
    python -m benchmarks.transfer     # the targets, against the fine-tuning baselines
    python -m benchmarks.pilot        # the baselines' learning-rate pilot
    python -m benchmarks.levers       # the speed levers, one by one
    python -m benchmarks.diagnostics  # side measurements (contention, memory, pickle)
    python -m benchmarks.gpu          # the estimator against a plain loop on CUDA
    python -m benchmarks.stages       # ridge heads on every stage, no training

Every entry takes ``--smoke`` (a tiny run that checks the code and writes to
a temporary folder, never to ``benchmarks/results/``). The helpers the
entries share are in :mod:`benchmarks._lib`; the micro-benchmarks in
``benchmarks/micro`` run with ``python -m pytest benchmarks/micro
--benchmark-only``. See ``benchmarks/README.md``.
"""

"""The speed levers of the benchmark issue, each measured on its own.

1. The Lite0 training step (batch 32, 64 px, SGD with momentum, forward,
   backward and step) and the eval-mode forward of the head solve's feature
   pass, in float32, with ``channels_last``, under bf16 autocast, and through
   ``torch.compile`` (whose first step, the compilation, is timed apart).
2. The peak memory of training steps at 64 and 224 px, all layers trained
   or the frozen prefix of ``freeze_prob=0.5`` (what P5 hinges on).
3. Gram statistics accumulated in float32 instead of float64, on real Lite0
   features of Fashion-MNIST (d=1280): the relative error of the Gram matrix,
   of the ridge solution and the share of test predictions that change.
4. The prefix cache (``sgd=SGDEpoch(cache_prefix=True)``): with
   ``freeze_mode="prefix"`` at 0.5 the frozen prefix of Lite0 ends before
   block 8, so its output for each training image never changes during the
   fit. The eval forward and
   the training step are timed from a stored prefix output against the full
   network.
5. The default path, at 64 and 224 px: the head
   solve's pass per row at eval batches of 32, 128 and 256; the frozen
   prefix run as inference (``inference_mode``, BatchNorm folded into its
   convolutions, channels-last, bf16); skorch's per-batch overhead against a
   plain torch loop, beside the trained suffix's step.
6. The prefix cache stored in bfloat16 or float16: bytes per image and the
   effect on a ridge head over the features computed from it, on rows held
   out of the train split.

Each configuration runs in a fresh process with ``OMP_WAIT_POLICY=PASSIVE``
(the measurements are in ``benchmarks/_lib/levers_measures.py``). Usage, from
the repository root::

    python -m benchmarks.levers                  # ~6 min; results/levers.json, .md
    python -m benchmarks.levers --parts memory   # re-measure one part
    python -m benchmarks.levers --report         # re-print a saved run
    python -m benchmarks.levers --smoke          # every part, tiny: checks the code

``--smoke`` measures every part with few repeats, at 64 px only, without
``torch.compile``, on 200 / 100 images, and writes to a temporary folder (or
``--results-dir``).
"""

import os

from ._lib import levers_measures as lm
from ._lib import results as results_lib
from ._lib.levers_tables import render
from ._lib.measure import machine_info
from ._lib.worker import omp_env, run_in_process

PARTS = ("steps", "memory", "gram", "prefix_cache", "path", "cache_dtype")

#: (name, channels_last, bf16 autocast, torch.compile)
CONFIGS = [
    ("float32", False, False, False),
    ("channels_last", True, False, False),
    ("bf16 autocast", False, True, False),
    ("bf16 + channels_last", True, True, False),
    ("torch.compile", False, False, True),
]
#: A run's image sizes, and the measurements' keyword arguments.
FULL = {"sizes": (64, 224), "kwargs": {}}
#: ``--smoke``: 64 px, no torch.compile (minutes to compile), few repeats,
#: few images (the release if it is installed, else the bundled subset).
SMOKE = {
    "sizes": (64,),
    "kwargs": {
        "train_step": {"n": 2},
        "step_memory": {"steps": 1},
        "gram_precision": {"n_train": 200, "n_test": 100, "source": "auto"},
        "prefix_cache": {"n": 2},
        "default_path": {"n": 1, "skorch_rows": 320},
        "cache_dtype": {"n_fit": 200, "n_hold": 100, "source": "auto"},
    },
}


def _measure(func, scale, **kwargs):
    kwargs |= scale["kwargs"].get(func.__name__, {})
    return run_in_process(
        func, kwargs, env=omp_env("PASSIVE"), timeout=900, check=False
    )


def measure(parts, result=None, scale=FULL):
    """Measure ``parts`` (of :data:`PARTS`) into ``result``."""
    result = result or {"machine": machine_info()}
    if "steps" in parts:
        result["steps"] = []
        for name, channels_last, bf16, compile_ in CONFIGS:
            if compile_ and scale is SMOKE:
                continue
            cfg = {"channels_last": channels_last, "bf16": bf16, "compile": compile_}
            record = _measure(lm.train_step, scale, **cfg)
            result["steps"].append({"config": name, **cfg, **record})
            print(result["steps"][-1], flush=True)
    if "memory" in parts:
        result["memory"] = []
        for size in scale["sizes"]:
            for prefix in (False, True):
                cfg = {"size": size, "prefix": prefix}
                result["memory"].append(
                    {**cfg, **_measure(lm.step_memory, scale, **cfg)}
                )
                print(result["memory"][-1], flush=True)
    if "gram" in parts:
        result["gram"] = _measure(lm.gram_precision, scale)
        print(result["gram"], flush=True)
    if "prefix_cache" in parts:
        result["prefix_cache"] = _measure(lm.prefix_cache, scale)
        print(result["prefix_cache"], flush=True)
    if "path" in parts:
        result["path"] = [
            _measure(lm.default_path, scale, size=size) for size in scale["sizes"]
        ]
        print(result["path"], flush=True)
    if "cache_dtype" in parts:
        result["cache_dtype"] = _measure(lm.cache_dtype, scale, size=64)
        print(result["cache_dtype"], flush=True)
    result["machine"][f"loadavg_end_{'_'.join(parts)}"] = list(os.getloadavg())
    return result


def main(argv=None):
    parser = results_lib.parts_parser(
        __doc__.splitlines()[0],
        PARTS,
        "every part at 64 px, few repeats and images: checks the code",
    )
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json("levers.json")
    else:
        parts = args.parts
        saved = results.read_json("levers.json", default={}) or None
        scale = SMOKE if args.smoke else FULL
        result = measure(parts, None if set(parts) >= set(PARTS) else saved, scale)
        results.write_json("levers.json", result)
    text = render(result)
    results.publish("levers", text)


if __name__ == "__main__":
    main()

"""Resident memory over many trials in one process: RSS after trial 5 versus after trial 50.

One real study through ``sweep.runner.run_sweep`` (SQLite Optuna storage, MLflow on an SQLite
store with artifacts in a temporary folder, default logging: curves, results, two plots per
trial, the model of every new best trial; TPE sampler, median pruner) with small models (units
8-16, 1-2 layers) and few epochs. The study's ``on_trial_end`` callback samples the process's
resident set size (VmRSS from /proc/self/status) after every trial, with cheap leak indicators
beside it: live Python objects, threads, open file descriptors, the number of
``CustomGradient-*`` entries in TensorFlow's global gradient registry (each pins one traced
training graph), and the sweep's own time per trial (which would grow if per-trial bookkeeping
grew with the number of trials). At the first and last mark it also counts live objects by
type, so the types that grew are named in the result.

Target: RSS growth from trial 5 to trial 50 under 10%.

    .venv/bin/python benchmarks/memory.py                         # 50 trials, 2 epochs (a few minutes)
    .venv/bin/python benchmarks/memory.py --trials 8 --epochs 1   # smoke test

Writes benchmarks/results/memory.json; every other file lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import gc
import threading
import time
from typing import Any

import _common

TARGET = 0.10
MARKS = (5, 10, 20, 30, 40, 50)
SPACE = {"units": {"low": 8, "high": 16}, "layers": {"low": 1, "high": 2}}


def object_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def tf_custom_gradients() -> int | None:
    """Entries in TensorFlow's global gradient registry made by ``tf.custom_gradient`` in traced
    functions; each pins the graph it was traced in (tensorflow/tensorflow#97697). Private API,
    read only; None if it moved."""
    try:
        from tensorflow.python.framework import ops

        return sum(1 for name in ops.gradient_registry._registry if name.startswith("CustomGradient-"))
    except Exception:  # noqa: BLE001 - a diagnostic must not stop the benchmark
        return None


def measure(trials: int, epochs: int) -> dict[str, Any]:
    from objectives.search_space import SearchSpace
    from sweep.prepared import prepare
    from sweep.records import BestTrial, TrialRecord
    from sweep.runner import run_sweep

    marks = sorted({m for m in MARKS if m <= trials} | {trials} | ({1} if trials < MARKS[0] else set()))
    samples: list[dict[str, Any]] = []
    counts: dict[int, collections.Counter[str]] = {}
    with _common.scratch("bench-memory-") as tmp:
        data = _common.seed_signal(tmp)
        cfg = _common.sweep_config(tmp, space=SearchSpace.from_mapping(SPACE), study="memory", n_trials=trials,
                                   epochs=epochs, patience=epochs)
        prep = prepare(cfg, data)
        rss_start = _common.rss_mib()
        last = [time.perf_counter()]

        def on_trial_end(row: TrialRecord, best: BestTrial | None) -> None:
            now = time.perf_counter()
            n = len(samples) + 1  # trials finished so far, failed ones included
            sample = {
                "trial": n, "number": row.number, "state": row.state, "params": row.params,
                "rss_mib": _common.rss_mib(), "python_objects": len(gc.get_objects()),
                "threads": threading.active_count(), "open_fds": _common.open_fds(),
                "tf_custom_gradients": tf_custom_gradients(),
                "seconds": now - last[0],
            }
            samples.append(sample)
            if n in (marks[0], marks[-1]):
                counts[n] = object_counts()
            print(f"  trial {n:3d}: RSS {sample['rss_mib']:7.1f} MiB  objects {sample['python_objects']:8d}  "
                  f"threads {sample['threads']:3d}  fds {sample['open_fds']:4d}  "
                  f"TF custom gradients {sample['tf_custom_gradients']}  {sample['seconds']:5.2f} s", flush=True)
            last[0] = time.perf_counter()

        t0 = time.perf_counter()
        run_sweep(prep, on_trial_end=on_trial_end)
        wall = time.perf_counter() - t0
        rss_end = _common.rss_mib()

    by_trial = {s["trial"]: s for s in samples}
    first, final = marks[0], marks[-1]
    grown = counts[final] - counts[first] if first in counts and final in counts else collections.Counter()
    return {
        "samples": samples, "by_trial": by_trial, "marks": [m for m in marks if m in by_trial],
        "rss_start": rss_start, "rss_end": rss_end, "wall": wall,
        "object_types_grown": dict(grown.most_common(15)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="trials in the study (default 50)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    args = parser.parse_args()
    if args.trials < 2 or args.epochs < 1:
        parser.error("--trials must be >= 2 and --epochs >= 1")

    load_before = _common.load_average()
    m = measure(args.trials, args.epochs)
    by_trial, marks = m["by_trial"], m["marks"]
    first, final = marks[0], marks[-1]
    base = by_trial[first]["rss_mib"]
    growth = by_trial[final]["rss_mib"] / base - 1

    def secs(n: int) -> float:
        # The sweep's time per trial around trial n (median of 5), to see bookkeeping that grows.
        window = sorted(s["seconds"] for s in m["samples"][max(0, n - 5):n])
        return window[len(window) // 2]

    _common.print_table(
        f"RSS after trial n ({args.trials} trials, {args.epochs} epochs, units 8-16, 1-2 layers)",
        ["after trial", "RSS MiB", f"vs trial {first}", "Python objects", "TF custom gradients", "threads", "open fds",
         "s/trial (median of 5)"],
        [[str(n), f"{by_trial[n]['rss_mib']:.1f}", f"{by_trial[n]['rss_mib'] / base - 1:+.1%}",
          str(by_trial[n]["python_objects"]), str(by_trial[n]["tf_custom_gradients"]), str(by_trial[n]["threads"]),
          str(by_trial[n]["open_fds"]),
          f"{secs(n):.2f}"] for n in marks],
    )
    verdict = "met" if growth < TARGET else "NOT met"
    print(f"RSS growth trial {first} -> {final}: {growth:+.1%}  (target < +{TARGET:.0%}: {verdict}); "
          f"RSS before the study {m['rss_start']:.1f} MiB, after it {m['rss_end']:.1f} MiB; "
          f"{m['wall']:.0f} s for {len(m['samples'])} trials")
    if m["object_types_grown"]:
        print(f"object types that grew most from trial {first} to {final}: "
              + ", ".join(f"{k} +{v}" for k, v in list(m["object_types_grown"].items())[:8]))
    print(f"load average before {load_before}, after {_common.load_average()} on {_common.machine()['nproc']} CPUs")

    path = _common.write_result("memory", {
        "command": f".venv/bin/python benchmarks/memory.py --trials {args.trials} --epochs {args.epochs}",
        "parameters": {"trials": args.trials, "epochs": args.epochs, "patience": args.epochs, "search_space": SPACE,
                       "log_models": "best", "pruner": "median", "storage": "sqlite",
                       "tracking": "sqlite + local artifacts", "data": "seed-signal (make_dataset seed 0)"},
        "load_average_before": load_before,
        "rss_mib_before_study": m["rss_start"],
        "rss_mib_after_study": m["rss_end"],
        "rss_mib_at_marks": {str(n): by_trial[n]["rss_mib"] for n in marks},
        "from_trial": first,
        "to_trial": final,
        "growth": growth,
        "target": TARGET,
        "met": growth < TARGET,
        "wall_seconds": m["wall"],
        "object_types_grown": m["object_types_grown"],
        "samples": m["samples"],
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

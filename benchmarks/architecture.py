"""What each architecture choice of the search space does on its own, on the real sets.

One fixed configuration (the popular recipe's: 2 layers, 64 units, dropout 0.2, Adam 1e-3,
balanced class weights, batch 32) trained exactly as a trial trains (``Objective.train_once``:
validation split, patience, best epoch kept, warm-up, collapse stopping, 20-epoch cap), with one
architecture choice changed at a time, 3 seeds each. Reports validation and test balanced
accuracy (mean over seeds) and seconds per epoch, so the space's choices and their defaults
(which are worth searching, what they cost) rest on numbers.

    python benchmarks/architecture.py                 # 6 sets x 6-7 variants x 3 seeds: ~25 min here
    python benchmarks/architecture.py --sets ECG200 --seeds 1

Writes ``benchmarks/results/architecture.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import time
from typing import Any

import _common  # noqa: F401  (quiet TensorFlow, repository on sys.path)
from _common import REPO, print_table, write_result

DATASETS = REPO.parent / "shared" / "datasets"
EPOCHS = 20
VARIANTS: dict[str, dict[str, Any]] = {
    "stacked LSTM (base)": {},
    "bidirectional": {"bidirectional": True},
    "conv front-end": {"conv_filters": 64},
    "mean pooling": {"pooling": "mean"},
    "attention pooling": {"pooling": "attention"},
    "masking": {"masking": True},  # only on zero-padded sets
    "conv + bi + attention": {"conv_filters": 64, "bidirectional": True, "pooling": "attention"},
}


def _init() -> None:
    from objectives.model import configure_threads

    configure_threads(1)


def run_one(name: str, variant: str, seeds: int) -> dict[str, Any]:
    from objectives.objective import Objective
    from objectives.search_space import LstmParams, SearchSpace
    from sweep.data import load_dataset, split_stratified

    data = load_dataset(DATASETS / f"{name}.npz")
    split = split_stratified(data, val_fraction=0.2, seed=0)
    objective = Objective(split, n_classes=data.n_classes, space=SearchSpace(), epochs=EPOCHS, patience=5, seed=0)
    params = dataclasses.replace(LstmParams(units=64, layers=2, dropout=0.2, learning_rate=1e-3,
                                            class_weight="balanced", batch_size=32), **VARIANTS[variant])
    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        out = objective.train_once(params, seed)
        out["seconds"] = time.perf_counter() - t0
        runs.append(out)
    mean = lambda key: sum(r[key] for r in runs) / len(runs)  # noqa: E731
    return {"set": name, "variant": variant, "params": params.to_dict(), "runs": runs,
            "val_balanced_accuracy": mean("val_balanced_accuracy"), "test_balanced_accuracy": mean("test_balanced_accuracy"),
            "seconds_per_epoch": sum(r["seconds"] for r in runs) / sum(r["epochs"] for r in runs),
            "collapsed": sum(bool(r["collapsed"]) for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="*")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    from sweep.data import is_padded, load_dataset

    sets = args.sets or sorted(p.stem for p in DATASETS.glob("*.npz"))
    jobs = []
    for name in sets:
        padded = is_padded(load_dataset(DATASETS / f"{name}.npz").X_train)
        jobs += [(name, v) for v in VARIANTS if v != "masking" or padded]
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.parallel, initializer=_init) as pool:
        rows = list(pool.map(run_one, *zip(*jobs), [args.seeds] * len(jobs)))
    table = []
    for name in sets:
        mine = [r for r in rows if r["set"] == name]
        base = next(r for r in mine if r["variant"] == "stacked LSTM (base)")
        for r in mine:
            table.append([name, r["variant"], f"{r['val_balanced_accuracy']:.3f}", f"{r['test_balanced_accuracy']:.3f}",
                          f"{r['test_balanced_accuracy'] - base['test_balanced_accuracy']:+.3f}",
                          f"{r['seconds_per_epoch']:.2f}", f"{r['seconds_per_epoch'] / base['seconds_per_epoch']:.2f}x",
                          str(r["collapsed"])])
    print_table(f"One choice at a time ({args.seeds} seeds, {EPOCHS}-epoch cap, trained as a trial)",
                ["set", "variant", "val BA", "test BA", "vs base", "s/epoch", "cost", "collapsed"], table)
    path = write_result("architecture", {
        "command": "python benchmarks/architecture.py " + " ".join(__import__("sys").argv[1:]),
        "settings": {"seeds": args.seeds, "epochs": EPOCHS, "patience": 5, "threads_per_process": 1,
                     "parallel": args.parallel},
        "total_wall_seconds": round(time.perf_counter() - t0, 1), "rows": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Collapse early-stopping: compute saved, and best scores kept, at the same trial budget.

For each data set, the same study (same seed, same trial budget, same defaults otherwise: median
pruner, 15-epoch cap, patience 5) runs through the real CLI (``sweep run``, a fresh SQLite study
and MLflow store each) in three arms, one after the other in this one run:

* ``off``: ``--collapse-patience 0``, collapsed trials train until the epoch cap, patience or
  the median pruner stops them (what Optuna + Keras do without this tool's detector);
* ``default``: the defaults (warm-up 2 epochs, then 2 (near) single-class epochs in a row stop
  the trial as PRUNED, reason ``collapse``);
* ``lenient``: warm-up 2, patience 4 (how much a slower trigger gives back).

What is measured per arm: epochs trained over all trials (the compute, free of machine noise),
the trials' summed training seconds, wall time, how many trials collapsed (stopped for it, or
ended with a collapse penalty), how many the collapse detector and the median pruner stopped, and
the best trial's validation and test balanced accuracy. Target: >= 30% fewer epochs than ``off``
where collapse is common (>= 1/3 of the trials), with a best validation score no worse.

Data sets: ``seed-noise`` and ``seed-signal`` (made here), and from ``../shared/datasets``:
Earthquakes (the classic trap: 264 vs 58, a 512-step series; averaged over blocks of 4 steps to
128 so an arm costs minutes instead of half an hour; the same input in every arm) and
MedicalImages (10 classes, 203 of 381 in one class).

    .venv/bin/python benchmarks/collapse.py              # 12 trials per arm; ~35 min on 2 cores
    .venv/bin/python benchmarks/collapse.py --quick      # 3 trials, 4 epochs, 2 sets (smoke test)

Writes benchmarks/results/collapse.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

SHARED = _common.REPO.parent / "shared" / "datasets"
TARGET_SAVING = 0.30
ARMS = {
    "off": ["--collapse-patience", "0"],
    "default": [],
    "lenient": ["--collapse-warmup", "2", "--collapse-patience", "4"],
}


def make_sets(folder: Path, names: list[str]) -> dict[str, Path]:
    import numpy as np

    from sweep.synthetic import make_dataset, write_dataset

    out: dict[str, Path] = {}
    for name in names:
        if name in ("seed-noise", "seed-signal"):
            out[name] = write_dataset(make_dataset(name, seed=0), folder / f"{name}.npz")
            continue
        source = SHARED / f"{name}.npz"
        if not source.exists():
            print(f"skipping {name}: {source} not found", file=sys.stderr)
            continue
        if name == "Earthquakes":
            d = np.load(source)

            def blocks(X: Any) -> Any:
                n, t, f = X.shape
                return X[:, : t - t % 4].reshape(n, t // 4, 4, f).mean(axis=2)

            path = folder / "Earthquakes-128.npz"
            np.savez(path, X_train=blocks(d["X_train"]), y_train=d["y_train"], X_test=blocks(d["X_test"]),
                     y_test=d["y_test"])
            out["Earthquakes (128 steps)"] = path
        else:
            out[name] = source
    return out


def run_arm(folder: Path, data: Path, arm: str, *, trials: int, epochs: int | None, seed: int) -> dict[str, Any]:
    import optuna

    from sweep.study import open_storage, trial_rows

    study = f"{arm}"
    storage = f"sqlite:///{folder}/{arm}.db"
    cmd = [str(Path(sys.executable).parent / "sweep"), "run", str(data), "--study", study, "--storage", storage,
           "--tracking-uri", f"sqlite:///{folder}/mlflow-{arm}.db", "--n-trials", str(trials), "--seed", str(seed),
           "--quiet", *ARMS[arm], *(["--epochs", str(epochs)] if epochs else [])]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{arm} on {data.name} failed: {done.stderr.strip()[-500:]}")
    rows = [r for r in trial_rows(optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=False)))
            if not r["surplus"]]
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    return {
        "arm": arm,
        "trials": len(finished),
        "epochs": sum(r["epochs_run"] or 0 for r in rows),
        "trial_seconds": round(sum(r["duration_s"] or 0 for r in rows), 1),
        "wall_seconds": round(wall, 1),
        "collapsed": sum(1 for r in finished if r["collapse"]),
        "pruned_collapse": sum(1 for r in rows if r["state"] == "PRUNED" and str(r["reason"]).startswith("collapse")),
        "pruned_median": sum(1 for r in rows if r["state"] == "PRUNED" and str(r["reason"]).startswith("median")),
        "failed": sum(1 for r in rows if r["state"] == "FAIL"),
        "best_value": best["value"] if best else None,
        "best_val_balanced_accuracy": best["val_balanced_accuracy"] if best else None,
        "best_test_balanced_accuracy": best["test_balanced_accuracy"] if best else None,
        "best_collapsed": bool(best["collapse"]) if best else None,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (default: the tool's, 15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="*", default=["seed-noise", "seed-signal", "Earthquakes", "MedicalImages"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.sets = 3, 4, ["seed-noise", "seed-signal"]

    results: list[dict[str, Any]] = []
    with _common.scratch("sweep-collapse-") as folder:
        sets = make_sets(folder, args.sets)
        for name, path in sets.items():
            per_set = folder / name.split()[0]
            per_set.mkdir()
            arms = {arm: run_arm(per_set, path, arm, trials=args.trials, epochs=args.epochs, seed=args.seed)
                    for arm in ARMS}
            off = arms["off"]
            for arm, r in arms.items():
                r["set"] = name
                r["epochs_saved_vs_off"] = round(1 - r["epochs"] / off["epochs"], 3) if off["epochs"] else None
                r["seconds_saved_vs_off"] = round(1 - r["trial_seconds"] / off["trial_seconds"], 3) if off["trial_seconds"] else None
                results.append(r)
                print(f"{name:>24} {arm:>8}: {r['epochs']:>4} epochs {r['trial_seconds']:>7.1f} s, "
                      f"collapsed {r['collapsed']}/{r['trials']}, best val BA {r['best_val_balanced_accuracy']}",
                      flush=True)

    verdicts = []
    for name in dict.fromkeys(r["set"] for r in results):
        by_arm = {r["arm"]: r for r in results if r["set"] == name}
        off, default = by_arm["off"], by_arm["default"]
        common = off["collapsed"] >= off["trials"] / 3
        no_worse = (default["best_value"] or -9) >= (off["best_value"] or -9) - 1e-9
        verdicts.append({
            "set": name, "collapse_common": common, "epochs_saved": default["epochs_saved_vs_off"],
            "best_no_worse": no_worse,
            "target_met": (not common) or (default["epochs_saved_vs_off"] >= TARGET_SAVING and no_worse),
        })

    columns = ["set", "arm", "epochs", "saved", "trial s", "collapsed", "stopped: collapse", "median",
               "best val BA", "its test BA"]
    table = [[r["set"], r["arm"], r["epochs"], f"{r['epochs_saved_vs_off']:.0%}", f"{r['trial_seconds']:.0f}",
              f"{r['collapsed']}/{r['trials']}", r["pruned_collapse"], r["pruned_median"],
              _fmt(r["best_val_balanced_accuracy"]), _fmt(r["best_test_balanced_accuracy"])]
             for r in results]
    _common.print_table(f"Collapse early-stopping, {args.trials} trials per arm", columns, table)
    for v in verdicts:
        print(f"{v['set']}: collapse common: {v['collapse_common']}; epochs saved by the default "
              f"{v['epochs_saved']:.0%}; best no worse: {v['best_no_worse']}; target met: {v['target_met']}")
    path = _common.write_result("collapse", {
        "command": "python benchmarks/collapse.py" + (" --quick" if args.quick else ""),
        "trials_per_arm": args.trials, "epochs_cap": args.epochs or 15, "seed": args.seed,
        "arms": {k: " ".join(v) or "(defaults)" for k, v in ARMS.items()},
        "target": f">= {TARGET_SAVING:.0%} fewer epochs than 'off' where >= 1/3 of the trials collapse, best value no worse",
        "results": results, "verdicts": verdicts,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Time-boxed sweeps on real sets: does the whole `sweep run DATA --budget B --workers W` end within
B + 1 minute, and how do the trials share the time (trials run, epochs per trial, how they ended)?

    python benchmarks/budget.py --sets ECG200 Strawberry --budget 3m --workers 2 [--seed 0] [--keep DIR]

Writes benchmarks/results/budget.json (one row per set; SWEEP_DATASETS=DIR if the
shared datasets are not in ../shared/datasets). Each run gets its own SQLite and MLflow
stores in a scratch folder (kept under --keep DIR, e.g. for benchmarks/selection.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401 - environment before TensorFlow; repository on sys.path
from _common import print_table, scratch, write_result

DATASETS = Path(os.environ.get("SWEEP_DATASETS", _common.REPO.parent / "shared" / "datasets"))


def run_one(name: str, *, budget: str, workers: int, seed: int, keep: Path | None, extra: list[str]) -> dict:
    import optuna

    from sweep.budget import parse_duration

    data = (DATASETS / f"{name}.npz").resolve()
    with scratch(f"budget-{name}-") as folder:
        cmd = [sys.executable, "-m", "sweep", "run", str(data), "--study", name, "--budget", budget,
               "--workers", str(workers), "--seed", str(seed), "--storage", f"sqlite:///{folder}/sweep.db",
               "--tracking-uri", f"sqlite:///{folder}/mlflow.db", "--quiet", *extra]
        launched = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        ended = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/sweep.db")
        clock = study.user_attrs["deadline"]
        trials = study.get_trials(deepcopy=False)
        epochs = [int(t.user_attrs.get("result", {}).get("epochs_run") or 0) for t in trials
                  if t.state.name in ("COMPLETE", "PRUNED")]
        states: dict[str, int] = {}
        for t in trials:
            key = t.state.name.lower()
            reason = str(t.user_attrs.get("result", {}).get("prune_reason") or t.user_attrs.get("fail_reason") or "")
            if t.state.name == "PRUNED":
                key += "_" + reason.split(":")[0]
            if t.user_attrs.get("result", {}).get("stopped") == "deadline":
                key += "_deadline"
            states[key] = states.get(key, 0) + 1
        best = json.loads(subprocess.run(
            [sys.executable, "-m", "sweep", "best", name, "--json", "--storage", f"sqlite:///{folder}/sweep.db"],
            capture_output=True, text=True, check=True).stdout)
        retrained = (study.user_attrs.get("retrained") or {}).get("results") or []
        row = {
            "set": name, "budget_seconds": parse_duration(budget), "workers": workers, "seed": seed,
            "wall_seconds": round(ended - launched, 1),
            "startup_seconds": round(clock["started_at"] - launched, 1),
            "search_seconds": round(clock["search_ends_at"] - clock["started_at"], 1),
            "ended_after_deadline_seconds": round(ended - clock["ends_at"], 1),
            "within_budget_plus_1min": ended - launched <= parse_duration(budget) + 60,
            "trials_finished": len(epochs), "states": states,
            "epochs_per_trial": {"min": min(epochs, default=0), "median": statistics.median(epochs) if epochs else 0,
                                 "max": max(epochs, default=0), "all": sorted(epochs)},
            "retrain_runs": sum(len(e["runs"]) for e in retrained),
            "champion_trial": best["number"], "selection": best.get("selection"),
            "champion_val_balanced_accuracy": best["val_balanced_accuracy"],
            "champion_test_balanced_accuracy": best["test_balanced_accuracy"],
        }
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / "sweep.db", keep / f"{name}-sweep.db")
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["ECG200", "Strawberry"])
    ap.add_argument("--budget", default="3m")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--sweep-args", default="", help="extra `sweep run` arguments, e.g. '--pruner median'")
    ap.add_argument("--name", default="budget", help="result file name under benchmarks/results/")
    args = ap.parse_args()
    rows = [run_one(s, budget=args.budget, workers=args.workers, seed=args.seed, keep=args.keep,
                    extra=args.sweep_args.split()) for s in args.sets]
    print_table(f"sweep run --budget {args.budget} --workers {args.workers} {args.sweep_args}".strip(),
                ["set", "wall s", "start-up s", "after deadline s", "trials", "epochs min/med/max", "states",
                 "champion val", "champion test"],
                [[r["set"], r["wall_seconds"], r["startup_seconds"], r["ended_after_deadline_seconds"],
                  r["trials_finished"], "{min}/{median}/{max}".format(**r["epochs_per_trial"]),
                  " ".join(f"{k}={v}" for k, v in sorted(r["states"].items())),
                  f"{r['champion_val_balanced_accuracy']:.3f}", f"{r['champion_test_balanced_accuracy']:.3f}"]
                 for r in rows])
    path = write_result(args.name, {"command": " ".join(["python", *sys.argv]), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

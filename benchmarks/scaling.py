"""Throughput of one study with 1 and 2 local workers, on SQLite and on PostgreSQL.

Each configuration runs the same 12-trial study through the real CLI (``sweep run --workers W``,
a fresh database and MLflow store each), one after the other in this one run, so the machine's
drift hits them alike. All trials train the same model (the search space is narrowed to one
point, pruning off, patience = epochs), so a trial costs the same in every configuration and the
speed-up is the workers' doing, not the sampler's.

What is measured:

* ``wall``: the command, from start to exit (imports, study creation, workers, summary).
* ``span``: first trial start to last trial end, from the study (the sweep's own throughput).
* ``trials/hour`` from the span; the speed-up is the 1-worker span over the W-worker span.
* ``storage share``: time the training processes spend inside Optuna storage calls (via
  ``SWEEP_STORAGE_TIMING``) over their process time. Heartbeats, written by a background thread
  while the model trains, and the coordinator's progress polling (it trains nothing) are
  reported apart.

Targets: >= 1.6x at 2 workers on 2 cores; storage share < 2%.

    .venv/bin/python benchmarks/scaling.py                 # 12 trials, 10 epochs; ~6 min
    .venv/bin/python benchmarks/scaling.py --quick         # 4 trials, 2 epochs (smoke test)

PostgreSQL comes from SWEEP_TEST_POSTGRES_URL (default: the local server, database test); each
configuration gets its own new database, dropped afterwards. Writes benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

TARGET_SPEEDUP = 1.6
TARGET_STORAGE_SHARE = 0.02
SPACE = """[search_space]
units = 32
layers = 1
dropout = 0.1
learning_rate = 1e-3
class_weight = ["balanced"]
batch_size = [32]
clipnorm = [0.0]
"""


def run_one(folder: Path, data: Path, *, backend: str, workers: int, threads: int | None, trials: int,
            epochs: int) -> dict[str, Any]:
    import optuna

    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            storage = stack.enter_context(_common.postgres_database())
        else:
            storage = f"sqlite:///{folder}/sweep.db"
        timing = folder / "storage-timing.jsonl"
        config = folder / "space.toml"
        config.write_text(SPACE)
        cmd = [str(Path(sys.executable).parent / "sweep"), "run", str(data), "--study", "scale", "--retrain-top", "0",
               "--config", str(config),
               "--n-trials", str(trials), "--epochs", str(epochs), "--patience", str(epochs), "--pruner", "none",
               "--workers", str(workers), "--tracking-uri", f"sqlite:///{folder}/mlflow.db", "--quiet"]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "SWEEP_STORAGE": storage, "SWEEP_STORAGE_TIMING": str(timing)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{backend} x{workers}: {proc.stderr[-2000:]}")
        study = optuna.load_study(study_name="scale", storage=storage)
        done = [t for t in study.get_trials() if t.state.is_finished() and t.state.name in ("COMPLETE", "PRUNED")]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        lines = [json.loads(line) for line in timing.read_text().splitlines()]
        # With several workers, the coordinator (it trains nothing) is the process that ran longest.
        coordinator = max(lines, key=lambda line: line["process_seconds"]) if workers > 1 else None
        trainers = [line for line in lines if line is not coordinator]
        storage_s = sum(line["storage_seconds"] for line in trainers)
        # Heartbeats are written by a background thread while the model trains: no wall time lost.
        heartbeat_s = sum(line["by_method"].get("record_heartbeat", [0, 0.0])[1] for line in trainers)
        process_s = sum(line["process_seconds"] for line in trainers)
    return {
        "backend": backend, "workers": workers, "threads_per_worker": threads or max(1, (os.cpu_count() or 1) // workers),
        "trials": len(done), "wall_s": round(wall, 2), "span_s": round(span, 2),
        "trials_per_hour": round(len(done) / span * 3600, 1), "storage_s": round(storage_s, 3),
        "storage_calls": sum(line["calls"] for line in trainers), "worker_process_s": round(process_s, 2),
        "coordinator_storage_s": round(coordinator["storage_seconds"], 3) if coordinator else 0.0,
        "heartbeat_s": round(heartbeat_s, 3),
        "storage_share": round((storage_s - heartbeat_s) / process_s, 4),
        "storage_share_with_heartbeats": round(storage_s / process_s, 4),
        "storage_by_method": _merge([line["by_method"] for line in trainers]),
    }


def _merge(tables: list[dict[str, list]]) -> dict[str, list]:
    out: dict[str, list] = {}
    for table in tables:
        for name, (calls, seconds) in table.items():
            c, sec = out.get(name, [0, 0.0])
            out[name] = [c + calls, round(sec + seconds, 4)]
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="4 trials, 2 epochs")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs = 4, 2

    configs = [("sqlite", 1, None), ("sqlite", 2, None), ("postgresql", 1, None), ("postgresql", 2, None),
               ("sqlite", 1, 1)]
    rows = []
    with _common.scratch("sweep-scaling-") as folder:
        data = _common.seed_signal(folder)
        for backend, workers, threads in configs:
            sub = folder / f"{backend}-{workers}-{threads or 'auto'}"
            sub.mkdir()
            rows.append(run_one(sub, data, backend=backend, workers=workers, threads=threads, trials=args.trials,
                                epochs=args.epochs))
            r = rows[-1]
            print(f"{backend:<10} workers {workers} x {r['threads_per_worker']} thread(s): span {r['span_s']:.1f}s "
                  f"wall {r['wall_s']:.1f}s  {r['trials_per_hour']:.0f} trials/h  storage {100 * r['storage_share']:.2f}%",
                  flush=True)

    def find(backend: str, workers: int, threads: int | None = None) -> dict[str, Any]:
        return next(r for r in rows if r["backend"] == backend and r["workers"] == workers
                    and (threads is None or r["threads_per_worker"] == threads))

    speedups = {}
    for backend in ("sqlite", "postgresql"):
        one, two = find(backend, 1, max(1, os.cpu_count() or 1)), find(backend, 2)
        speedups[backend] = {"span": round(one["span_s"] / two["span_s"], 3), "wall": round(one["wall_s"] / two["wall_s"], 3)}
    print()
    print("| storage | workers x threads | trials | span s | wall s | trials/hour | storage share |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['backend']} | {r['workers']} x {r['threads_per_worker']} | {r['trials']} | {r['span_s']:.1f} | "
              f"{r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | {100 * r['storage_share']:.2f}% |")
    print()
    for backend, s in speedups.items():
        print(f"speed-up at 2 workers, {backend}: {s['span']:.2f}x (span), {s['wall']:.2f}x (wall); target >= {TARGET_SPEEDUP}x")
    worst_share = max(r["storage_share"] for r in rows)
    print(f"largest storage share: {100 * worst_share:.2f}% (target < {100 * TARGET_STORAGE_SHARE:.0f}%)")
    path = _common.write_result("scaling", {
        "trials": args.trials, "epochs": args.epochs, "rows": rows, "speedup": speedups,
        "target_speedup": TARGET_SPEEDUP, "target_storage_share": TARGET_STORAGE_SHARE,
        "met": all(s["span"] >= TARGET_SPEEDUP for s in speedups.values()) and worst_share < TARGET_STORAGE_SHARE,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Collapse early-stopping: compute saved, and best scores kept, at the same trial budget.

For each data set and search space, the same study (same seed, same trial budget, the tool's
defaults otherwise: median pruner, 15-epoch cap, patience 5) runs through the real CLI
(``sweep run``, a fresh SQLite study and MLflow store each) twice, one after the other:

* ``off``: ``--collapse-patience 0``: collapsed trials train until patience or the median pruner
  stops them (what Optuna + Keras early stopping do without this tool's detector);
* ``on``: the defaults (after a warm-up of 2 epochs, 2 (near) single-class epochs in a row stop
  the trial as PRUNED, reason ``collapse``).

Two search spaces: the tool's ``default`` space (class weighting is one of four choices), and
``no-weights`` (``class_weight = ["none"]``, as in most copied recipes), where collapse is common.

Measured per run: epochs trained over all trials (the compute, free of machine noise), the
trials' summed seconds, how many trials collapsed (stopped for it, or ended with a collapse
penalty), how many the detector and the median pruner stopped, and the best trial's validation
and test balanced accuracy. Target: >= 30% fewer epochs where collapse is common (>= 1/3 of the
``off`` trials), with a best validation score no worse.

**Choosing the defaults.** Each ``off`` run's per-epoch validation curves (from its MLflow store)
are replayed under every rule (warm-up W in 0..3, patience K in 1..3): the epochs the rule would
have saved, and how many trials it would have stopped that went on to learn (ended with no
collapse penalty). The replay holds the sampler's choices fixed; the ``on`` runs show the real
thing, where stopped trials also steer TPE.

Data sets: ``seed-noise`` and ``seed-signal`` (made here), and from ``../shared/datasets``:
Earthquakes (the classic trap: 264 vs 58; its 512-step series averaged over blocks of 4 to 128
steps, so a run costs a minute instead of ten; the same input in every run) and MedicalImages
(10 classes, 203 of 381 in one).

    .venv/bin/python benchmarks/collapse.py              # 12 trials per run, 16 runs; ~25 min on 2 cores
    .venv/bin/python benchmarks/collapse.py --quick      # 3 trials, 4 epochs, 1 set (smoke test)

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
ARMS = {"off": ["--collapse-patience", "0"], "on": []}
SPACES = {
    "default": None,
    "no-weights": '[search_space]\nclass_weight = ["none"]\n',
}
RULES = [(w, k) for w in range(4) for k in (1, 2, 3)]
DEFAULT_RULE = (2, 2)


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
            out["Earthquakes-128"] = path
        else:
            out[name] = source
    return out


def run_arm(folder: Path, data: Path, arm: str, space: str, *, trials: int, epochs: int | None,
            seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One `sweep run`; returns its summary and, per trial, the per-epoch penalties and outcome."""
    import optuna

    from sweep.records import best_of, finished, trial_records
    from sweep.storage import open_storage

    name = f"{space}-{arm}"
    storage, tracking = f"sqlite:///{folder}/{name}.db", f"sqlite:///{folder}/mlflow-{name}.db"
    config = []
    if SPACES[space]:
        (folder / f"{space}.toml").write_text(SPACES[space])
        config = ["--config", str(folder / f"{space}.toml")]
    cmd = [str(Path(sys.executable).parent / "sweep"), "run", str(data), "--study", name, "--storage", storage, "--retrain-top", "0",
           "--tracking-uri", tracking, "--n-trials", str(trials), "--seed", str(seed), "--log-models", "none",
           "--quiet", *config, *ARMS[arm], *(["--epochs", str(epochs)] if epochs else [])]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name} on {data.name} failed: {done.stderr.strip()[-500:]}")
    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=False))
    records = [r for r in trial_records(study) if not r.surplus]
    done = finished(records)
    top = best_of(study)
    best = top.record if top is not None else None
    summary = {
        "trials": len(done),
        "epochs": sum(r.epochs_run or 0 for r in records),
        "trial_seconds": round(sum(r.duration_s or 0 for r in records), 1),
        "wall_seconds": round(wall, 1),
        "collapsed": sum(1 for r in done if r.near_collapse),
        "pruned_collapse": sum(1 for r in records if r.state == "PRUNED" and str(r.reason).startswith("collapse")),
        "pruned_median": sum(1 for r in records if r.state == "PRUNED" and str(r.reason).startswith("median")),
        "failed": sum(1 for r in records if r.state == "FAIL"),
        "best_value": best.value if best else None,
        "best_val_balanced_accuracy": best.val_balanced_accuracy if best else None,
        "best_test_balanced_accuracy": best.test_balanced_accuracy if best else None,
        "best_collapsed": best.near_collapse if best else None,
    }
    return summary, _curves(tracking, name, records)


def _curves(tracking_uri: str, experiment: str, records: list[Any]) -> list[dict[str, Any]]:
    """Per trial: the collapse penalty of each epoch (val_balanced_accuracy - val_score) and its end."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    by_number = {r.number: r for r in records}
    out = []
    for run in client.search_runs([exp.experiment_id], filter_string="tags.`sweep.role` = 'trial'", max_results=1000):
        row = by_number.get(int(run.data.tags["sweep.trial_number"]))
        if row is None or row.state not in ("COMPLETE", "PRUNED"):
            continue
        ba = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_balanced_accuracy")}
        score = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_score")}
        out.append({"number": row.number, "penalties": [round(ba[e] - score[e], 4) for e in sorted(ba)],
                    "val_balanced_accuracy": [round(ba[e], 4) for e in sorted(ba)],
                    "learned": not row.near_collapse, "value": row.value, "state": row.state})
    return out


CHANCE = {"MedicalImages": 0.1}  # 1 / classes; the other sets have 2 classes


def replay(curves: list[dict[str, Any]], warmup: int, patience: int, *, chance: float | None = None) -> dict[str, Any]:
    """What rule (warmup, patience) would have done to these trials (sampler choices held fixed);
    ``chance`` (1 / classes) turns on the tool's "has learned something" exemption."""
    from objectives.metrics import CollapseWatch

    total = saved = stopped = stopped_learners = 0
    complete = [c for c in curves if c["state"] == "COMPLETE" and c["value"] is not None]
    best = max(complete, key=lambda c: c["value"]) if complete else None
    best_stopped = False
    for c in curves:
        watch = CollapseWatch(warmup=warmup, patience=patience, chance=chance)
        n = len(c["penalties"])
        total += n
        stop = next((e for e, (p, ba) in enumerate(zip(c["penalties"], c["val_balanced_accuracy"]), start=1)
                     if watch.update(e, p, ba)), None)
        if stop is not None and stop < n:
            saved += n - stop
            stopped += 1
            stopped_learners += c["learned"]
            best_stopped = best_stopped or (c is best and c["learned"])  # the model the run would ship
    return {"warmup": warmup, "patience": patience, "epochs_saved": round(saved / total, 3) if total else 0.0,
            "trials_stopped": stopped, "stopped_that_learned": stopped_learners,
            "best_learned_trial_stopped": best_stopped}


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
        args.trials, args.epochs, args.sets = 3, 4, ["seed-noise"]

    results: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []  # the 'off' runs' per-epoch curves, kept for other replays
    with _common.scratch("sweep-collapse-") as folder:
        for name, path in make_sets(folder, args.sets).items():
            for space in SPACES:
                work = folder / f"{name}-{space}"
                work.mkdir()
                runs = {arm: run_arm(work, path, arm, space, trials=args.trials, epochs=args.epochs, seed=args.seed)
                        for arm in ARMS}
                off = runs["off"][0]
                for arm, (r, _) in runs.items():
                    r.update(set=name, space=space, arm=arm,
                             epochs_saved_vs_off=round(1 - r["epochs"] / off["epochs"], 3) if off["epochs"] else None)
                    results.append(r)
                    print(f"{name:>16} {space:>10} {arm:>3}: {r['epochs']:>4} epochs {r['trial_seconds']:>6.1f} s, "
                          f"collapsed {r['collapsed']}/{r['trials']}, best val BA {_fmt(r['best_val_balanced_accuracy'])}",
                          flush=True)
                for w, k in RULES:
                    replays.append({"set": name, "space": space,
                                    **replay(runs["off"][1], w, k, chance=CHANCE.get(name, 0.5))})
                curves.append({"set": name, "space": space, "trials": runs["off"][1]})

    verdicts = []
    for r in (r for r in results if r["arm"] == "on"):
        off = next(o for o in results if o["arm"] == "off" and o["set"] == r["set"] and o["space"] == r["space"])
        common = off["collapsed"] >= off["trials"] / 3
        # A collapsed best model is no model: compare the best validation score of models that learned.
        usable = {k: x["best_val_balanced_accuracy"] if x["best_value"] is not None and not x["best_collapsed"] else None
                  for k, x in (("on", r), ("off", off))}
        no_worse = usable["off"] is None or (usable["on"] is not None and usable["on"] >= usable["off"] - 1e-9)
        verdicts.append({"set": r["set"], "space": r["space"], "collapse_common": common,
                         "epochs_saved": r["epochs_saved_vs_off"], "best_no_worse": no_worse,
                         "target_met": (not common) or (r["epochs_saved_vs_off"] >= TARGET_SAVING and no_worse)})

    _common.print_table(
        f"Collapse early-stopping, {args.trials} trials per run",
        ["set", "space", "stopping", "epochs", "saved", "trial s", "collapsed", "stopped: collapse", "median",
         "best val BA", "its test BA"],
        [[r["set"], r["space"], r["arm"], r["epochs"], f"{r['epochs_saved_vs_off']:.0%}", f"{r['trial_seconds']:.0f}",
          f"{r['collapsed']}/{r['trials']}", r["pruned_collapse"], r["pruned_median"],
          _fmt(r["best_val_balanced_accuracy"]), _fmt(r["best_test_balanced_accuracy"])] for r in results])
    pooled = []
    for w, k in RULES:
        mine = [p for p in replays if p["warmup"] == w and p["patience"] == k]
        pooled.append({"warmup": w, "patience": k,
                       "mean_epochs_saved": round(sum(p["epochs_saved"] for p in mine) / max(len(mine), 1), 3),
                       "trials_stopped": sum(p["trials_stopped"] for p in mine),
                       "stopped_that_learned": sum(p["stopped_that_learned"] for p in mine),
                       "runs_whose_best_model_it_stops": sum(p["best_learned_trial_stopped"] for p in mine)})
    _common.print_table(
        "Replay of collapse rules on the 'off' runs' curves (pooled over sets and spaces)",
        ["warm-up", "patience", "epochs saved (mean)", "trials stopped", "of which learned later",
         "runs whose best model it stops"],
        [[p["warmup"], p["patience"], f"{p['mean_epochs_saved']:.0%}", p["trials_stopped"], p["stopped_that_learned"],
          f"{p['runs_whose_best_model_it_stops']}/{len(curves)}"] for p in pooled])
    for v in verdicts:
        print(f"{v['set']} / {v['space']}: collapse common: {v['collapse_common']}; epochs saved "
              f"{v['epochs_saved']:.0%}; best no worse: {v['best_no_worse']}; target met: {v['target_met']}")
    path = _common.write_result("collapse", {
        "command": "python benchmarks/collapse.py" + (" --quick" if args.quick else ""),
        "trials_per_run": args.trials, "epochs_cap": args.epochs or 15, "seed": args.seed,
        "arms": {k: " ".join(v) or "(defaults: warm-up 2, patience 2)" for k, v in ARMS.items()},
        "spaces": {k: v or "(the default space)" for k, v in SPACES.items()},
        "target": f">= {TARGET_SAVING:.0%} fewer epochs than 'off' where >= 1/3 of the trials collapse, best value no worse",
        "results": results, "verdicts": verdicts, "replay": replays, "replay_pooled": pooled, "off_curves": curves,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""What a budget sweep's shipped model leaves on the table: the same configurations trained to
patience on the training part's k folds (each fold model alone, and their probabilities averaged:
the ensemble a sweep could ship), the LSTM-FCN branch at other widths (``fcn_filters``), and the
configurations refit on the whole training part for given lengths (what ``--ship refit`` trains).

Takes the lstm-sweep job of one set in a ``benchmarks/quality.py`` result (its trials' parameters
and test scores) and trains the given trials again, outside any sweep:

- folds: ``sweep.data.split_folds`` with the re-training's seed (as ``sweep.retrain`` cuts them),
  one run per fold with its own seed, up to ``--epochs`` with ``--patience`` (best epoch kept);
- widths: each trial at each ``--widths`` value on the search's own 80/20 split, with 2 seeds,
  timed per epoch;
- refits: each trial on the whole training part for each ``--refit-epochs`` length, with
  ``--refit-seeds`` seeds (``objectives.model.fit_fixed``, the refit's own training: cosine decay,
  no early stopping), each alone and their probabilities averaged, by the number of seeds averaged
  (``--refit-seeds``'s worth), and with two or more trials, the trials' refits averaged together
  (configurations against seeds as an ensemble's members). ``--folds 0`` skips the folds.

Test balanced accuracy is reported only: nothing here chooses on it.

    python benchmarks/retrained.py --result benchmarks/results/quality-budget10-quick-kfold.json \\
        --set ECG200 --trials 34 1 5 [--folds 3] [--widths 128 64] [--refit-epochs 100 20] [--out retrained-ECG200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - quiet TensorFlow, repository on sys.path
import numpy as np
from _common import print_table, write_result


def _train(params: Any, split: Any, *, n_classes: int, epochs: int, patience: int, seed: int) -> dict[str, Any]:
    """One training to patience (best epoch kept; no stop before a budgeted trial's warm-up, as the
    sweep's objective sets it): epochs, seconds, val/test balanced accuracy, test probabilities."""
    from objectives import model as lstm
    from objectives.metrics import evaluate_predictions
    from objectives.objective import Objective
    from objectives.search_space import SearchSpace
    from sweep.budget import BUDGET_WARMUP_FRACTION

    objective = Objective(split, n_classes=n_classes, space=SearchSpace(), epochs=epochs, patience=patience, seed=seed,
                          warmup_fraction=BUDGET_WARMUP_FRACTION)
    started = time.perf_counter()
    training = lstm.start_training(params, X_train=split.X_train, y_train=split.y_train, X_val=split.X_val,
                                   y_val=split.y_val, n_classes=n_classes, mean=objective.mean, std=objective.std,
                                   patience=patience, seed=seed, on_epoch=lambda record: None,
                                   min_epochs=objective._min_epochs(params))
    lstm.fit(training, params, X_train=split.X_train, y_train=split.y_train, n_classes=n_classes, epochs=epochs,
             seed=seed)
    seconds = time.perf_counter() - started
    val_proba = lstm.predict_proba(training.model, split.X_val)
    test_proba = lstm.predict_proba(training.model, split.X_test)
    return {
        "epochs": len(training.history), "seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / max(1, len(training.history)), 2),
        "val_balanced_accuracy": float(evaluate_predictions(split.y_val, val_proba.argmax(1), n_classes).balanced_accuracy),
        "test_balanced_accuracy": float(evaluate_predictions(split.y_test, test_proba.argmax(1), n_classes).balanced_accuracy),
        "test_proba": test_proba,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from objectives import model as lstm
    from objectives.search_space import LstmParams
    from sweep.data import load_dataset, split_folds, split_stratified
    from sweep.retrain import split_seed

    lstm.configure_threads(1)
    doc = json.loads(Path(args.result).read_text())
    job = next(j for j in doc["jobs"] if j.get("method") == "lstm_sweep" and j["set"] == args.set)
    rows = {r["number"]: r for r in job["trial_rows"]}
    data = load_dataset(Path(args.datasets) / f"{args.set}.npz")
    val_fraction = float(doc["settings"].get("val_fraction", 0.2))
    folds = split_folds(data, k=args.folds, seed=split_seed(job["seed"], 0)) if args.folds else []
    if folds is None:
        raise SystemExit(f"{args.set}: a class has fewer than {args.folds} training sequences; use fewer --folds")
    search_split = split_stratified(data, val_fraction=val_fraction, seed=job["seed"])
    out: list[dict[str, Any]] = []
    for number in args.trials:
        row = rows[number]
        params = LstmParams(**row["params"])
        entry: dict[str, Any] = {"trial": number, "params": row["params"], "search_val_balanced_accuracy": row["value"],
                                 "search_test_balanced_accuracy": row["test_balanced_accuracy"],
                                 "search_epochs": row.get("epochs_run"), "folds": [], "widths": []}
        probas = []
        for i, split in enumerate(folds):
            run = _train(params, split, n_classes=data.n_classes, epochs=args.epochs, patience=args.patience,
                         seed=100 + i)
            probas.append(run.pop("test_proba"))
            entry["folds"].append({"fold": i, **run})
            print(f"{args.set} trial {number} fold {i}: {run['epochs']} epochs, val {run['val_balanced_accuracy']:.3f}, "
                  f"test {run['test_balanced_accuracy']:.3f} ({run['seconds']:.0f} s)", flush=True)
        entry["ensemble_test_balanced_accuracy"] = _averaged(data, probas)
        if params.architecture == "lstm_fcn":
            for width in args.widths:
                for seed in (1, 2):
                    run = _train(dataclasses.replace(params, fcn_filters=width), search_split, n_classes=data.n_classes,
                                 epochs=args.epochs, patience=args.patience, seed=seed)
                    run.pop("test_proba")
                    entry["widths"].append({"fcn_filters": width, "seed": seed, **run})
                    print(f"{args.set} trial {number} width {width} seed {seed}: {run['epochs']} epochs, "
                          f"{run['seconds_per_epoch']:.2f} s/epoch, val {run['val_balanced_accuracy']:.3f}, "
                          f"test {run['test_balanced_accuracy']:.3f}", flush=True)
        entry["refits"] = [_refits(params, data, epochs=length, seeds=args.refit_seeds, label=f"{args.set} trial {number}")
                           for length in args.refit_epochs]
        out.append(entry)
    across = _across(data, out)
    for entry in out:
        for r in entry["refits"]:
            r.pop("test_probas")
    return {"result": str(args.result), "set": args.set, "seed": job["seed"], "folds": args.folds,
            "epochs": args.epochs, "patience": args.patience, "refit_seeds": args.refit_seeds, "trials": out,
            "across_trials": across}


def _averaged(data: Any, probas: list[np.ndarray]) -> float | None:
    """Test balanced accuracy of the models' averaged probabilities (None without models)."""
    from objectives.metrics import evaluate_predictions

    if not probas:
        return None
    return float(evaluate_predictions(data.y_test, np.mean(probas, axis=0).argmax(1), data.n_classes).balanced_accuracy)


def _refits(params: Any, data: Any, *, epochs: int, seeds: int, label: str) -> dict[str, Any]:
    """``params`` refit on the whole training part for ``epochs`` epochs with seeds 1..``seeds``."""
    from objectives import model as lstm
    from objectives.metrics import evaluate_predictions
    from objectives.preprocessing import standardization

    mean, std = standardization(data.X_train)
    runs, probas = [], []
    for seed in range(1, seeds + 1):
        started = time.perf_counter()
        model, done = lstm.fit_fixed(params, X_train=data.X_train, y_train=data.y_train, n_classes=data.n_classes,
                                     mean=mean, std=std, epochs=epochs, seed=seed, stop=lambda _: False)
        proba = lstm.predict_proba(model, data.X_test)
        probas.append(proba)
        runs.append({"seed": seed, "epochs": done, "seconds": round(time.perf_counter() - started, 1),
                     "test_balanced_accuracy": float(evaluate_predictions(
                         data.y_test, proba.argmax(1), data.n_classes).balanced_accuracy)})
        print(f"{label} refit {epochs} epochs seed {seed}: test {runs[-1]['test_balanced_accuracy']:.3f} "
              f"({runs[-1]['seconds']:.0f} s)", flush=True)
    return {"epochs": epochs, "runs": runs, "averaged_test_balanced_accuracy": _averaged(data, probas),
            "by_size": _by_size(data, probas), "test_probas": probas}


def _by_size(data: Any, probas: list[np.ndarray], most: int = 60) -> dict[str, dict[str, float]]:
    """How the averaged model's test score grows with the seeds averaged: for k members, the mean,
    lowest and highest over (up to ``most``, drawn with a fixed generator) subsets of k seeds: what
    ``--refit-seeds k`` would ship for another draw of seeds."""
    import itertools
    import math

    rng = np.random.default_rng(0)
    out = {}
    for k in range(1, len(probas) + 1):
        if math.comb(len(probas), k) <= most:
            groups = [list(g) for g in itertools.combinations(range(len(probas)), k)]
        else:
            groups = [list(rng.choice(len(probas), size=k, replace=False)) for _ in range(most)]
        scores = [_averaged(data, [probas[i] for i in g]) for g in groups]
        out[str(k)] = {"mean": float(np.mean(scores)), "min": float(min(scores)), "max": float(max(scores)),
                       "subsets": len(groups)}
    return out


def _across(data: Any, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diversity of configurations against diversity of seeds: for each refit length every given
    trial refit, seed i of every trial averaged (one model per configuration), per seed, and all
    their runs averaged."""
    out = []
    lengths = sorted({r["epochs"] for e in entries for r in e["refits"]})
    for length in lengths:
        members = [r["test_probas"] for e in entries for r in e["refits"] if r["epochs"] == length]
        if len(members) < 2:
            continue
        seeds = min(len(m) for m in members)
        per_seed = [_averaged(data, [m[i] for m in members]) for i in range(seeds)]
        out.append({"epochs": length, "trials": len(members), "one_seed_each": per_seed,
                    "all_averaged": _averaged(data, [p for m in members for p in m])})
    return out


def report(measured: dict[str, Any]) -> None:
    rows = []
    for e in measured["trials"]:
        fold_tests = [f["test_balanced_accuracy"] for f in e["folds"]]
        rows.append([e["trial"], e["params"]["architecture"], f"{e['search_val_balanced_accuracy']:.3f}",
                     f"{e['search_test_balanced_accuracy']:.3f} ({e['search_epochs']} ep)",
                     " ".join(f"{f['val_balanced_accuracy']:.3f}" for f in e["folds"]),
                     " ".join(f"{t:.3f}" for t in fold_tests) + f" ({'/'.join(str(f['epochs']) for f in e['folds'])} ep)",
                     "-" if e["ensemble_test_balanced_accuracy"] is None else f"{e['ensemble_test_balanced_accuracy']:.3f}"])
    if measured["folds"]:
        print_table(f"{measured['set']}: the search's model against {measured['folds']} fold models trained to patience",
                    ["trial", "architecture", "search val", "search test", "fold val", "fold test", "fold ensemble test"],
                    rows)
    refits = [(e["trial"], e["search_test_balanced_accuracy"], r) for e in measured["trials"] for r in e.get("refits", [])]
    if refits:
        print_table(f"{measured['set']}: refit on the whole training part ({measured['refit_seeds']} seeds, cosine, "
                    "no early stopping)", ["trial", "own model test", "refit epochs", "each seed's test", "averaged test"],
                    [[t, f"{own:.3f}", r["epochs"], " ".join(f"{x['test_balanced_accuracy']:.3f}" for x in r["runs"]),
                      f"{r['averaged_test_balanced_accuracy']:.3f}"] for t, own, r in refits])
        sizes = sorted({int(k) for _, _, r in refits for k in r.get("by_size", {})})
        if sizes:
            print_table(f"{measured['set']}: the averaged refit's test score by the seeds averaged (mean over subsets "
                        "of seeds [lowest, highest])", ["trial", "refit epochs", *[f"{k} seeds" for k in sizes]],
                        [[t, r["epochs"], *[_spread(r["by_size"].get(str(k))) for k in sizes]] for t, _, r in refits])
    across = measured.get("across_trials") or []
    if across:
        print_table(f"{measured['set']}: the given trials' refits averaged together (one seed of each trial, "
                    "per seed; and every run)", ["refit epochs", "trials", "one seed of each", "all runs averaged"],
                    [[a["epochs"], a["trials"], " ".join(f"{x:.3f}" for x in a["one_seed_each"]),
                      f"{a['all_averaged']:.3f}"] for a in across])
    widths = [(e["trial"], w) for e in measured["trials"] for w in e["widths"]]
    if widths:
        print_table(f"{measured['set']}: LSTM-FCN width on the search's split (2 seeds each)",
                    ["trial", "fcn_filters", "seed", "epochs", "s/epoch", "val", "test"],
                    [[t, w["fcn_filters"], w["seed"], w["epochs"], f"{w['seconds_per_epoch']:.2f}",
                      f"{w['val_balanced_accuracy']:.3f}", f"{w['test_balanced_accuracy']:.3f}"] for t, w in widths])


def _spread(stats: dict[str, float] | None) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.3f} [{stats['min']:.3f}, {stats['max']:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--result", required=True, help="a benchmarks/quality.py result file")
    ap.add_argument("--set", required=True)
    ap.add_argument("--trials", type=int, nargs="+", required=True)
    ap.add_argument("--datasets", default=str(_common.REPO.parent / "shared" / "datasets"))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--widths", type=int, nargs="*", default=[])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--refit-epochs", type=int, nargs="*", default=[],
                    help="refit each trial on the whole training part for these lengths (e.g. 100 20)")
    ap.add_argument("--refit-seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="result name under benchmarks/results/ (default retrained-SET)")
    args = ap.parse_args()
    measured = measure(args)
    report(measured)
    path = write_result(args.out or f"retrained-{args.set}", {"command": " ".join(sys.argv), **measured})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

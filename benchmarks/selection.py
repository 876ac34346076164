"""Which champion holds up on a tiny validation split: the search's one-seed winner, the best
re-trained mean, the margin rule (sweep/selection.py), or an ensemble of the top configurations?

Takes a finished study, trains its top K configurations again with S seeds each (the same training
as a trial: patience, best epoch kept) and keeps every run's validation and test probabilities.
Then, many times over, it draws one seed per configuration as "the search's" run, two others as the
re-training, and applies each rule to the validation numbers only. A rule's shipped model is the
chosen configuration's search-seed model (winner, best-mean, margin rule), or the top-3
configurations' search-seed models with their probabilities averaged (ensemble). Test balanced
accuracy is computed for the shipped model only, to report; it never enters a choice.

    python benchmarks/selection.py --study ECG200 --storage sqlite:///sweep.db --data ECG200.npz \
        --top 5 --seeds 5 [--draws 2000] [--out benchmarks/results/selection-ECG200.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep.selection import choose_champion, validation_step  # noqa: E402


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from objectives.metrics import evaluate_predictions

    return float(evaluate_predictions(y, pred, n_classes).balanced_accuracy)


def train_runs(args: argparse.Namespace) -> dict:
    import optuna

    from objectives import model as lstm
    from objectives.search_space import LstmParams
    from sweep.config import TrainSettings
    from sweep.data import load_dataset, split_stratified, standardization
    from sweep.ranking import best_trial
    from objectives.objective import Objective
    from objectives.search_space import SearchSpace

    lstm.configure_threads(args.threads)
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    settings = study.user_attrs["settings"]
    train = TrainSettings(**settings["train"])
    data = load_dataset(args.data)
    split = split_stratified(data, val_fraction=train.val_fraction, seed=int(settings["seed"]))
    from sweep.ranking import top_trials

    top = top_trials(study, args.top)
    objective = Objective(split, n_classes=data.n_classes, space=SearchSpace.from_dict(settings["search_space"]),
                          epochs=min(train.epochs, args.max_epochs), patience=train.patience, seed=0,
                          collapse_warmup=train.collapse_warmup, collapse_patience=train.collapse_patience,
                          warmup_steps=train.warmup_steps, warmup_fraction=train.warmup_fraction)
    mean, std = standardization(split.X_train)
    runs = []
    for trial in top:
        params = LstmParams(**trial.params)
        for s in range(args.seeds):
            seed = 50_000 + 1000 * s + trial.number
            t0 = time.perf_counter()
            training = lstm.start_training(
                params, X_train=split.X_train, y_train=split.y_train, X_val=split.X_val, y_val=split.y_val,
                n_classes=data.n_classes, mean=mean, std=std, patience=train.patience, seed=seed,
                on_epoch=lambda r: None, min_epochs=objective._min_epochs(params))
            lstm.fit(training, params, X_train=split.X_train, y_train=split.y_train, n_classes=data.n_classes,
                     epochs=min(train.epochs, args.max_epochs), seed=seed)
            runs.append({"trial": trial.number, "seed": seed, "epochs": len(training.history),
                         "seconds": time.perf_counter() - t0,
                         "val_proba": lstm.predict_proba(training.model, split.X_val).tolist(),
                         "test_proba": lstm.predict_proba(training.model, split.X_test).tolist()})
            print(f"trial {trial.number} seed {s}: {len(training.history)} epochs, "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    return {"study": args.study, "data": str(args.data), "n_classes": data.n_classes,
            "search_winner": best_trial(study).number, "top": [t.number for t in top],
            "y_val": split.y_val.tolist(), "y_test": split.y_test.tolist(), "runs": runs}


def evaluate(record: dict, *, draws: int, seed: int = 0) -> dict:
    """Bootstrap over seed assignments: test balanced accuracy of what each rule ships."""
    rng = np.random.default_rng(seed)
    k, y_val, y_test = record["n_classes"], np.array(record["y_val"]), np.array(record["y_test"])
    step = validation_step(np.bincount(y_val, minlength=k))
    by_trial: dict[int, list[dict]] = {}
    for r in record["runs"]:
        r.setdefault("val_ba", balanced_accuracy(y_val, np.argmax(r["val_proba"], axis=1), k))
        r.setdefault("test_ba", balanced_accuracy(y_test, np.argmax(r["test_proba"], axis=1), k))
        by_trial.setdefault(r["trial"], []).append(r)
    trials = [t for t in record["top"] if len(by_trial.get(t, [])) >= 3]
    shipped: dict[str, list[float]] = {"search winner": [], "best re-trained mean": [], "margin rule": [],
                                       "ensemble of top 3": []}
    switched = 0
    for _ in range(draws):
        search, retrain = {}, {}
        for t in trials:
            order = rng.permutation(len(by_trial[t]))
            search[t] = by_trial[t][order[0]]
            retrain[t] = [by_trial[t][i] for i in order[1:3]]
        ranked = sorted(trials, key=lambda t: search[t]["val_ba"], reverse=True)  # the search's one-seed ranking
        winner = ranked[0]
        top3 = ranked[:3]
        entries = [{"trial": t, "runs": [{"val_balanced_accuracy": r["val_ba"], "collapsed": False} for r in retrain[t]],
                    "collapsed_runs": 0} for t in top3]
        choice = choose_champion(entries, search_winner=winner, step=step)
        switched += choice.switched
        best_mean = max(top3, key=lambda t: np.mean([r["val_ba"] for r in retrain[t]]))
        shipped["search winner"].append(search[winner]["test_ba"])
        shipped["best re-trained mean"].append(search[best_mean]["test_ba"])
        shipped["margin rule"].append(search[choice.trial]["test_ba"])
        proba = np.mean([np.array(search[t]["test_proba"]) for t in top3], axis=0)
        shipped["ensemble of top 3"].append(balanced_accuracy(y_test, proba.argmax(axis=1), k))
    return {"draws": draws, "configurations": trials, "switched_share": switched / draws,
            "test_balanced_accuracy": {name: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                                              "p10": float(np.percentile(v, 10))} for name, v in shipped.items()},
            "per_configuration": {t: {"val_mean": float(np.mean([r["val_ba"] for r in by_trial[t]])),
                                      "val_std": float(np.std([r["val_ba"] for r in by_trial[t]])),
                                      "test_mean": float(np.mean([r["test_ba"] for r in by_trial[t]]))}
                                  for t in trials}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--runs", help="reuse the runs of an earlier --out file instead of training")
    ap.add_argument("--out")
    args = ap.parse_args()
    t0 = time.time()
    record = json.loads(Path(args.runs).read_text())["record"] if args.runs else train_runs(args)
    result = evaluate(record, draws=args.draws)
    print(f"{'rule':<22} {'test bal.acc mean':>18} {'std':>7} {'p10':>7}")
    for name, v in result["test_balanced_accuracy"].items():
        print(f"{name:<22} {v['mean']:>18.4f} {v['std']:>7.4f} {v['p10']:>7.4f}")
    print(f"margin rule switched away from the search winner in {result['switched_share']:.1%} of draws")
    if args.out:
        Path(args.out).write_text(json.dumps({"benchmark": "selection", "command": " ".join(sys.argv),
                                             "wall_seconds": time.time() - t0, "result": result, "record": record}))


if __name__ == "__main__":
    main()

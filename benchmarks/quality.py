"""Does lstm-sweep find better models than what users do today, for the same compute?

Four methods, on every set in ``../shared/datasets``, 3 seeds each, at equal budgets:

* ``recipe``: the fixed model from the popular answer users copy: LSTM(64, return_sequences) ->
  Dropout(0.2) -> LSTM(32) -> softmax, Adam 1e-3, scikit-learn "balanced" class weights,
  ReduceLROnPlateau(val_loss, 0.2, 3, 1e-5), 20 epochs, batch 32, raw inputs; ships its last epoch.
* ``kerastuner``: KerasTuner RandomSearch on ``val_accuracy`` (its usual objective); ships
  ``get_best_models()[0]`` (the best trial's best epoch).
* ``optuna_acc``: Optuna TPE (its defaults, no pruner) maximizing the best epoch's plain
  validation accuracy; ships the best trial's best epoch.
* ``lstm_sweep``: ``sweep run`` with its defaults (CLI, SQLite, MLflow, models logged), except
  ``--retrain-top 0`` (re-training only reports; it does not change the model shipped) and
  ``--threads 1``; ships the champion (the best trial's best epoch).

Equal budgets: the same trials (``--trials``), the same 20-epoch cap, the same stratified 80/20
train/validation split of the training part (``sweep.data.split_stratified`` with the repeat's
seed), the same test part, one TensorFlow thread per job, two jobs at a time on the 2 cores. The
three searches share one space: lstm-sweep's default space (``SearchSpace()``), built with the same
``build_lstm``, so what differs is the objective, pruning and what is shipped. Each job is its own
process and its wall time includes starting Python and importing TensorFlow.

    python benchmarks/quality.py                      # all sets, 3 seeds, 6 trials: ~1 h here
    python benchmarks/quality.py --sets ECG200 --seeds 1 --trials 2   # a smoke run

Writes ``benchmarks/results/quality.json`` (every job, plus the summary table).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (quiet TensorFlow, repository on sys.path)
from _common import REPO, print_table, write_result

DATASETS = REPO.parent / "shared" / "datasets"
METHODS = ("recipe", "kerastuner", "optuna_acc", "lstm_sweep")
EPOCHS = 20
VAL_FRACTION = 0.2  # lstm-sweep's default; every method gets this same split


# -- one job (runs in its own process) -------------------------------------------------------------
def _data(path: Path, seed: int) -> tuple[Any, Any]:
    from sweep.data import load_dataset, split_stratified

    data = load_dataset(path)
    return data, split_stratified(data, val_fraction=VAL_FRACTION, seed=seed)


def _score(model: Any, split: Any, n_classes: int) -> dict[str, Any]:
    from objectives import model as lstm
    from objectives.metrics import evaluate_predictions

    out = {}
    for part, X, y in (("val", split.X_val, split.y_val), ("test", split.X_test, split.y_test)):
        ev = evaluate_predictions(y, lstm.predict_proba(model, X).argmax(axis=1), n_classes)
        out.update({f"{part}_balanced_accuracy": ev.balanced_accuracy, f"{part}_accuracy": ev.accuracy,
                    f"{part}_collapsed": ev.collapsed})
    return out


def _fit_inputs(params: Any, split: Any, n_classes: int, seed: int) -> tuple[Any, Any, Any]:
    from objectives.imbalance import class_weights, oversample_indices

    X, y = split.X_train, split.y_train
    if params.class_weight == "oversample":
        idx = oversample_indices(y, seed=seed)
        X, y = X[idx], y[idx]
    return X, y, class_weights(split.y_train, params.class_weight, n_classes)


class _KeepBest:
    """Keras callback: remembers the weights of the epoch with the best ``val_accuracy``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        import keras

        class KeepBest(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.best, self.weights, self.epochs = -1.0, None, 0

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                self.epochs += 1
                acc = float((logs or {}).get("val_accuracy", -1.0))
                if acc > self.best:
                    self.best, self.weights = acc, self.model.get_weights()

        return KeepBest()


def job_recipe(path: Path, seed: int, trials: int) -> dict[str, Any]:
    import keras
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    data, split = _data(path, seed)
    keras.utils.set_random_seed(seed)
    t, f = split.X_train.shape[1:]
    model = keras.Sequential([
        keras.Input((t, f)),
        keras.layers.LSTM(64, return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.LSTM(32),
        keras.layers.Dense(data.n_classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    classes = np.unique(split.y_train)
    weights = dict(zip(classes.tolist(), compute_class_weight("balanced", classes=classes, y=split.y_train)))
    model.fit(split.X_train, split.y_train, validation_data=(split.X_val, split.y_val), epochs=EPOCHS, batch_size=32,
              class_weight=weights, verbose=0, callbacks=[keras.callbacks.ReduceLROnPlateau(
                  monitor="val_loss", factor=0.2, patience=3, min_lr=1e-5)])
    return {**_score(model, split, data.n_classes), "trials": 1, "epochs": EPOCHS, "collapsed_trials": None}


def _space_params(get: Any, padded: bool) -> Any:
    """LstmParams from any sampler, over lstm-sweep's default space (``get(name, kind, spec)``)."""
    from objectives.search_space import LstmParams, SearchSpace

    s = SearchSpace()
    conv = get("conv_filters", "choice", list(s.conv_filters))
    return LstmParams(
        units=get("units", "int_log", (s.units.low, s.units.high)),
        layers=get("layers", "int", (s.layers.low, s.layers.high)),
        dropout=get("dropout", "float", (s.dropout.low, s.dropout.high)),
        learning_rate=get("learning_rate", "float_log", (s.learning_rate.low, s.learning_rate.high)),
        class_weight=get("class_weight", "choice", list(s.class_weight)),
        batch_size=get("batch_size", "choice", list(s.batch_size)),
        clipnorm=get("clipnorm", "choice", list(s.clipnorm)),
        bidirectional=get("bidirectional", "choice", list(s.bidirectional)),
        conv_filters=conv,
        pooling=get("pooling", "choice", list(s.pooling)),
        masking=get("masking", "choice", [False, True]) if padded and conv == 0 else False,
    )


def _train(params: Any, split: Any, data: Any, seed: int) -> tuple[Any, Any]:
    """Build with lstm-sweep's builder, compile with an accuracy metric, fit 20 epochs, keep the
    best ``val_accuracy`` epoch (what a tuner's checkpoint keeps)."""
    import keras

    from objectives import model as lstm
    from sweep.data import standardization

    lstm.reset_keras()
    keras.utils.set_random_seed(seed)
    mean, std = standardization(split.X_train)
    model = lstm.build_lstm(params, timesteps=data.timesteps, features=data.features, n_classes=data.n_classes,
                            mean=mean, std=std)
    model.compile(optimizer=keras.optimizers.Adam(params.learning_rate, clipnorm=params.clipnorm or None),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    X, y, weights = _fit_inputs(params, split, data.n_classes, seed)
    keep = _KeepBest()
    model.fit(X, y, validation_data=(split.X_val, split.y_val), epochs=EPOCHS, batch_size=params.batch_size,
              class_weight=weights, verbose=0, callbacks=[keep])
    model.set_weights(keep.weights)
    return model, keep


def job_optuna_acc(path: Path, seed: int, trials: int) -> dict[str, Any]:
    import optuna

    from sweep.data import is_padded

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data, split = _data(path, seed)
    padded = is_padded(split.X_train)
    best: dict[str, Any] = {"value": -1.0}
    collapsed = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal collapsed

        def get(name: str, kind: str, spec: Any) -> Any:
            if kind == "choice":
                return trial.suggest_categorical(name, spec)
            if kind in ("int", "int_log"):
                return trial.suggest_int(name, *spec, log=kind == "int_log")
            return trial.suggest_float(name, *spec, log=kind == "float_log")

        params = _space_params(get, padded)
        model, keep = _train(params, split, data, seed + trial.number)
        scores = _score(model, split, data.n_classes)
        collapsed += scores["val_collapsed"]
        if keep.best > best["value"]:
            best.update(value=keep.best, scores=scores, params=params.to_dict())
        return keep.best

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return {**best["scores"], "trials": trials, "epochs": EPOCHS * trials, "collapsed_trials": collapsed,
            "best_params": best["params"]}


def job_kerastuner(path: Path, seed: int, trials: int) -> dict[str, Any]:
    import keras_tuner as kt

    from sweep.data import is_padded

    data, split = _data(path, seed)
    padded = is_padded(split.X_train)

    def params_of(hp: Any) -> Any:
        def get(name: str, kind: str, spec: Any) -> Any:
            if kind == "choice":
                return hp.Choice(name, spec) if not all(isinstance(v, bool) for v in spec) else hp.Boolean(name)
            if kind in ("int", "int_log"):
                return hp.Int(name, *spec, sampling="log" if kind == "int_log" else "linear")
            return hp.Float(name, *spec, sampling="log" if kind == "float_log" else "linear")

        return _space_params(get, padded)

    class Model(kt.HyperModel):
        def build(self, hp: Any) -> Any:
            import keras

            from sweep.data import standardization
            from objectives import model as lstm

            params = params_of(hp)
            mean, std = standardization(split.X_train)
            model = lstm.build_lstm(params, timesteps=data.timesteps, features=data.features,
                                    n_classes=data.n_classes, mean=mean, std=std)
            model.compile(optimizer=keras.optimizers.Adam(params.learning_rate, clipnorm=params.clipnorm or None),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

        def fit(self, hp: Any, model: Any, x: Any, y: Any, **kwargs: Any) -> Any:
            params = params_of(hp)
            X, yy, weights = _fit_inputs(params, split, data.n_classes, seed)
            return model.fit(X, yy, batch_size=params.batch_size, class_weight=weights, **kwargs)

    with tempfile.TemporaryDirectory(prefix="kt-") as folder:
        tuner = kt.RandomSearch(Model(), objective="val_accuracy", max_trials=trials, seed=seed, directory=folder,
                                project_name="kt", overwrite=True)
        tuner.search(split.X_train, split.y_train, validation_data=(split.X_val, split.y_val), epochs=EPOCHS,
                     verbose=0)
        model = tuner.get_best_models(1)[0]
        best_hp = tuner.get_best_hyperparameters(1)[0]
        scores = _score(model, split, data.n_classes)
    return {**scores, "trials": trials, "epochs": EPOCHS * trials, "collapsed_trials": None,
            "best_params": params_of(best_hp).to_dict()}


def job_lstm_sweep(path: Path, seed: int, trials: int) -> dict[str, Any]:
    import optuna

    from sweep.study import best_trial, open_storage, trial_rows

    with tempfile.TemporaryDirectory(prefix="quality-") as folder:
        storage, tracking = f"sqlite:///{folder}/sweep.db", f"sqlite:///{folder}/mlflow.db"
        cmd = [str(Path(sys.executable).parent / "sweep"), "run", str(path), "--study", "q", "--storage", storage,
               "--tracking-uri", tracking, "--n-trials", str(trials), "--seed", str(seed), "--epochs", str(EPOCHS),
               "--retrain-top", "0", "--threads", "1", "--quiet"]
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sweep run failed: {done.stderr.strip()[-500:]}")
        study = optuna.load_study(study_name="q", storage=open_storage(storage, heartbeat=False))
        rows = [r for r in trial_rows(study) if not r["surplus"]]
        best = best_trial(study)
        from objectives.search_space import LstmParams

        counts = {"trials": len(rows), "epochs": sum(r["epochs_run"] or 0 for r in rows),
                  "collapsed_trials": sum(1 for r in rows if r["collapse"]),
                  "pruned": sum(1 for r in rows if r["state"] == "PRUNED")}
        if best is None:
            # No trial completed: nothing is shipped. Scored as the constant predictor a user is
            # left with (balanced accuracy 1/k), never left out of the mean.
            import numpy as np

            data, split = _data(path, seed)
            majority = np.bincount(split.y_train).argmax()
            return {"val_balanced_accuracy": 1 / data.n_classes, "val_accuracy": None, "val_collapsed": True,
                    "test_balanced_accuracy": 1 / data.n_classes,
                    "test_accuracy": float(np.mean(split.y_test == majority)), "test_collapsed": True,
                    "no_model": True, **counts, "best_params": None}
        result = best.user_attrs["result"]
        return {
            "val_balanced_accuracy": result["val_balanced_accuracy"], "val_accuracy": result["val_accuracy"],
            "val_collapsed": result["collapsed"],
            "test_balanced_accuracy": result["test_balanced_accuracy"], "test_accuracy": result["test_accuracy"],
            "test_collapsed": result["test_collapsed"],
            **counts, "best_params": LstmParams(**best.params).to_dict(),
        }


JOBS = {"recipe": job_recipe, "kerastuner": job_kerastuner, "optuna_acc": job_optuna_acc, "lstm_sweep": job_lstm_sweep}


def run_job(spec: str) -> None:
    """``--job SET:SEED:METHOD:TRIALS``: one job in this process; prints its JSON result."""
    name, seed, method, trials = spec.split(":")
    from objectives.model import configure_threads

    configure_threads(1)
    result = JOBS[method](DATASETS / f"{name}.npz", int(seed), int(trials))
    print("RESULT " + json.dumps(result))


# -- the driver ------------------------------------------------------------------------------------
def _launch(name: str, seed: int, method: str, trials: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, __file__, "--job", f"{name}:{seed}:{method}:{trials}"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    row: dict[str, Any] = {"set": name, "seed": seed, "method": method, "wall_seconds": round(wall, 1)}
    if done.returncode != 0 or not lines:
        row["error"] = (done.stderr.strip() or done.stdout.strip())[-800:]
    else:
        row.update(json.loads(lines[-1][len("RESULT "):]))
    return row


def _references(name: str) -> dict[str, Any]:
    card = json.loads((DATASETS / f"{name}.json").read_text())
    refs: dict[str, Any] = {"computed_baselines": card.get("computed_baselines", {})}
    for ref in card.get("reference_results", []):
        refs.setdefault("published", []).append(
            {"source": ref.get("source"), "metric": ref.get("metric"), "results": ref.get("results")})
    return refs


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    import numpy as np

    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def summarize(rows: list[dict[str, Any]], sets: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in sets:
        for method in METHODS:
            mine = [r for r in rows if r["set"] == name and r["method"] == method and "error" not in r]
            if not mine:
                continue
            ba, ba_sd = _mean_std([r["test_balanced_accuracy"] for r in mine])
            acc, acc_sd = _mean_std([r["test_accuracy"] for r in mine])
            out.append({
                "set": name, "method": method, "runs": len(mine),
                "test_balanced_accuracy_mean": ba, "test_balanced_accuracy_std": ba_sd,
                "test_accuracy_mean": acc, "test_accuracy_std": acc_sd,
                "val_balanced_accuracy_mean": _mean_std([r["val_balanced_accuracy"] for r in mine])[0],
                "shipped_collapsed": sum(bool(r["test_collapsed"]) for r in mine),
                "collapsed_trials": (sum(r["collapsed_trials"] for r in mine)
                                     if all(r.get("collapsed_trials") is not None for r in mine) else None),
                "epochs": sum(r["epochs"] for r in mine),
                "wall_seconds": round(sum(r["wall_seconds"] for r in mine), 1),
            })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--sets", nargs="*", help="dataset names (default: every .npz in ../shared/datasets)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--parallel", type=int, default=2, help="jobs at a time (each uses one thread)")
    parser.add_argument("--out", default="quality", help="result name under benchmarks/results/")
    parser.add_argument("--reuse", help="a .partial.jsonl of an interrupted run: its finished jobs are kept, "
                                        "except those of --rerun methods")
    parser.add_argument("--rerun", nargs="*", default=[], choices=METHODS,
                        help="methods to run again even if --reuse has them (e.g. after changing lstm-sweep)")
    args = parser.parse_args()
    if args.job:
        run_job(args.job)
        return
    if not DATASETS.is_dir():
        raise SystemExit(f"{DATASETS} not found: the quality benchmark needs the shared datasets beside the repository")
    sets = args.sets or sorted(p.stem for p in DATASETS.glob("*.npz"))
    # Interleaved (seed, set, method) so every method sees the same mix of load over the run.
    specs = [(name, seed, method) for seed in range(args.seeds) for name in sets for method in args.methods]
    partial = REPO / "benchmarks" / "results" / f"{args.out}.partial.jsonl"
    partial.parent.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    if args.reuse:
        for line in Path(args.reuse).read_text().splitlines():
            row = json.loads(line)
            if "error" not in row and row["method"] not in args.rerun and (row["set"], row["seed"], row["method"]) in specs:
                rows.append(row | {"reused": True})
        done = {(r["set"], r["seed"], r["method"]) for r in rows}
        specs = [spec for spec in specs if spec not in done]
        print(f"reusing {len(rows)} finished jobs from {args.reuse}; {len(specs)} to run")
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool, partial.open("w") as log:
        for row in rows:
            log.write(json.dumps(row) + "\n")
        futures = {pool.submit(_launch, *spec, args.trials): spec for spec in specs}
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            status = row.get("error", "").splitlines()[-1:] if "error" in row else \
                [f"test BA {row['test_balanced_accuracy']:.3f}"]
            print(f"[{time.perf_counter() - t0:6.0f}s] {row['set']:>15} seed {row['seed']} {row['method']:>11}: "
                  f"{status[0] if status else 'error'} ({row['wall_seconds']:.0f}s)", flush=True)
    summary = summarize(rows, sets)
    table = []
    for s in summary:
        table.append([s["set"], s["method"],
                      f"{s['test_balanced_accuracy_mean']:.3f} ± {s['test_balanced_accuracy_std']:.3f}",
                      f"{s['test_accuracy_mean']:.3f}", str(s["shipped_collapsed"]),
                      "-" if s["collapsed_trials"] is None else str(s["collapsed_trials"]),
                      str(s["epochs"]), f"{s['wall_seconds']:.0f}"])
    print_table(f"Test scores, {args.seeds} seeds x {args.trials} trials, {EPOCHS}-epoch cap",
                ["set", "method", "test BA mean ± std", "test acc", "shipped collapsed", "collapsed trials",
                 "epochs", "wall s"], table)
    path = write_result(args.out, {
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
        "note": "jobs marked reused come from an earlier, interrupted run of the same command (see --reuse)",
        "settings": {"seeds": args.seeds, "trials": args.trials, "epochs": EPOCHS, "val_fraction": VAL_FRACTION,
                     "parallel": args.parallel, "threads_per_job": 1},
        "total_wall_seconds": round(time.perf_counter() - t0, 1),
        "summary": summary, "references": {name: _references(name) for name in sets}, "jobs": rows,
    })
    partial.unlink(missing_ok=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

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
``build_lstm``, so what differs is the objective, pruning, what is shipped, and the input
standardization: the two baseline searches scale every feature by its mean and standard deviation
(scikit-learn's ``StandardScaler``, what their users do), lstm-sweep by its own
``sweep.data.standardization`` (median and robust spread for heavy-tailed features: LSST only).
Each job is its own process and its wall time includes starting Python and importing TensorFlow.

    python benchmarks/quality.py                      # all sets, 3 seeds, 6 trials: ~1 h here
    python benchmarks/quality.py --sets ECG200 --seeds 1 --trials 2   # a smoke run

Writes ``benchmarks/results/quality.json`` (every job, plus the summary table).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
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
SWEEP_ARGS = "QUALITY_SWEEP_ARGS"  # how --sweep-args reaches the lstm_sweep job processes


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


def _feature_scaling(X: Any) -> tuple[Any, Any]:
    """The baseline searches' input scaling: scikit-learn's ``StandardScaler`` over all sequences
    and timesteps (a constant feature keeps scale 1), as float32 for the model's input layer.
    On the 18 training splits of this benchmark it is bitwise the mean/std the reused baseline
    jobs were run with."""
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X.reshape(-1, X.shape[-1]).astype(np.float64))
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def _train(params: Any, split: Any, data: Any, seed: int) -> tuple[Any, Any]:
    """Build with lstm-sweep's builder, compile with an accuracy metric, fit 20 epochs, keep the
    best ``val_accuracy`` epoch (what a tuner's checkpoint keeps)."""
    import keras

    from objectives import model as lstm

    lstm.reset_keras()
    keras.utils.set_random_seed(seed)
    mean, std = _feature_scaling(split.X_train)
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
    seen: list[dict[str, Any]] = []

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
        seen.append({"number": trial.number, "val_accuracy": keep.best, "params": params.to_dict(), **scores})
        if keep.best > best["value"]:
            best.update(value=keep.best, scores=scores, params=params.to_dict())
        return keep.best

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return {**best["scores"], "trials": trials, "epochs": EPOCHS * trials, "collapsed_trials": collapsed,
            "best_params": best["params"], "trial_rows": seen}


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

            from objectives import model as lstm

            params = params_of(hp)
            mean, std = _feature_scaling(split.X_train)
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
               "--retrain-top", "0", "--threads", "1", "--quiet", *shlex.split(os.environ.get(SWEEP_ARGS, ""))]
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sweep run failed: {done.stderr.strip()[-500:]}")
        study = optuna.load_study(study_name="q", storage=open_storage(storage, heartbeat=False))
        rows = [r for r in trial_rows(study) if not r["surplus"]]
        best = best_trial(study)
        from objectives.search_space import LstmParams

        counts = {"trials": len(rows), "epochs": sum(r["epochs_run"] or 0 for r in rows),
                  "collapsed_trials": sum(1 for r in rows if r["collapse"]),
                  "pruned": sum(1 for r in rows if r["state"] == "PRUNED"),
                  # every trial, to see what the architecture choices did (BENCHMARKS.md)
                  "trial_rows": [{key: r[key] for key in ("number", "state", "value", "val_balanced_accuracy",
                                                          "test_balanced_accuracy", "collapse", "epochs_run",
                                                          "duration_s", "params")} for r in rows]}
        if best is None or best.user_attrs["result"]["collapsed"]:
            # No trial completed, or the best is collapsed: no champion is registered, nothing is shipped. Scored as the constant predictor a user is
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
def _launch(name: str, seed: int, method: str, trials: int, sweep_args: str = "") -> dict[str, Any]:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", SWEEP_ARGS: sweep_args}
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


def _nothing_shipped(row: dict[str, Any]) -> bool:
    """lstm-sweep registers no champion when no trial completed or its best trial is collapsed
    (every complete trial then is): the user gets no model, scored as the constant predictor."""
    return bool(row.get("no_model")) or (row["method"] == "lstm_sweep" and bool(row.get("val_collapsed")))


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
                "shipped_collapsed": sum(bool(r["test_collapsed"]) and not _nothing_shipped(r) for r in mine),
                "nothing_shipped": sum(_nothing_shipped(r) for r in mine),
                "collapsed_trials": (sum(r["collapsed_trials"] for r in mine)
                                     if all(r.get("collapsed_trials") is not None for r in mine) else None),
                "epochs": sum(r["epochs"] for r in mine),
                "wall_seconds": round(sum(r["wall_seconds"] for r in mine), 1),
            })
    return out


def _reference_cells(name: str, refs: dict[str, Any]) -> str:
    """The published and computed reference points for one set, as one Markdown cell."""
    cells = []
    base = refs.get("computed_baselines", {})
    if "1NN-ED" in base:
        cells.append(f"1NN-ED {base['1NN-ED']['balanced_accuracy']:.3f} (acc {base['1NN-ED']['accuracy']:.3f})")
    if "1NN-DTW-full-window" in base:
        dtw = base["1NN-DTW-full-window"]
        cells.append(f"1NN-DTW {dtw['balanced_accuracy']:.3f} (acc {dtw['accuracy']:.3f})")
    for ref in refs.get("published", []):
        results = ref.get("results") or {}
        if "balanced accuracy" in (ref.get("metric") or ""):
            for model in ("fcn", "resnet"):
                if model in results:
                    r = results[model]
                    cells.append(f"{model.upper() if model == 'fcn' else 'ResNet'} {r['balanced_accuracy']:.3f} "
                                 f"(acc {r['accuracy']:.3f})")
    if not any(c.startswith(("FCN", "ResNet")) for c in cells):
        for ref in refs.get("published", []):
            results = ref.get("results") or {}
            if ref.get("metric") == "test accuracy" and "ResNet" in results:
                cells.append(f"ResNet acc {results['ResNet']['default_split']:.3f}")
    return "; ".join(cells)


def markdown(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables from a quality.json: per set, totals, and the architecture choices."""
    import numpy as np

    refs = doc["references"]
    sets = list(refs)
    summary = summarize(doc["jobs"], sets)  # from the jobs, so a report follows this file's rules
    lines = ["| set | method | test BA (mean ± std) | test acc | shipped collapsed / nothing shipped | collapsed trials "
             "| epochs | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in sets:
        mine = [s for s in summary if s["set"] == name]
        top = max(s["test_balanced_accuracy_mean"] for s in mine)
        for s in mine:
            ba = f"{s['test_balanced_accuracy_mean']:.3f} ± {s['test_balanced_accuracy_std']:.3f}"
            lines.append(f"| {name} | {s['method']} | {'**' + ba + '**' if s['test_balanced_accuracy_mean'] == top else ba} "
                         f"| {s['test_accuracy_mean']:.3f} | {s['shipped_collapsed']} / {s['nothing_shipped']} of {s['runs']} | "
                         f"{'-' if s['collapsed_trials'] is None else s['collapsed_trials']} | {s['epochs']} | "
                         f"{s['wall_seconds']:.0f} |")
        lines.append(f"| {name} | *references* | {_reference_cells(name, refs[name])} | | | | | |")
    lines += ["", "| method | mean test BA over sets | sets where best | shipped collapsed / nothing shipped | epochs | wall s "
              "| wall vs KerasTuner |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    kt_wall = sum(s["wall_seconds"] for s in summary if s["method"] == "kerastuner")
    for method in METHODS:
        mine = [s for s in summary if s["method"] == method]
        if not mine:
            continue
        wins = sum(1 for name in sets if max((s for s in summary if s["set"] == name),
                                             key=lambda s: s["test_balanced_accuracy_mean"])["method"] == method)
        wall = sum(s["wall_seconds"] for s in mine)
        lines.append(f"| {method} | {np.mean([s['test_balanced_accuracy_mean'] for s in mine]):.3f} | {wins} of {len(sets)} | "
                     f"{sum(s['shipped_collapsed'] for s in mine)} / {sum(s['nothing_shipped'] for s in mine)} of "
                     f"{sum(s['runs'] for s in mine)} | "
                     f"{sum(s['epochs'] for s in mine)} | {wall:.0f} | {wall / kt_wall:.2f}x |" if kt_wall else "")
    lines += ["", architecture_table(doc["jobs"])]
    return "\n".join(lines)


def architecture_table(jobs: list[dict[str, Any]]) -> str:
    """What each architecture choice scored over every trial of the lstm-sweep and Optuna searches
    (complete trials; val/test balanced accuracy minus the mean of the same search, so sets pool)."""
    import numpy as np

    choices = {"bidirectional": [False, True], "conv_filters": [0, 64], "pooling": ["last", "mean", "attention"],
               "masking": [False, True]}
    deltas: dict[tuple[str, Any], list[tuple[float, float]]] = {}
    chosen: dict[tuple[str, Any], int] = {}
    n_best = n_padded = 0
    for job in jobs:
        trials = [t for t in job.get("trial_rows") or [] if t.get("state", "COMPLETE") == "COMPLETE"
                  and t.get("test_balanced_accuracy") is not None]
        if len(trials) < 2:
            continue
        val_mean = np.mean([t["val_balanced_accuracy"] for t in trials])
        test_mean = np.mean([t["test_balanced_accuracy"] for t in trials])
        for t in trials:
            for key in choices:
                if key == "masking" and job["set"] != "JapaneseVowels":
                    continue
                value = t["params"].get(key, False if key in ("bidirectional", "masking") else
                                        (0 if key == "conv_filters" else "last"))
                deltas.setdefault((key, value), []).append((t["val_balanced_accuracy"] - val_mean,
                                                            t["test_balanced_accuracy"] - test_mean))
        if job.get("best_params"):
            n_best += 1
            for key in choices:
                if key == "masking" and job["set"] != "JapaneseVowels":
                    continue
                chosen[(key, job["best_params"].get(key))] = chosen.get((key, job["best_params"].get(key)), 0) + 1
            n_padded += job["set"] == "JapaneseVowels"
    lines = ["| choice | trials | val BA vs search mean | test BA vs search mean | picked by the search |",
             "| --- | --- | --- | --- | --- |"]
    for key, values in choices.items():
        for value in values:
            d = deltas.get((key, value))
            if not d:
                continue
            lines.append(f"| {key} = {value} | {len(d)} | {np.mean([a for a, _ in d]):+.3f} | "
                         f"{np.mean([b for _, b in d]):+.3f} | "
                         f"{chosen.get((key, value), 0)} of {n_padded if key == 'masking' else n_best} |")
    return "\n".join(lines)


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
    parser.add_argument("--seed-limit", nargs="*", default=[], metavar="SET=N",
                        help="run only the first N seeds on SET (a set too slow for every seed; say so where quoted)")
    parser.add_argument("--sweep-args", default="",
                        help="extra `sweep run` options for the lstm_sweep jobs, to measure a change to a default "
                             "(e.g. --sweep-args='--patience 20' --methods lstm_sweep --out quality-patience20)")
    parser.add_argument("--report", help="print the BENCHMARKS.md tables of a finished quality.json and exit")
    args = parser.parse_args()
    if args.job:
        run_job(args.job)
        return
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return
    if not DATASETS.is_dir():
        raise SystemExit(f"{DATASETS} not found: the quality benchmark needs the shared datasets beside the repository")
    sets = args.sets or sorted(p.stem for p in DATASETS.glob("*.npz"))
    # Interleaved (seed, set, method) so every method sees the same mix of load over the run.
    limits = {k: int(v) for k, v in (item.split("=") for item in args.seed_limit)}
    specs = [(name, seed, method) for seed in range(args.seeds) for name in sets for method in args.methods
             if seed < limits.get(name, args.seeds)]
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
        log.flush()
        futures = {pool.submit(_launch, *spec, args.trials, args.sweep_args): spec for spec in specs}
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
                      f"{s['test_accuracy_mean']:.3f}", f"{s['shipped_collapsed']} / {s['nothing_shipped']}",
                      "-" if s["collapsed_trials"] is None else str(s["collapsed_trials"]),
                      str(s["epochs"]), f"{s['wall_seconds']:.0f}"])
    print_table(f"Test scores, {args.seeds} seeds x {args.trials} trials, {EPOCHS}-epoch cap",
                ["set", "method", "test BA mean ± std", "test acc", "shipped collapsed / none", "collapsed trials",
                 "epochs", "wall s"], table)
    path = write_result(args.out, {
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
        "note": "jobs marked reused come from an earlier, interrupted run of the same command (see --reuse)",
        "settings": {"seeds": args.seeds, "seed_limits": limits, "trials": args.trials, "epochs": EPOCHS, "val_fraction": VAL_FRACTION,
                     "parallel": args.parallel, "threads_per_job": 1,
                     "sweep_args": args.sweep_args},
        "total_wall_seconds": round(time.perf_counter() - t0, 1),
        "summary": summary, "references": {name: _references(name) for name in sets}, "jobs": rows,
    })
    partial.unlink(missing_ok=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

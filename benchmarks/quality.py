"""Does lstm-sweep find better models than what users do today, for the same compute, and how far
is it from what a time-series practitioner would try first?

Four searches and two references, on every set in ``../shared/datasets``, 3 seeds each:

* ``recipe``: the fixed model from the popular answer users copy: LSTM(64, return_sequences) ->
  Dropout(0.2) -> LSTM(32) -> softmax, Adam 1e-3, scikit-learn "balanced" class weights,
  ReduceLROnPlateau(val_loss, 0.2, 3, 1e-5), 20 epochs, batch 32, raw inputs; ships its last epoch.
* ``kerastuner``: KerasTuner RandomSearch on ``val_accuracy`` (its usual objective); ships
  ``get_best_models()[0]`` (the best trial's best epoch).
* ``optuna_acc``: Optuna TPE (its defaults, no pruner) maximizing the best epoch's plain
  validation accuracy; ships the best trial's best epoch.
* ``lstm_sweep``: ``sweep run`` with its defaults (CLI, SQLite, MLflow, models logged), except
  ``--retrain-top 0`` (re-training only reports; it does not change the model shipped) and
  ``--threads 1``; ships the champion (scored through ``sweep predict``, the user's path).
* references, fit on the set's whole training part (the archive's protocol), scored on its test
  part: ``nn1_euclid``, scikit-learn ``KNeighborsClassifier(n_neighbors=1)`` on the flattened
  series (timesteps x features) with **no scaling**: the archive's values as given (the UCR 2018
  univariate series come z-normalized per series; JapaneseVowels is zero-padded), which is how
  the archive's 1-NN Euclidean baseline is computed (it reproduces the published errors);
  ``minirocket``, aeon's ``MiniRocketClassifier`` (10,000 kernels, ridge, one thread,
  ``random_state`` = the seed), same raw input. Both also record the score when fit on the
  searches' 80% training part only, and MiniRocket its fit time.

Equal budgets, trial mode (the default): the same trials (``--trials``), the same 20-epoch cap, the
same stratified 80/20 train/validation split of the training part (``sweep.data.split_stratified``
with the repeat's seed), the same test part, one TensorFlow thread per job, two jobs at a time on
the 2 cores. The three searches share one space: lstm-sweep's default space (``SearchSpace()``,
asked through the same ``sample_params``; the peers do not search the learning-rate schedule, they
train with Adam's constant rate), built with the same ``build_lstm``, so what differs is the
objective, pruning, the schedule, what is shipped, and the input standardization: the two baseline
searches scale every feature by its mean and standard deviation (scikit-learn's ``StandardScaler``,
what their users do), lstm-sweep by its own ``sweep.data.standardization``
(median and robust spread for heavy-tailed features: LSST only). Each job is its own process and
its wall time includes starting Python and importing TensorFlow.

Budget mode (``--budget 10m``): every search gets the same wall time per set and seed, and runs
alone on the machine (one job at a time, ``--parallel 1``) with ``--workers`` (default 2) ways of
parallelism:

* ``lstm_sweep``: ``sweep run DATA --budget B --workers 2 --threads 1`` with every other setting
  its budget default (the whole command, search + re-training + registration, is in B);
* ``optuna_acc``: 2 worker processes (one TensorFlow thread each) on one study in an Optuna
  journal file, each ``study.optimize(..., timeout=)`` up to the job's deadline, TPE seeded
  ``seed * 1000 + worker``;
* ``kerastuner``: one process with 2 TensorFlow threads (KerasTuner runs one trial at a time on a
  machine; its parallel mode needs a gRPC chief), ``max_trials`` 10,000 and an oracle that stops
  creating trials at the deadline.

The clock starts as lstm-sweep's does: when start-up is done (TensorFlow imported, data loaded;
for plain Optuna every worker process ready, at the latest 60 s after the job's launch). The peers
search until start + B; lstm-sweep's B holds its search, re-training and registration, so the
peers get slightly more search time. For all three a running trial stops at the first epoch end
past the search's end and keeps its best epoch; then the best model is scored (a few seconds,
outside B). The peers keep the 20-epoch cap (what their users set); lstm-sweep uses its own budget
defaults (100-epoch cap, Hyperband). References run as in trial mode.

    python benchmarks/quality.py                      # all sets, 3 seeds, 6 trials: ~2.5 h here
    python benchmarks/quality.py --methods nn1_euclid minirocket   # the references only: ~5 min
    python benchmarks/quality.py --quick --budget 5m  # 1 seed, ECG200/Strawberry/MedicalImages: ~50 min
    python benchmarks/quality.py --sets ECG200 --seeds 1 --trials 2   # a smoke run
    python benchmarks/quality.py --report benchmarks/results/quality.json   # the BENCHMARKS.md tables

Writes ``benchmarks/results/quality[-budget][-quick].json`` (every job, plus the summary table).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (quiet TensorFlow, repository on sys.path)
from _common import REPO, load_average, print_table, write_result

# The shared sets beside the repository; --datasets (or QUALITY_DATASETS) for a checkout elsewhere.
DATASETS = Path(os.environ.get("QUALITY_DATASETS") or REPO.parent / "shared" / "datasets")
METHODS = ("recipe", "kerastuner", "optuna_acc", "lstm_sweep")  # the searches (and the recipe)
REFERENCES = ("nn1_euclid", "minirocket")  # fit on the whole training part, no search
ALL_METHODS = METHODS + REFERENCES
BUDGET_METHODS = ("kerastuner", "optuna_acc", "lstm_sweep")  # what budget mode gives the same wall time
QUICK_SETS = ("ECG200", "Strawberry", "MedicalImages")  # where lstm-sweep loses to 1-NN: for iterating
KT_MAX_TRIALS = 10_000  # budget mode: the deadline, not the trial count, ends KerasTuner's search
LIMIT_MARGIN = 0.03  # "within 0.03 of MiniRocket"
EPOCHS = 20
VAL_FRACTION = 0.2  # lstm-sweep's default; every method gets this same split
SWEEP_ARGS = "QUALITY_SWEEP_ARGS"  # how --sweep-args reaches the lstm_sweep job processes


# -- one job (runs in its own process) -------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """Budget mode: ``seconds`` is the time each method gets per set and seed; ``workers`` the
    parallel trials (lstm-sweep's ``--workers``, plain Optuna's processes) or KerasTuner's
    TensorFlow threads (it runs one trial at a time). ``deadline`` (wall clock, ``time.time()``, the
    same in every process) is set by :meth:`start` when the job's start-up is done."""

    seconds: float
    workers: int = 2
    deadline: float | None = None

    def start(self) -> Budget:
        """The clock starts now (unless it already has)."""
        return self if self.deadline is not None else replace(self, deadline=time.time() + self.seconds)

    def left(self) -> float:
        assert self.deadline is not None, "the budget's clock has not started"
        return max(0.0, self.deadline - time.time())


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


class _StopAtDeadline:
    """Keras callback for budget mode: stops training at the first epoch end past ``deadline`` (the
    rule lstm-sweep's ``--budget`` uses; the best epoch so far is kept) and counts the epochs run
    through ``tick`` (a function, so KerasTuner's deep copy of its callbacks still counts)."""

    def __new__(cls, deadline: float | None, tick: Any = None) -> Any:
        import keras

        class StopAtDeadline(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if tick is not None:
                    tick()
                if deadline is not None and time.time() >= deadline:
                    self.model.stop_training = True

        return StopAtDeadline()


def job_recipe(path: Path, seed: int, trials: int, budget: Budget | None = None) -> dict[str, Any]:
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


def _peer_space() -> Any:
    """lstm-sweep's default space as the peers search it: every knob but the learning-rate schedule
    (the peers train with Adam's constant rate for their 20 epochs, as their users do), asked through
    ``objectives.search_space.sample_params`` as lstm-sweep asks it (the architecture first; Conv1D
    filters only for the stacked LSTM; pooling, masking, the FCN width and downsampling only where they
    can matter). Older peer jobs: the FCN width asked since 2026-12-01 (before, LSTM-FCN at 128),
    downsampling since 2026-12-02 (before, long series as given), this ask order since 2026-12-02
    (before, the same space in another order: the same distribution, other draws for a seed)."""
    from objectives.search_space import LstmParams, SearchSpace

    return replace(SearchSpace(), lr_schedule=(LstmParams().lr_schedule,))


def _feature_scaling(X: Any) -> tuple[Any, Any]:
    """The baseline searches' input scaling: scikit-learn's ``StandardScaler`` over all sequences
    and timesteps (a constant feature keeps scale 1), as float32 for the model's input layer.
    On the 18 training splits of this benchmark it is bitwise the mean/std the reused baseline
    jobs were run with."""
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X.reshape(-1, X.shape[-1]).astype(np.float64))
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def _train(params: Any, split: Any, data: Any, seed: int, deadline: float | None = None) -> tuple[Any, Any]:
    """Build with lstm-sweep's builder, compile with an accuracy metric, fit 20 epochs (or until the
    budget's deadline), keep the best ``val_accuracy`` epoch (what a tuner's checkpoint keeps)."""
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
              class_weight=weights, verbose=0, callbacks=[keep, _StopAtDeadline(deadline)])
    model.set_weights(keep.weights)
    return model, keep


def _optuna_objective(path: Path, seed: int, deadline: float | None, worker: int = 0) -> Any:
    """Plain Optuna's objective: the best epoch's validation accuracy; every trial's scores and
    params go into its user attributes (so trials from several worker processes can be read back)."""
    import optuna

    from objectives.search_space import suggest_params
    from sweep.data import is_padded

    data, split = _data(path, seed)
    padded = is_padded(split.X_train)

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, _peer_space(), padded=padded, features=data.features,
                                timesteps=data.timesteps)
        model, keep = _train(params, split, data, seed + trial.number, deadline)
        scores = _score(model, split, data.n_classes)
        trial.set_user_attr("row", {"number": trial.number, "worker": worker, "objective": keep.best,
                                    "epochs_run": keep.epochs, "params": params.to_dict(), **scores})
        return keep.best

    return objective


def _journal(path: str) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


def job_optuna_acc(path: Path, seed: int, trials: int, budget: Budget | None = None) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="optuna-") as folder:
        if budget is None:  # trial mode: one process, the trials one after another
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
            study.optimize(_optuna_objective(path, seed, None), n_trials=trials)
        else:  # budget mode: worker processes on one journal-file study until the deadline
            journal = f"{folder}/journal.log"
            optuna.create_study(study_name="q", storage=_journal(journal), direction="maximize")
            launched = time.time()
            workers = [subprocess.Popen(
                [sys.executable, __file__, "--job", json.dumps({
                    "set": str(path), "seed": seed, "method": "optuna_worker", "worker": worker, "journal": journal,
                    "sync": folder, "budget_s": budget.seconds, "workers": budget.workers, "epochs": EPOCHS})],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for worker in range(budget.workers)]
            # lstm-sweep's start-up rule: the clock starts when every worker is ready, at the latest 60 s after launch
            while (time.time() < launched + 60 and any(w.poll() is None for w in workers)
                   and not all(Path(folder, f"ready-{i}").exists() for i in range(budget.workers))):
                time.sleep(0.2)
            budget = budget.start()
            Path(folder, "deadline.tmp").write_text(repr(budget.deadline))
            Path(folder, "deadline.tmp").rename(Path(folder, "deadline"))
            errors = [w.communicate()[1] for w in workers]
            search_seconds = round(time.time() - launched, 1)  # start-up included
            if any(w.returncode for w in workers):
                raise RuntimeError(f"an Optuna worker failed: {[e.strip()[-400:] for e in errors if e.strip()]}")
            study = optuna.load_study(study_name="q", storage=_journal(journal))
        seen = [t.user_attrs["row"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not seen:
        raise RuntimeError("no Optuna trial completed in the budget")
    timing = {"search_seconds": search_seconds} if budget is not None else {}
    best = max(seen, key=lambda r: (r["objective"], -r["number"]))  # Optuna's best trial: the first of the top
    scores = {k: best[k] for k in best if k.startswith(("val_", "test_"))}
    return {**scores, "trials": len(seen),
            "epochs": sum(r["epochs_run"] for r in seen), "collapsed_trials": sum(bool(r["val_collapsed"]) for r in seen),
            "best_params": best["params"], "trial_rows": sorted(seen, key=lambda r: r["number"]), **timing}


def optuna_worker(path: Path, seed: int, worker: int, journal: str, sync: str) -> None:
    """One of plain Optuna's budget-mode processes: once started up (TensorFlow, data), says so in
    ``sync`` and waits for the deadline the job writes there; then TPE (seeded per worker, or both
    would propose the same first trials) on the shared study until the deadline (``timeout=``; the
    trial running at the deadline stops at its next epoch end)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="q", storage=_journal(journal),
                              sampler=optuna.samplers.TPESampler(seed=seed * 1000 + worker))
    _data(path, seed)  # start-up: the data read (and cached by the OS) before the clock starts
    Path(sync, f"ready-{worker}").touch()
    deadline_file = Path(sync, "deadline")
    waited = time.time()
    while not deadline_file.exists():
        if time.time() > waited + 120:
            raise RuntimeError("the job never started the budget's clock")
        time.sleep(0.1)
    deadline = float(deadline_file.read_text())
    objective = _optuna_objective(path, seed, deadline, worker)
    if deadline > time.time():
        study.optimize(objective, timeout=deadline - time.time())


def job_kerastuner(path: Path, seed: int, trials: int, budget: Budget | None = None) -> dict[str, Any]:
    import keras_tuner as kt

    from objectives.search_space import sample_params
    from sweep.data import is_padded

    data, split = _data(path, seed)
    padded = is_padded(split.X_train)
    budget = budget.start() if budget is not None else None  # start-up done: TensorFlow, KerasTuner, data
    deadline = budget.deadline if budget is not None else None
    epochs_run = [0]

    def tick() -> None:
        epochs_run[0] += 1

    def params_of(hp: Any) -> Any:
        def get(name: str, kind: str, spec: Any) -> Any:  # sample_params's protocol in KerasTuner's terms
            if kind == "choice":
                return hp.Choice(name, spec) if not all(isinstance(v, bool) for v in spec) else hp.Boolean(name)
            low, high, log = spec
            sampling = "log" if log else "linear"
            return (hp.Int if kind == "int" else hp.Float)(name, low, high, sampling=sampling)

        return sample_params(get, _peer_space(), padded=padded, features=data.features, timesteps=data.timesteps)

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

    class DeadlineOracle(kt.oracles.RandomSearchOracle):
        """RandomSearch's oracle that creates no trial past the budget's deadline."""

        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if deadline is not None and time.time() >= deadline:
                return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
            return super().populate_space(trial_id)

    with tempfile.TemporaryDirectory(prefix="kt-") as folder:
        # RandomSearch is exactly Tuner(RandomSearchOracle(...)); the subclass only adds the deadline.
        oracle = DeadlineOracle(objective="val_accuracy", max_trials=trials if budget is None else KT_MAX_TRIALS,
                                seed=seed)
        tuner = kt.Tuner(oracle=oracle, hypermodel=Model(), directory=folder, project_name="kt", overwrite=True)
        tuner.search(split.X_train, split.y_train, validation_data=(split.X_val, split.y_val), epochs=EPOCHS,
                     verbose=0, callbacks=[_StopAtDeadline(deadline, tick)])
        # budget mode: from the clock's start to the search's end (the last epoch ends past the deadline)
        timing = {"search_seconds": round(time.time() - deadline + budget.seconds, 1)} if budget and deadline else {}
        model = tuner.get_best_models(1)[0]
        best_hp = tuner.get_best_hyperparameters(1)[0]
        scores = _score(model, split, data.n_classes)
        done = sum(1 for t in tuner.oracle.trials.values() if t.status == kt.engine.trial.TrialStatus.COMPLETED)
    return {**scores, "trials": done, "epochs": epochs_run[0], "collapsed_trials": None,
            "best_params": params_of(best_hp).to_dict(), **timing}


def sweep_command(path: Path, seed: int, trials: int, budget: Budget | None, storage: str, tracking: str,
                  extra: str = "") -> list[str]:
    """The ``sweep run`` command of an lstm_sweep job. Trial mode: the shared 20-epoch cap and
    ``--retrain-top 0``; budget mode: ``--budget`` and ``--workers``, every other setting the
    budget's default (its re-training and registration count in the budget)."""
    cmd = [str(Path(sys.executable).parent / "sweep"), "run", str(path), "--study", "q", "--storage", storage,
           "--tracking-uri", tracking, "--seed", str(seed), "--threads", "1", "--quiet"]
    if budget is None:
        cmd += ["--n-trials", str(trials), "--epochs", str(EPOCHS), "--retrain-top", "0"]
    else:
        cmd += ["--budget", f"{budget.seconds:g}s", "--workers", str(budget.workers)]
    return cmd + shlex.split(extra)


def _champion_predictions(path: Path, storage: str, tracking: str, folder: str, expected: bool) -> Any:
    """The class ids the shipped champion predicts for the set's test part, through ``sweep predict``
    (what a user runs); None when there is none and none was ``expected`` (no trial completed, or
    the best one collapsed: lstm-sweep registers no collapsed champion)."""
    import csv

    import numpy as np

    out = f"{folder}/predictions.csv"
    done = subprocess.run([str(Path(sys.executable).parent / "sweep"), "predict", "q", str(path), "--storage", storage,
                           "--tracking-uri", tracking, "--out", out], cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if not expected:
            return None
        raise RuntimeError(f"sweep predict failed: {done.stderr.strip()[-500:]}")
    with open(out, newline="") as handle:
        return np.array([int(row["label"]) for row in csv.DictReader(handle)])


def job_lstm_sweep(path: Path, seed: int, trials: int, budget: Budget | None = None) -> dict[str, Any]:
    import numpy as np
    import optuna

    from objectives.metrics import evaluate_predictions
    from objectives.records import TrialResult
    from sweep.ranking import best_trial
    from sweep.records import record_of, trial_records
    from sweep.storage import open_storage

    data, split = _data(path, seed)
    with tempfile.TemporaryDirectory(prefix="quality-") as folder:
        storage, tracking = f"sqlite:///{folder}/sweep.db", f"sqlite:///{folder}/mlflow.db"
        cmd = sweep_command(path, seed, trials, budget, storage, tracking, os.environ.get(SWEEP_ARGS, ""))
        t0, launched = time.perf_counter(), time.time()
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
        sweep_wall = round(time.perf_counter() - t0, 1)
        if done.returncode != 0:
            raise RuntimeError(f"sweep run failed: {done.stderr.strip()[-500:]}")
        study = optuna.load_study(study_name="q", storage=open_storage(storage, heartbeat=False))
        clock = study.user_attrs.get("deadline") if budget is not None else None  # the budget's stored clock
        shown = subprocess.run([str(Path(sys.executable).parent / "sweep"), "best", "q", "--storage", storage, "--json"],
                               cwd=folder, capture_output=True, text=True, check=False)
        summary = json.loads(shown.stdout) if shown.returncode == 0 else {}
        selection, shipped_as = summary.get("selection"), summary.get("shipped")
        records = [r for r in trial_records(study) if not r.surplus]
        best = best_trial(study)
        best_result = record_of(best).result if best is not None else None
        predicted = _champion_predictions(path, storage, tracking, folder,
                                          expected=best_result is not None and not best_result.collapsed)
    counts = {"trials": len(records), "epochs": sum(r.epochs_run or 0 for r in records),
              "collapsed_trials": sum(1 for r in records if r.near_collapse),
              "pruned": sum(1 for r in records if r.state == "PRUNED"), "sweep_wall_seconds": sweep_wall,
              # budget mode: when the clock started after launch (start-up), and the champion's selection
              "startup_seconds": round(clock["started_at"] - launched, 1) if clock and "started_at" in clock else None,
              "selection": selection,
              # the refit (sweep.refit) or fold ensemble (sweep.ensemble) that shipped in place of the chosen
              # trial's own model, if any
              "shipped_as": shipped_as,
              # --ship auto: the refit's length tested on the re-training's folds (sweep.refit.check_length)
              "length_check": summary.get("length_check"),
              # the top-k re-training's runs (fold, epochs, stopped by the budget, val/test), for the selection
              "retrained": (study.user_attrs.get("retrained") or {}).get("results"),
              "sweep_command": " ".join(["sweep", *cmd[1:]]),
              # every trial, to see what the architecture choices did (BENCHMARKS.md)
              "trial_rows": [{key: row.get(key) for key in ("number", "state", "value", "val_balanced_accuracy",
                                                            "test_balanced_accuracy", "near_collapse", "epochs_run",
                                                            "duration_s", "params")}
                             for row in (r.to_dict() for r in records)]}
    if predicted is None:
        # No champion registered (no trial completed, or every one collapsed): nothing is shipped. Scored as the
        # constant predictor a user is left with (balanced accuracy 1/k), never left out of the mean.
        majority = np.bincount(split.y_train).argmax()
        return {"val_balanced_accuracy": 1 / data.n_classes, "val_accuracy": None, "val_collapsed": True,
                "test_balanced_accuracy": 1 / data.n_classes,
                "test_accuracy": float(np.mean(split.y_test == majority)), "test_collapsed": True,
                "no_model": True, **counts, "best_params": None}
    shipped = evaluate_predictions(split.y_test, predicted, data.n_classes)
    result = best_result or TrialResult()
    return {
        # validation: the search's best trial (the champion unless the re-training chose another)
        "val_balanced_accuracy": result.val_balanced_accuracy, "val_accuracy": result.val_accuracy,
        "val_collapsed": result.collapsed,
        "test_balanced_accuracy": shipped.balanced_accuracy, "test_accuracy": shipped.accuracy,
        "test_collapsed": shipped.collapsed, "best_trial_test_balanced_accuracy": result.test_balanced_accuracy,
        **counts, "best_params": dict(best.params) if best is not None else None,
    }


def _reference(path: Path, seed: int, fit_predict: Any) -> dict[str, Any]:
    """A reference fit on the set's whole training part (the archive's protocol) and scored on its
    test part; also fit on the searches' 80% training part, to show what the held-out 20% costs."""
    from objectives.metrics import evaluate_predictions

    data, split = _data(path, seed)
    fit_s, predict_s, predicted = fit_predict(data.X_train, data.y_train, data.X_test)
    ev = evaluate_predictions(data.y_test, predicted, data.n_classes)
    part = evaluate_predictions(data.y_test, fit_predict(split.X_train, split.y_train, data.X_test)[2], data.n_classes)
    return {"val_balanced_accuracy": None, "val_accuracy": None, "val_collapsed": None,
            "test_balanced_accuracy": ev.balanced_accuracy, "test_accuracy": ev.accuracy,
            "test_collapsed": ev.collapsed, "fit_seconds": round(fit_s, 2), "predict_seconds": round(predict_s, 2),
            "train_part_test_balanced_accuracy": part.balanced_accuracy,
            "trials": None, "epochs": 0, "collapsed_trials": None}


def job_nn1_euclid(path: Path, seed: int, trials: int, budget: Budget | None = None) -> dict[str, Any]:
    """1-NN Euclidean on the flattened series, unscaled (the archive's values); no randomness, so
    every seed gives the same test score (the 80% part differs by seed)."""
    from sklearn.neighbors import KNeighborsClassifier

    def fit_predict(X: Any, y: Any, X_test: Any) -> tuple[float, float, Any]:
        t0 = time.perf_counter()
        clf = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(X.reshape(len(X), -1), y)
        t1 = time.perf_counter()
        predicted = clf.predict(X_test.reshape(len(X_test), -1))
        return t1 - t0, time.perf_counter() - t1, predicted

    return {**_reference(path, seed, fit_predict), "scaling": "none"}


def job_minirocket(path: Path, seed: int, trials: int, budget: Budget | None = None) -> dict[str, Any]:
    """aeon's MiniRocketClassifier (defaults: 10,000 kernels, ridge with built-in CV), one thread,
    on the archive's values as (n, features, timesteps); series shorter than 9 steps (MiniRocket's
    minimum) are zero-padded at the end. ``fit_seconds``: the fit on the whole training part,
    after a warm-up fit (numba's compile is not MiniRocket's training time)."""
    import numpy as np
    from aeon.classification.convolution_based import MiniRocketClassifier

    def layout(X: Any) -> Any:
        X = np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float64)
        return np.pad(X, ((0, 0), (0, 0), (0, max(0, 9 - X.shape[2]))))

    # numba compiles MiniRocket's kernels on a process's first fit (a minute here; cached on disk after):
    # a warm-up fit on a few series first, so the fit time is MiniRocket's and not the compiler's.
    warm = layout(_data(path, seed)[0].X_train[:12])
    MiniRocketClassifier(random_state=seed, n_jobs=1).fit(warm, np.arange(len(warm)) % 2).predict(warm)

    def fit_predict(X: Any, y: Any, X_test: Any) -> tuple[float, float, Any]:
        t0 = time.perf_counter()
        clf = MiniRocketClassifier(random_state=seed, n_jobs=1).fit(layout(X), y)
        t1 = time.perf_counter()
        predicted = clf.predict(layout(X_test))
        return t1 - t0, time.perf_counter() - t1, predicted

    return {**_reference(path, seed, fit_predict), "scaling": "none"}


JOBS = {"recipe": job_recipe, "kerastuner": job_kerastuner, "optuna_acc": job_optuna_acc, "lstm_sweep": job_lstm_sweep,
        "nn1_euclid": job_nn1_euclid, "minirocket": job_minirocket}


def run_job(text: str) -> None:
    """``--job JSON``: one job in this process (TensorFlow threads: 1, KerasTuner's budget mode
    ``workers``); prints its JSON result. Also one of plain Optuna's budget-mode workers."""
    global EPOCHS
    spec = json.loads(text)
    EPOCHS = int(spec.get("epochs", EPOCHS))
    path = Path(spec["set"]) if spec["set"].endswith(".npz") else DATASETS / f"{spec['set']}.npz"
    budget = Budget(spec["budget_s"], spec["workers"]) if spec.get("budget_s") else None
    if spec["method"] not in REFERENCES:  # the references need no TensorFlow
        from objectives.model import configure_threads

        configure_threads(budget.workers if budget is not None and spec["method"] == "kerastuner" else 1)
    if spec["method"] == "optuna_worker":
        optuna_worker(path, int(spec["seed"]), int(spec["worker"]), spec["journal"], spec["sync"])
        return
    result = JOBS[spec["method"]](path, int(spec["seed"]), int(spec.get("trials") or 0), budget)
    print("RESULT " + json.dumps(result))


# -- the driver ------------------------------------------------------------------------------------
def _launch(name: str, seed: int, method: str, trials: int, sweep_args: str = "", budget_s: float | None = None,
            workers: int = 2) -> dict[str, Any]:
    t0 = time.perf_counter()
    spec = {"set": name, "seed": seed, "method": method, "trials": trials, "epochs": EPOCHS, "workers": workers,
            "budget_s": budget_s if method not in REFERENCES else None}
    env = {**os.environ, "PYTHONWARNINGS": "ignore", SWEEP_ARGS: sweep_args}
    load_start = load_average()
    done = subprocess.run([sys.executable, __file__, "--job", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    wall = time.perf_counter() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    row: dict[str, Any] = {"set": name, "seed": seed, "method": method, "wall_seconds": round(wall, 1),
                           "budget_seconds": spec["budget_s"], "workers": workers if spec["budget_s"] else None,
                           "load_average_start": load_start, "load_average_end": load_average()}
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
        for method in ALL_METHODS:
            mine = [r for r in rows if r["set"] == name and r["method"] == method and "error" not in r]
            if not mine:
                continue
            ba, ba_sd = _mean_std([r["test_balanced_accuracy"] for r in mine])
            acc, acc_sd = _mean_std([r["test_accuracy"] for r in mine])
            entry = {
                "set": name, "method": method, "runs": len(mine),
                "test_balanced_accuracy_mean": ba, "test_balanced_accuracy_std": ba_sd,
                "test_accuracy_mean": acc, "test_accuracy_std": acc_sd,
                "val_balanced_accuracy_mean": _mean_std([r["val_balanced_accuracy"] for r in mine
                                                         if r.get("val_balanced_accuracy") is not None])[0],
                "shipped_collapsed": sum(bool(r["test_collapsed"]) and not _nothing_shipped(r) for r in mine),
                "nothing_shipped": sum(_nothing_shipped(r) for r in mine),
                "collapsed_trials": (sum(r["collapsed_trials"] for r in mine)
                                     if all(r.get("collapsed_trials") is not None for r in mine) else None),
                "trials": sum(r.get("trials") or 0 for r in mine),
                "epochs": sum(r.get("epochs") or 0 for r in mine),
                "wall_seconds": round(sum(r["wall_seconds"] for r in mine), 1),
            }
            if method in REFERENCES:
                entry["fit_seconds_mean"] = _mean_std([r["fit_seconds"] for r in mine])[0]
                entry["train_part_test_balanced_accuracy_mean"] = _mean_std(
                    [r["train_part_test_balanced_accuracy"] for r in mine])[0]
            out.append(entry)
    return out


def limit_checks(summary: list[dict[str, Any]], sets: list[str]) -> dict[str, dict[str, Any]]:
    """Per search: the sets where its mean test balanced accuracy is at or above 1-NN Euclidean's and
    within ``LIMIT_MARGIN`` of MiniRocket's (issue targets), and its mean against MiniRocket's over
    the sets that have both references and the search."""
    import numpy as np

    ba = {(s["set"], s["method"]): s["test_balanced_accuracy_mean"] for s in summary}
    out = {}
    for method in METHODS:
        mine = [n for n in sets if (n, method) in ba and (n, "nn1_euclid") in ba and (n, "minirocket") in ba]
        if not mine:
            continue
        out[method] = {
            "sets": mine,
            "at_or_above_nn1": [n for n in mine if ba[(n, method)] >= ba[(n, "nn1_euclid")]],
            "within_margin_of_minirocket": [n for n in mine if ba[(n, method)] >= ba[(n, "minirocket")] - LIMIT_MARGIN],
            "mean": float(np.mean([ba[(n, method)] for n in mine])),
            "nn1_mean": float(np.mean([ba[(n, "nn1_euclid")] for n in mine])),
            "minirocket_mean": float(np.mean([ba[(n, "minirocket")] for n in mine])),
        }
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
    """The BENCHMARKS.md tables from a quality.json: against the references (1-NN, MiniRocket) with
    the issue's checks, per set, totals, and the architecture choices."""
    import numpy as np

    refs = doc["references"]
    sets = list(refs)
    summary = summarize(doc["jobs"], sets)  # from the jobs, so a report follows this file's rules
    lines = [limit_table(summary, sets)]
    searches = [s for s in summary if s["method"] in METHODS]
    if not searches:  # a references-only run
        return "\n".join(lines)
    lines.append("")
    lines += [("| set | method | test BA (mean ± std) | test acc | shipped collapsed / nothing shipped | collapsed trials "
               "| trials | epochs | wall s |"),
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in sets:
        mine = [s for s in searches if s["set"] == name]
        if not mine:
            continue
        top = max(s["test_balanced_accuracy_mean"] for s in mine)
        for s in mine:
            ba = f"{s['test_balanced_accuracy_mean']:.3f} ± {s['test_balanced_accuracy_std']:.3f}"
            lines.append(f"| {name} | {s['method']} | {'**' + ba + '**' if s['test_balanced_accuracy_mean'] == top else ba} "
                         f"| {s['test_accuracy_mean']:.3f} | {s['shipped_collapsed']} / {s['nothing_shipped']} of {s['runs']} | "
                         f"{'-' if s['collapsed_trials'] is None else s['collapsed_trials']} | {s['trials']} | {s['epochs']} | "
                         f"{s['wall_seconds']:.0f} |")
        lines.append(f"| {name} | *published* | {_reference_cells(name, refs[name])} | | | | | | |")
    lines += ["", ("| method | mean test BA over sets | sets where best | shipped collapsed / nothing shipped | trials "
                   "| epochs | wall s | wall vs KerasTuner |"),
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    kt_wall = sum(s["wall_seconds"] for s in searches if s["method"] == "kerastuner")
    for method in METHODS:
        mine = [s for s in searches if s["method"] == method]
        if not mine:
            continue
        wins = sum(1 for name in sets if any(s["set"] == name for s in searches) and max(
            (s for s in searches if s["set"] == name), key=lambda s: s["test_balanced_accuracy_mean"])["method"] == method)
        wall = sum(s["wall_seconds"] for s in mine)
        lines.append(f"| {method} | {np.mean([s['test_balanced_accuracy_mean'] for s in mine]):.3f} | {wins} of "
                     f"{len(mine)} | {sum(s['shipped_collapsed'] for s in mine)} / {sum(s['nothing_shipped'] for s in mine)} "
                     f"of {sum(s['runs'] for s in mine)} | {sum(s['trials'] for s in mine)} | "
                     f"{sum(s['epochs'] for s in mine)} | {wall:.0f} | {f'{wall / kt_wall:.2f}x' if kt_wall else '-'} |")
    lines += ["", architecture_table(doc["jobs"])]
    return "\n".join(lines)


def limit_table(summary: list[dict[str, Any]], sets: list[str]) -> str:
    """Mean test balanced accuracy per set: the two references beside every search, and the checks
    "at or above 1-NN on every set" and "within 0.03 of MiniRocket" per search."""
    cell = {(s["set"], s["method"]): s for s in summary}
    present = [m for m in REFERENCES + METHODS if any(s["method"] == m for s in summary)]
    head = ["set", *("1-NN ED" if m == "nn1_euclid" else "MiniRocket (fit s)" if m == "minirocket" else m
                     for m in present)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in sets:
        row = [name]
        for m in present:
            s = cell.get((name, m))
            if s is None:
                row.append("-")
                continue
            text = f"{s['test_balanced_accuracy_mean']:.3f}"
            if s["runs"] > 1 and m != "nn1_euclid":
                text += f" ± {s['test_balanced_accuracy_std']:.3f}"
            if m == "minirocket":
                text += f" ({s['fit_seconds_mean']:.0f} s)"
            if m in METHODS and (name, "nn1_euclid") in cell and (name, "minirocket") in cell:
                below_nn = s["test_balanced_accuracy_mean"] < cell[(name, "nn1_euclid")]["test_balanced_accuracy_mean"]
                far = s["test_balanced_accuracy_mean"] < cell[(name, "minirocket")]["test_balanced_accuracy_mean"] - LIMIT_MARGIN
                text += " " + ("<1-NN" if below_nn else "≥1-NN") + (", >0.03 below MR" if far else ", within 0.03 of MR")
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    checks = limit_checks(summary, sets)
    if checks:
        lines += ["", "| method | at or above 1-NN | within 0.03 of MiniRocket | mean test BA | 1-NN mean | MiniRocket mean |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for method, c in checks.items():
            n = len(c["sets"])
            lines.append(f"| {method} | {len(c['at_or_above_nn1'])} of {n} | {len(c['within_margin_of_minirocket'])} of {n} "
                         f"| {c['mean']:.3f} | {c['nn1_mean']:.3f} | {c['minirocket_mean']:.3f} |")
    return "\n".join(lines)


def architecture_table(jobs: list[dict[str, Any]]) -> str:
    """What each architecture choice scored over every trial of the lstm-sweep and Optuna searches
    (complete trials; val/test balanced accuracy minus the mean of the same search, so sets pool)."""
    import numpy as np

    choices = {"architecture": ["stacked", "lstm_fcn"], "bidirectional": [False, True], "conv_filters": [0, 64],
               "pooling": ["last", "mean", "attention"], "masking": [False, True]}
    defaults = {"architecture": "stacked", "bidirectional": False, "masking": False, "conv_filters": 0, "pooling": "last"}
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
                value = t["params"].get(key, defaults[key])
                deltas.setdefault((key, value), []).append((t["val_balanced_accuracy"] - val_mean,
                                                            t["test_balanced_accuracy"] - test_mean))
        if job.get("best_params"):
            n_best += 1
            for key in choices:
                if key == "masking" and job["set"] != "JapaneseVowels":
                    continue
                value = job["best_params"].get(key, defaults[key])
                chosen[(key, value)] = chosen.get((key, value), 0) + 1
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


def _reusable(path: Path) -> list[dict[str, Any]]:
    """Finished jobs of an earlier run: a ``.partial.jsonl`` (one job a line) or a finished ``.json``."""
    text = path.read_text()
    if path.suffix == ".json":
        return list(json.loads(text)["jobs"])
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def reusable_rows(old: list[dict[str, Any]], specs: list[tuple[str, int, str]], budget_s: float | None,
                  rerun: list[str]) -> list[dict[str, Any]]:
    """The finished jobs of an earlier run that this run keeps: one of its (set, seed, method) specs,
    no error, not a ``--rerun`` method, and the same mode (the same budget, or both trial mode);
    the references do not depend on the mode."""
    keep = []
    for row in old:
        same_mode = row["method"] in REFERENCES or row.get("budget_seconds") == budget_s
        if "error" not in row and same_mode and row["method"] not in rerun and (row["set"], row["seed"], row["method"]) in specs:
            keep.append(row | {"reused": True})
    return keep


def main() -> None:
    from sweep.budget import parse_duration

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--sets", nargs="*", help="dataset names (default: every .npz in --datasets)")
    parser.add_argument("--datasets", help="the folder of the .npz sets (default ../shared/datasets beside the "
                                           "repository, or $QUALITY_DATASETS)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6, help="trial mode: trials per search")
    parser.add_argument("--budget", help="budget mode: the wall time every search gets per set and seed (90s, 5m, 10m); "
                                         "the searches run one at a time, each with --workers")
    parser.add_argument("--workers", type=int, default=2,
                        help="budget mode: lstm-sweep workers = plain Optuna processes = KerasTuner's TensorFlow threads")
    parser.add_argument("--quick", action="store_true",
                        help=f"one seed on {', '.join(QUICK_SETS)} (where lstm-sweep loses to 1-NN): for iterating")
    parser.add_argument("--methods", nargs="*", choices=ALL_METHODS,
                        help="default: every method (budget mode: the three searches and the references)")
    parser.add_argument("--parallel", type=int, help="jobs at a time (default 2, each one thread; budget mode 1)")
    parser.add_argument("--out", help="result name under benchmarks/results/ (default quality[-budget][-quick])")
    parser.add_argument("--reuse", nargs="+", default=[],
                        help=".partial.jsonl files of interrupted runs or finished .json results: their finished jobs "
                             "of the same mode are kept (references from any mode), except --rerun methods")
    parser.add_argument("--rerun", nargs="*", default=[], choices=ALL_METHODS,
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
    global DATASETS
    if args.datasets:
        DATASETS = Path(args.datasets).resolve()
        os.environ["QUALITY_DATASETS"] = str(DATASETS)  # the job processes read it
    if not DATASETS.is_dir():
        raise SystemExit(f"{DATASETS} not found: the quality benchmark needs the shared datasets beside the repository "
                         "(or --datasets DIR)")
    try:
        budget_s = parse_duration(args.budget) if args.budget else None
    except Exception as exc:  # noqa: BLE001 - sweep's ConfigError: one line
        raise SystemExit(f"--budget: {exc}") from None
    if args.quick:
        args.sets, args.seeds = args.sets or list(QUICK_SETS), 1
    methods = args.methods or list(BUDGET_METHODS + REFERENCES if budget_s else ALL_METHODS)
    parallel = args.parallel or (1 if budget_s else 2)
    out = args.out or "quality" + ("-budget" if budget_s else "") + ("-quick" if args.quick else "")
    sets = args.sets or sorted(p.stem for p in DATASETS.glob("*.npz"))
    missing = [name for name in sets if not (DATASETS / f"{name}.npz").is_file()]
    if missing:
        raise SystemExit(f"no such set in {DATASETS}: {', '.join(missing)}")
    # Interleaved (seed, set, method) so every method sees the same mix of load over the run.
    limits = {k: int(v) for k, v in (item.split("=") for item in args.seed_limit)}
    specs = [(name, seed, method) for seed in range(args.seeds) for name in sets for method in methods
             if seed < limits.get(name, args.seeds)]
    partial = REPO / "benchmarks" / "results" / f"{out}.partial.jsonl"
    partial.parent.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    if args.reuse:
        old = [row for name in args.reuse for row in _reusable(Path(name))]
        rows = reusable_rows(old, specs, budget_s, args.rerun)
        rows = list({(r["set"], r["seed"], r["method"]): r for r in rows}.values())  # a later file wins
        done = {(r["set"], r["seed"], r["method"]) for r in rows}
        specs = [spec for spec in specs if spec not in done]
        print(f"reusing {len(rows)} finished jobs from {', '.join(args.reuse)}; {len(specs)} to run")
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool, partial.open("w") as log:
        for row in rows:
            log.write(json.dumps(row) + "\n")
        log.flush()
        futures = {pool.submit(_launch, *spec, args.trials, args.sweep_args, budget_s, args.workers): spec
                   for spec in specs}
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            status = row.get("error", "").splitlines()[-1:] if "error" in row else \
                [f"test BA {row['test_balanced_accuracy']:.3f}" + (f", {row['trials']} trials" if row.get("trials") else "")]
            print(f"[{time.perf_counter() - t0:6.0f}s] {row['set']:>15} seed {row['seed']} {row['method']:>11}: "
                  f"{status[0] if status else 'error'} ({row['wall_seconds']:.0f}s)", flush=True)
    summary = summarize(rows, sets)
    table = []
    for s in summary:
        table.append([s["set"], s["method"],
                      f"{s['test_balanced_accuracy_mean']:.3f} ± {s['test_balanced_accuracy_std']:.3f}",
                      f"{s['test_accuracy_mean']:.3f}", f"{s['shipped_collapsed']} / {s['nothing_shipped']}",
                      "-" if s["collapsed_trials"] is None else str(s["collapsed_trials"]),
                      str(s["trials"]), str(s["epochs"]), f"{s['wall_seconds']:.0f}"])
    mode = f"budget {args.budget} per search, {args.workers} workers" if budget_s else \
        f"{args.trials} trials, {EPOCHS}-epoch cap"
    print_table(f"Test scores, {args.seeds} seeds, {mode}",
                ["set", "method", "test BA mean ± std", "test acc", "shipped collapsed / none", "collapsed trials",
                 "trials", "epochs", "wall s"], table)
    checks = limit_checks(summary, sets)
    for method, c in checks.items():
        print(f"{method}: at or above 1-NN on {len(c['at_or_above_nn1'])} of {len(c['sets'])} sets, within "
              f"{LIMIT_MARGIN} of MiniRocket on {len(c['within_margin_of_minirocket'])}; mean {c['mean']:.3f} "
              f"(MiniRocket {c['minirocket_mean']:.3f})")
    path = write_result(out, {
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
        "note": "jobs marked reused come from an earlier run of the same mode (see --reuse); the machine is shared, "
                "see each job's load_average_start/end",
        "settings": {"mode": "budget" if budget_s else "trials", "budget_seconds": budget_s, "workers": args.workers,
                     "seeds": args.seeds, "seed_limits": limits, "trials": None if budget_s else args.trials,
                     "epochs": EPOCHS, "val_fraction": VAL_FRACTION, "parallel": parallel,
                     "threads_per_job": None if budget_s else 1, "sweep_args": args.sweep_args, "methods": methods},
        "total_wall_seconds": round(time.perf_counter() - t0, 1),
        "summary": summary, "limit_checks": checks, "references": {name: _references(name) for name in sets},
        "jobs": rows,
    })
    partial.unlink(missing_ok=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

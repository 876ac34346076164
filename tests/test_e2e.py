"""End to end through the real CLI: a real SQLite file, a real MLflow store, real (tiny) training."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from helpers import SWEEP, TINY_MODELS, clean_env, run_sweep_cli

pytestmark = pytest.mark.slow

TINY = ["--epochs", "2", "--patience", "2"]
# The re-training of the top configurations has its own tests (the last two here, tests/test_retrain.py,
# tests/test_budget_e2e.py); elsewhere it would more than double a tiny sweep's time.
SEARCH = [*TINY, "--retrain-top", "0"]
# Where the model is not what a test checks, the smallest models (the rest keep the default space).
QUICK = [*SEARCH, *TINY_MODELS]


def _stores(tmp_path: Path) -> list[str]:
    return ["--storage", f"sqlite:///{tmp_path}/sweep.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]


def _trials(tmp_path: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/sweep.db").get_trials()


def _model_uri(tmp_path: Path, study: str, number: int) -> str | None:
    """A trial's logged model: the model is logged after Optuna stored the trial, so its link is a
    study attribute (``sweep.records.model_links``)."""
    from sweep.records import trial_records

    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/sweep.db")
    return next(r for r in trial_records(loaded) if r.number == number).model_uri


def _finished(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def _runs(tmp_path: Path, study: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def test_interrupt_then_resume_finishes_exactly_n_trials(tmp_path, tiny_signal):
    cmd = [SWEEP, "run", str(tiny_signal), "--study", "resume", "--n-trials", "6", *QUICK, *_stores(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        if (tmp_path / "sweep.db").exists():
            try:
                if len(_finished(_trials(tmp_path, "resume"))) >= 2:
                    break
            except (KeyError, Exception):  # noqa: BLE001 - tables may not exist yet
                continue
    time.sleep(1.0)  # land the signal inside the next trial, most of the time
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr

    trials = _trials(tmp_path, "resume")
    done_before = len(_finished(trials))
    assert 2 <= done_before < 6
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert not [r for r in _runs(tmp_path, "resume") if r.info.status == "RUNNING"]

    result = run_sweep_cli(*cmd[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {done_before} of 6 trials already finished" in result.stdout

    trials = _trials(tmp_path, "resume")
    assert len(_finished(trials)) == 6
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]

    runs = _runs(tmp_path, "resume")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert len(parents) == 1, "a resumed sweep reuses its parent run"
    assert len(children) == len(trials), "one child run per trial, failed ones included"
    by_number = {int(r.data.tags["sweep.trial_number"]): r for r in children}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for t in _finished(trials):
        run = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == ("FINISHED" if t.state.name == "COMPLETE" else "KILLED")
        curve = client.get_metric_history(run.info.run_id, "val_balanced_accuracy")
        assert [m.step for m in curve] == list(range(1, t.user_attrs["result"]["epochs_run"] + 1))
        for key in ("loss", "val_loss", "val_score", "learning_rate", "val_top_class_share", "val_predicted_classes"):
            assert len(client.get_metric_history(run.info.run_id, key)) == len(curve)
        assert {"result/val_balanced_accuracy", "result/test_balanced_accuracy", "result/val_accuracy",
                "result/test_macro_f1", "result/collapsed", "result/best_epoch"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        # The learning-curve figure is drawn for each new best trial: those whose model was logged.
        new_best = _model_uri(tmp_path, "resume", t.number) is not None
        assert artifacts == {"plots/confusion_matrix.png"} | ({"plots/learning_curve.png"} if new_best else set())
    assert any(_model_uri(tmp_path, "resume", t.number) for t in trials)
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert by_number[t.number].info.status in ("KILLED", "FAILED")
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert "plots/optimization_history.png" in parent_files
    assert parents[0].info.status == "FINISHED"

    # Same command once more: nothing to run, nothing changes.
    again = run_sweep_cli(*cmd[1:], cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(_trials(tmp_path, "resume")) == len(trials)


def test_best_json_reloads_the_logged_model_and_reproduces_its_score(tmp_path, tiny_signal):
    result = run_sweep_cli("run", str(tiny_signal), "--study", "best", "--n-trials", "3", *QUICK, *_stores(tmp_path),
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test (reported only)" in result.stdout
    best = run_sweep_cli("best", "best", "--json", "--storage", f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    summary = json.loads(best.stdout)
    for key in ("value", "params", "val_balanced_accuracy", "test_balanced_accuracy", "collapsed", "mlflow_run_id", "model_uri"):
        assert key in summary
    assert summary["model_uri"].startswith("models:/")

    from objectives.metrics import evaluate_predictions
    from sweep.data import load_dataset, split_stratified
    from sweep.registry import load_model

    model = load_model(summary["model_uri"], f"sqlite:///{tmp_path}/mlflow.db")
    split = split_stratified(load_dataset(tiny_signal), val_fraction=0.2, seed=0)

    def classes(X):  # the pyfunc answers with labels and one probability column per label
        frame = model.predict(X)
        assert list(frame.columns) == ["label", "proba_0", "proba_1"]
        return frame[["proba_0", "proba_1"]].to_numpy().argmax(axis=1)

    ev = evaluate_predictions(split.y_val, classes(split.X_val), 2)
    assert ev.score == pytest.approx(summary["value"], abs=1e-9)
    assert ev.balanced_accuracy == pytest.approx(summary["val_balanced_accuracy"], abs=1e-9)
    test = evaluate_predictions(split.y_test, classes(split.X_test), 2)
    assert test.balanced_accuracy == pytest.approx(summary["test_balanced_accuracy"], abs=1e-9)

    status = run_sweep_cli("status", "best", "--json", "--storage", f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path)
    rows = json.loads(status.stdout)["trials"]
    assert [r["number"] for r in rows] == [0, 1, 2]
    studies = json.loads(run_sweep_cli("studies", "--json", "--storage", f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path).stdout)
    assert studies[0]["name"] == "best" and studies[0]["finished"] == 3


def test_resume_with_a_changed_space_is_refused_unless_allowed(tmp_path, tiny_signal):
    base = ["run", str(tiny_signal), "--study", "space", *SEARCH, *_stores(tmp_path)]
    assert run_sweep_cli(*base, "--n-trials", "1", cwd=tmp_path).returncode == 0
    config = tmp_path / "narrow.toml"
    config.write_text("[search_space]\nunits = { low = 8, high = 16 }\n")
    db_before = (tmp_path / "sweep.db").read_bytes()

    refused = run_sweep_cli(*base, "--n-trials", "2", "--config", str(config), cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "different settings" in refused.stderr and "search_space.units" in refused.stderr
    assert (tmp_path / "sweep.db").read_bytes() == db_before, "a refused resume must not touch the study"

    other_data = tmp_path / "other.npz"
    from sweep.synthetic import make_dataset, write_dataset

    write_dataset(make_dataset("seed-noise", n_train=80, n_test=0), other_data)
    refused = run_sweep_cli("run", str(other_data), "--study", "space", "--n-trials", "2", *SEARCH, *_stores(tmp_path), cwd=tmp_path)
    assert refused.returncode == 2 and "different settings (data " in refused.stderr, refused.stderr

    allowed = run_sweep_cli(*base, "--n-trials", "2", "--config", str(config), "--allow-changes", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert len(_finished(_trials(tmp_path, "space"))) == 2


def test_csv_with_string_labels_and_test_file_export_and_log_all_models(tmp_path, tiny_csv):
    train, test = tiny_csv
    result = run_sweep_cli("run", str(train), "--test", str(test), "--study", "csv", "--n-trials", "2",
                           "--log-models", "all", "--pruner", "none", *QUICK, *_stores(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(run_sweep_cli("best", "csv", "--json", "--storage", f"sqlite:///{tmp_path}/sweep.db",
                                       cwd=tmp_path).stdout)
    assert summary["labels"] == ["down", "up"]
    assert summary["test_balanced_accuracy"] is not None
    complete = [t for t in _trials(tmp_path, "csv") if t.state.name == "COMPLETE"]
    assert all(_model_uri(tmp_path, "csv", t.number) for t in complete), "--log-models all logs every complete trial"

    for name in ("trials.csv", "trials.json"):
        exported = run_sweep_cli("export", "csv", "--out", str(tmp_path / name), "--storage",
                                 f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
    assert 4 <= json.loads((tmp_path / "trials.json").read_text())["trials"][0]["params"]["units"] <= 8  # tiny_models.toml
    header = (tmp_path / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"number", "state", "value", "val_balanced_accuracy", "param_units", "mlflow_run_id"} <= set(header)

    # The registry: each new best is a version of the model named after the study; 'champion' is the best.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    champion = client.get_model_version_by_alias("csv", "champion")
    assert champion.tags["sweep.trial_number"] == str(summary["number"])
    versions = client.search_model_versions("name='csv'")
    assert 1 <= len(versions) <= len(complete)

    # sweep predict: the champion labels raw test sequences in the user's own label values.
    pred = run_sweep_cli("predict", "csv", str(test), "--out", str(tmp_path / "p.csv"), "--storage",
                         f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == ["sequence", "label", "true_label", "proba_down", "proba_up"]
    assert len(frame) == 24 and set(frame["label"]) <= {"up", "down"}
    assert ((frame["proba_down"] + frame["proba_up"]) - 1).abs().max() < 1e-5
    assert f"balanced accuracy {summary['test_balanced_accuracy']:.4f}" in pred.stdout  # same model, same test set
    short = tmp_path / "short.csv"
    short.write_text("\n".join(",".join(["up"] + ["0.1"] * 7) for _ in range(3)) + "\n")
    bad = run_sweep_cli("predict", "csv", str(short), "--storage", f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "sequences of 7 steps x 1 features, but the model takes 12 x 1" in bad.stderr

    # `sweep serve` checks the champion, then MLflow serves that copy: raw sequences in, string labels out.
    _serve_and_check(tmp_path, ["sweep", "serve", "csv", "--storage", f"sqlite:///{tmp_path}/sweep.db"],
                     np.loadtxt(test, delimiter=",", usecols=range(1, 13))[:4, :, None],
                     expected=list(frame["label"][:4]))


def _serve_and_check(tmp_path: Path, command: list[str], X, *, expected: list) -> None:
    import os
    import sys
    import urllib.request

    from conftest import free_port

    port = free_port()
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
                    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / command[0]), *command[1:], "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(0.5)
        body = json.dumps({"inputs": X.tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            predictions = json.loads(resp.read())["predictions"]
        assert [p["label"] for p in predictions] == expected
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_log_models_none_logs_no_model(tmp_path, tiny_signal):
    result = run_sweep_cli("run", str(tiny_signal), "--study", "nomodel", "--n-trials", "1", "--log-models", "none",
                           *SEARCH, *_stores(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (trial,) = _trials(tmp_path, "nomodel")
    assert _model_uri(tmp_path, "nomodel", trial.number) is None
    assert trial.user_attrs["mlflow_run_id"]


@pytest.mark.postgres
def test_sweep_on_postgresql(tmp_path, tiny_signal, pg_url):
    storage = pg_url
    result = run_sweep_cli("run", str(tiny_signal), "--study", "pg", "--n-trials", "2", *QUICK, "--storage", storage,
                           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="pg", storage=storage)
    assert len(_finished(study.get_trials())) == 2
    status = run_sweep_cli("status", "pg", "--json", "--storage", storage, cwd=tmp_path)
    assert len(json.loads(status.stdout)["trials"]) == 2
    assert not (tmp_path / "sweep.db").exists()


def test_a_study_forced_to_collapse_stops_its_trials_early_as_pruned_collapse(tmp_path):
    """Noise, no class weights, a tiny LSTM and a big step: every trial collapses to the majority
    class, and is stopped soon after warm-up + patience (epoch 4 of 8; an epoch whose balanced
    accuracy improves restarts the count) as PRUNED with reason 'collapse': collapse stopping does
    not wait for half the budget (`warmup_fraction`) as flat scores do. Trial 0 is the baseline
    recipe moved into this narrow space."""
    from sweep.synthetic import make_dataset, write_dataset

    data = write_dataset(make_dataset("seed-noise", n_train=80, n_test=40, seed=3), tmp_path / "noise.npz")
    config = tmp_path / "collapse.toml"
    config.write_text('[train]\nwarmup_steps = 0\n[search_space]\nunits = 2\nlayers = 1\ndropout = 0.0\nlearning_rate = 1e-2\n'
                      'class_weight = ["none"]\nbatch_size = [16]\nclipnorm = [0.0]\narchitecture = ["stacked"]\n')
    result = run_sweep_cli("run", str(data), "--study", "col", "--config", str(config), "--n-trials", "2",
                           "--epochs", "8", "--patience", "8", "--pruner", "none", "--retrain-top", "0", *_stores(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "collapse" in result.stdout and "sweep diagnose --study col" in result.stdout
    trials = _trials(tmp_path, "col")
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        assert t.user_attrs["result"]["prune_reason"].startswith("collapse:")
        assert 4 <= t.user_attrs["result"]["epochs_run"] <= 5
    assert trials[0].user_attrs["baseline"] is True and "baseline" not in trials[1].user_attrs
    # Without collapse stopping the same trials run all 8 epochs.
    again = run_sweep_cli("run", str(data), "--study", "col-off", "--config", str(config), "--n-trials", "1",
                          "--epochs", "8", "--patience", "8", "--pruner", "none", "--retrain-top", "0", "--collapse-patience", "0",
                          "--no-baseline", *_stores(tmp_path), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    [t] = _trials(tmp_path, "col-off")
    assert t.state.name == "COMPLETE" and t.user_attrs["result"]["epochs_run"] == 8
    # It completed, but it is a one-class model: never the champion, and the user is told so.
    assert t.user_attrs["result"]["collapsed"] is True
    assert "no model is registered as the champion" in again.stdout
    registry = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert not registry.search_model_versions("name = 'col-off'")
    refused = run_sweep_cli("predict", "col-off", str(data), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                            "--out", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "champion" in refused.stderr
    assert not (tmp_path / "p.csv").exists()
    # Why: tiny units everywhere and no class weights on 4 : 1 classes.
    diag = run_sweep_cli("diagnose", "--study", "col", "--json", "--storage", f"sqlite:///{tmp_path}/sweep.db",
                         cwd=tmp_path)
    assert diag.returncode == 0, diag.stderr
    report = json.loads(diag.stdout)
    assert {"capacity", "imbalance"} <= set(report["causes"])
    assert report["summary"]["outcomes"]["pruned_collapse"] == 2 and report["summary"]["collapse_rate"] == 1.0
    # The study summary is on the study and on its MLflow parent run, and so is the report.
    assert _study(tmp_path, "col").user_attrs["summary"]["trials_collapsed"] == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(report["logged_to"])
    assert parent.data.metrics["collapse_rate"] == 1.0 and parent.data.metrics["trials_pruned_collapse"] == 2
    files = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"diagnosis.md", "diagnosis.json", "collapse_summary.json", "plots/collapse_by_parameter.png"} <= files
    text = Path(client.download_artifacts(parent.info.run_id, "diagnosis.md", str(tmp_path))).read_text()
    assert "Too little capacity" in text and "Class imbalance" in text


def test_a_sweep_on_noise_is_diagnosed_as_no_signal_with_gradients_and_adjusted_scores(tmp_path):
    """The default space on labels independent of the inputs: the best validation score sits in the
    noise band of its trials; every epoch logs gradient norms; --adjust-decision adds its metrics."""
    from sweep.synthetic import make_dataset, write_dataset

    data = write_dataset(make_dataset("seed-noise", n_train=300, n_test=200, seed=1), tmp_path / "noise.npz")
    result = run_sweep_cli("run", str(data), "--study", "noise", "--n-trials", "4", "--epochs", "4",
                           "--adjust-decision", "--log-models", "none", "--retrain-top", "0", *_stores(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    diag = run_sweep_cli("diagnose", "--study", "noise", "--json", "--storage", f"sqlite:///{tmp_path}/sweep.db",
                         cwd=tmp_path)
    assert diag.returncode == 0, diag.stderr
    report = json.loads(diag.stdout)
    assert "no_signal" in report["causes"], report["checked"]
    best = report["best"]
    assert best["val_balanced_accuracy"] <= best["noise_band"] and best["n_trials"] == 4
    text = run_sweep_cli("diagnose", "--study", "noise", "--no-log", "--no-data-check", "--storage",
                         f"sqlite:///{tmp_path}/sweep.db", cwd=tmp_path)
    assert "No signal" in text.stdout and "noise band for 4 trials" in text.stdout

    for t in _trials(tmp_path, "noise"):
        r = t.user_attrs.get("result", {})
        if t.state.name == "COMPLETE":
            assert r["val_balanced_accuracy_adjusted"] >= r["val_balanced_accuracy"]  # fitted there: never worse
            assert "test_balanced_accuracy_adjusted" in r and len(r["decision_offsets"]) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [parent] = [r for r in _runs(tmp_path, "noise") if r.data.tags.get("sweep.role") == "parent"]
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/balanced_accuracy_by_class_weight.png",
            "plots/collapse_by_parameter.png", "plots/best_confusion_matrix.png"} <= plots
    complete = sum(t.state.name == "COMPLETE" for t in _trials(tmp_path, "noise"))
    assert ("plots/parameter_importances.png" in plots) == (complete >= 3)
    for run in _runs(tmp_path, "noise"):
        if run.data.tags.get("sweep.role") != "trial":
            continue
        epochs = len(client.get_metric_history(run.info.run_id, "loss"))
        for key in ("grad_norm_first_layer", "grad_norm_last_layer"):
            norms = [m.value for m in client.get_metric_history(run.info.run_id, key)]
            assert len(norms) == epochs and all(0 < v < 1e3 for v in norms)


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/sweep.db")


def _predict(tmp_path: Path, study: str, data: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`sweep predict` of ``study``'s champion on ``data`` (exit 0), and the balanced accuracy of its
    predictions against the file's labels (two classes)."""
    import csv

    from objectives.metrics import evaluate_predictions

    predicted = run_sweep_cli("predict", study, str(data), "--out", "p.csv", *_stores(tmp_path), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    with open(tmp_path / "p.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return predicted, evaluate_predictions([int(r["true_label"]) for r in rows], [int(r["label"]) for r in rows],
                                           2).balanced_accuracy


def test_the_top_k_are_retrained_with_new_seeds_once(tmp_path, tiny_signal):
    """After the search the user's process trains the 2 best configurations again with 2 other seeds
    each; the numbers go to the study, the summary and the parent run; a resume does not redo them."""
    env = clean_env(SWEEP_RETRAIN_TOP="2")
    args = ["run", str(tiny_signal), "--study", "rt", "--n-trials", "3", "--retrain-seeds", "2", "--pruner", "none",
            "--ship", "ensemble", *TINY, *TINY_MODELS, *_stores(tmp_path)]
    result = run_sweep_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "re-training the top 2 configurations on 2 folds of the training part" in result.stdout
    assert "top 2 re-trained 2 times each, a fold and a new seed per run" in result.stdout
    retrained = _study(tmp_path, "rt").user_attrs["retrained"]["results"]
    from objectives.metrics import rank_key

    complete = sorted((t for t in _trials(tmp_path, "rt") if t.state.name == "COMPLETE"),
                      key=lambda t: rank_key(t.value, t.user_attrs["result"]["val_loss"]), reverse=True)
    # the 2 best, unless both are of one architecture and a trial of another exists: it takes the last place
    expected = [t.number for t in complete[:2]]
    arch = [t.params["architecture"] for t in complete]
    if arch[0] == arch[1] and any(a != arch[0] for a in arch[2:]):
        expected[1] = next(t.number for t in complete[2:] if t.params["architecture"] != arch[0])
    assert [e["trial"] for e in retrained] == expected
    for e in retrained:
        seeds = [r["seed"] for r in e["runs"]]
        assert len(seeds) == 2 and len(set(seeds)) == 2 and e["trial"] not in seeds
        # run i validates on fold i of the training part (2 folds, shuffled by their own seed, never
        # the search's split), the same folds for every configuration
        assert [r["fold"] for r in e["runs"]] == [0, 1]
        assert {r["split_seed"] for r in e["runs"]} == {7919}
        vals = [r["val_balanced_accuracy"] for r in e["runs"]]
        assert e["val_balanced_accuracy_mean"] == pytest.approx(np.mean(vals))
        assert e["test_balanced_accuracy_std"] == pytest.approx(np.std([r["test_balanced_accuracy"] for r in e["runs"]]))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [parent] = [r for r in _runs(tmp_path, "rt") if r.data.tags.get("sweep.role") == "parent"]
    assert parent.data.metrics["retrain_rank1_val_balanced_accuracy_mean"] == pytest.approx(
        retrained[0]["val_balanced_accuracy_mean"])
    assert "retrained_top_k.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the margin rule's choice is what the summary, `sweep best` and the registry alias all ship
    choice = _study(tmp_path, "rt").user_attrs["champion"]
    assert choice["search_winner"] == complete[0].number and choice["reason"] in " ".join(result.stdout.split())
    best = json.loads(run_sweep_cli("best", "rt", "--json", *_stores(tmp_path)[:2], cwd=tmp_path).stdout)
    assert best["number"] == choice["trial"] and best["selection"]["trial"] == choice["trial"]
    assert client.get_model_version_by_alias("rt", "champion").tags["sweep.trial_number"] == str(choice["trial"])
    # --ship ensemble: the chosen configuration's fold models ship as one model when two or more can join
    chosen = next(e for e in retrained if e["trial"] == choice["trial"])
    members = sum(not (r["near_collapse"] or r["stopped_for_collapse"]) for r in chosen["runs"])  # no budget here
    shipped = _study(tmp_path, "rt").user_attrs.get("shipped")
    assert (shipped is not None) == (members >= 2), (shipped, chosen["runs"])
    if shipped is not None:
        assert best["shipped"] == shipped and shipped["folds"] == 2 and best["model_uri"] == shipped["model_uri"]
        version = client.get_model_version_by_alias("rt", "champion")
        assert client.get_run(version.run_id).data.tags["sweep.role"] == "ensemble"
        assert version.description.startswith(f"Trial {choice['trial']}'s configuration as the mean of its 2 fold models")
        assert "ships as the mean of trial" in " ".join(result.stdout.split())
        # `sweep predict` loads the registered ensemble (files verified) and averages its members as the
        # re-training did when it scored them on the test part
        predicted, accuracy = _predict(tmp_path, "rt", tiny_signal)
        assert f"trial {choice['trial']}'s 2 fold models, averaged; files verified" in predicted.stdout
        assert accuracy == pytest.approx(shipped["test_balanced_accuracy"], abs=1e-9)
    again = run_sweep_cli(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0 and "re-training the top" not in again.stdout
    assert "top 2 re-trained" in again.stdout  # the stored numbers are shown again
    assert _study(tmp_path, "rt").user_attrs.get("shipped") == shipped  # and the same model ships


def test_ship_auto_tests_the_refit_s_length_on_the_folds_and_ships_what_won(tmp_path, tiny_signal):
    """--ship auto: after the re-training the chosen configuration trains the refit's way on each of
    the same folds, for the epoch cap and for the epochs its own model kept; the refit ships unless the
    long runs fell behind by more than the noise, its own model then, and the summary and `sweep best`
    say which and why."""
    args = ["run", str(tiny_signal), "--study", "au", "--n-trials", "2", "--retrain-top", "2", "--retrain-seeds", "2",
            "--pruner", "none", "--ship", "auto", *TINY, "--epochs", "4", *TINY_MODELS, *_stores(tmp_path)]
    result = run_sweep_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    attrs = _study(tmp_path, "au").user_attrs
    check, shipped = attrs["length_check"], attrs.get("shipped")
    assert check["trial"] == attrs["champion"]["trial"] and check["epochs"] == 4
    assert (shipped is not None and shipped["kind"] == "refit") is check["refit"]
    if check["short_epochs"] < 4:  # its own model stopped before the cap: both lengths trained on both folds
        assert sorted((r["fold"], r["epochs"]) for r in check["runs"]) == sorted(
            (f, n) for f in (0, 1) for n in (4, check["short_epochs"]))
        by = {n: [r["val_balanced_accuracy"] for r in check["runs"] if r["epochs"] == n] for n in (4, check["short_epochs"])}
        lead = (sum(by[4]) - sum(by[check["short_epochs"]])) / 2
        assert check["lead"] == pytest.approx(lead) and check["refit"] is (lead >= -check["margin"]) and check["folds"] == 2
    else:  # it kept every epoch: the refit is no longer, nothing to test
        assert check["runs"] == [] and check["refit"]
    text = " ".join(result.stdout.split())
    assert "and on the whole training part unless that falls behind (--ship auto)" in text
    assert " ".join(check["reason"].split()) in text
    best = json.loads(run_sweep_cli("best", "au", "--json", *_stores(tmp_path)[:2], cwd=tmp_path).stdout)
    assert best["length_check"] == check and best["shipped"] == shipped
    shown = run_sweep_cli("best", "au", *_stores(tmp_path)[:2], cwd=tmp_path, env=clean_env(COLUMNS="300"))
    assert " ".join(check["reason"].split()) in " ".join(shown.stdout.split())


def test_ship_refit_ships_a_refit_of_the_chosen_configuration(tmp_path, tiny_signal):
    """--ship refit: the configuration the re-training chose trains again on the whole
    training part for the epoch cap, logs as one model in its own run under the study's, and is
    what the registry's champion, `sweep best` and `sweep predict` serve; a resume keeps it."""
    env = clean_env(SWEEP_RETRAIN_TOP="2")
    args = ["run", str(tiny_signal), "--study", "rf", "--n-trials", "2", "--retrain-seeds", "2", "--pruner", "none",
            "--ship", "refit", *TINY, *TINY_MODELS, *_stores(tmp_path)]
    result = run_sweep_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    study = _study(tmp_path, "rf")
    choice, shipped = study.user_attrs["champion"], study.user_attrs["shipped"]
    assert shipped["kind"] == "refit" and shipped["trial"] == choice["trial"]
    # no time budget: the epoch cap (--epochs 2), on all 80 training sequences
    assert (shipped["epochs"], shipped["planned_epochs"], shipped["sequences"]) == (2, 2, 80)
    assert 0 <= shipped["test_balanced_accuracy"] <= 1 and 0 <= shipped["train_balanced_accuracy"] <= 1
    text = " ".join(result.stdout.split())
    assert f"ships as trial {choice['trial']}'s configuration refit on all 80 training sequences for 2 epochs" in text
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    version = client.get_model_version_by_alias("rf", "champion")
    run = client.get_run(version.run_id)
    [parent] = [r for r in _runs(tmp_path, "rf") if r.data.tags.get("sweep.role") == "parent"]
    assert run.data.tags["sweep.role"] == "refit" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.metrics["refit_epochs"] == 2 and run.info.status == "FINISHED"
    assert version.description.startswith(f"Trial {choice['trial']}'s configuration trained on all 80 training sequences")
    assert str(shipped["model_version"]) == str(version.version) and shipped["mlflow_run_id"] == version.run_id
    best = json.loads(run_sweep_cli("best", "rf", "--json", *_stores(tmp_path)[:2], cwd=tmp_path).stdout)
    assert best["shipped"] == shipped and best["model_uri"] == shipped["model_uri"]
    # `sweep predict` loads the registered refit (files verified) and reproduces its test score
    predicted, accuracy = _predict(tmp_path, "rf", tiny_signal)
    seeds = shipped["seeds"]  # refit_seeds 3, less any that predicted one class on its training sequences
    averaged = f" ({seeds} seeds averaged)" if seeds > 1 else ""
    assert 1 <= seeds <= 3 and run.data.metrics["refit_seeds"] == seeds
    assert f"trial {choice['trial']}'s configuration, refit on all 80 training sequences{averaged}; files verified" \
        in predicted.stdout
    assert accuracy == pytest.approx(shipped["test_balanced_accuracy"], abs=1e-9)
    assert "then the chosen one trains on the whole training part (--ship refit)" in text
    versions = len(client.search_model_versions("name = 'rf'"))
    again = run_sweep_cli(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0 and "re-training the top" not in again.stdout
    assert _study(tmp_path, "rf").user_attrs["shipped"] == shipped
    assert client.get_model_version_by_alias("rf", "champion").version == version.version
    assert len(client.search_model_versions("name = 'rf'")) == versions  # nothing trained or registered again

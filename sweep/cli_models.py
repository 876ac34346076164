"""`sweep predict | serve | make-data`: use a study's champion, or make data to sweep."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from sweep.cli_options import StorageOpt, StudyTrackingOpt, check_seed, open_study, study_tracking_uri
from sweep.display import err, out, seeds_averaged
from sweep.display import esc as _e
from sweep.errors import SweepError


def predict(
    study: str = typer.Argument(..., help="Study name: its champion model (registry alias 'champion') predicts."),
    data: Path = typer.Argument(..., help=".npz (X, else X_test, else X_train) or .csv/.tsv (one series per row, label first)."),
    out_file: Path = typer.Option(Path("predictions.csv"), "--out", help="Output CSV: label and class probabilities per sequence."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = StudyTrackingOpt,
    unlabeled: bool = typer.Option(False, "--unlabeled", help=".csv/.tsv rows hold values only (no label column)."),
) -> None:
    """Classify sequences with a study's champion model; labels come out in the training data's own values.

    Only the champion the sweep registered is loaded (loading a model runs its code): the alias must
    point at the version the study recorded, and the model's files must hash to the recorded digest."""
    import tempfile

    from sweep.data import load_sequences

    if out_file.suffix.lower() != ".csv":
        raise SweepError(f"--out {out_file}: predictions are written as .csv; name the file *.csv")
    if not out_file.parent.exists():
        raise SweepError(f"--out {out_file}: folder {out_file.parent} does not exist; create it first")
    s = open_study(study, storage)
    seqs = load_sequences(data, unlabeled=unlabeled)
    uri = study_tracking_uri(s, tracking_uri)
    from sweep.integrity import champion_record

    record = champion_record(s)
    from sweep.tracking import fetch_champion, load_model, model_input_shape

    with tempfile.TemporaryDirectory(prefix="sweep-champion-") as tmp:
        local = str(fetch_champion(record, uri, Path(tmp)))
        timesteps, features = model_input_shape(local, uri)
        if seqs.X.shape[1:] != (timesteps, features):
            raise SweepError(f"{data}: sequences of {seqs.X.shape[1]} steps x {seqs.X.shape[2]} features, but the model "
                             f"takes {timesteps} x {features} (as in the study's training data); resample or reshape them")
        frame = load_model(local, uri).predict(seqs.X)
    frame.insert(0, "sequence", range(len(frame)))
    if seqs.labels is not None:
        frame.insert(2, "true_label", seqs.labels)
    frame.to_csv(out_file, index=False)
    counts = frame["label"].value_counts()
    out.print(_e(f"wrote {len(frame)} predictions ({seqs.array} of {data}) to {out_file}; predicted: "
                 + ", ".join(f"{label} {n}" for label, n in counts.items())))
    if seqs.labels is not None:
        from sklearn.metrics import balanced_accuracy_score

        truth = [str(v) for v in seqs.labels]
        predicted = [str(v) for v in frame["label"]]
        out.print(f"against the file's labels: balanced accuracy {balanced_accuracy_score(truth, predicted):.4f}, "
                  f"accuracy {sum(a == b for a, b in zip(truth, predicted)) / len(truth):.4f}")
    out.print(_e(f"model: models:/{study}/{record.version} (champion, {_which(s, record)}; files verified, "
                 f"{record.digest[:19]}...)"))


def _which(study: Any, record: Any) -> str:
    """``trial 7``; ``trial 7's configuration, refit on all 80 training sequences`` (sweep.refit) or
    ``trial 7's 3 fold models, averaged`` (sweep.ensemble) when that ships."""
    shipped = study.user_attrs.get("shipped") or {}
    if shipped.get("trial") == record.trial and str(shipped.get("model_version")) == record.version:
        if shipped.get("kind") == "refit":
            averaged = seeds_averaged(shipped)
            return (f"trial {record.trial}'s configuration, refit on all {shipped['sequences']} training sequences"
                    + (f" ({averaged})" if averaged else ""))
        return f"trial {record.trial}'s {shipped['folds']} fold models, averaged"
    return f"trial {record.trial}"


def serve(
    study: str = typer.Argument(..., help="Study name: its champion model is served."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = StudyTrackingOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(5001, "--port"),
) -> None:
    """Serve a study's champion over HTTP (MLflow's scoring server, POST /invocations), after checking
    it is the model the sweep registered; the verified copy is what runs."""
    import tempfile

    from sweep.integrity import champion_record

    if not 1 <= port <= 65535:
        raise SweepError(f"--port must be in [1, 65535], got {port}")
    s = open_study(study, storage)
    uri = study_tracking_uri(s, tracking_uri)
    record = champion_record(s)
    from sweep.tracking import fetch_champion

    local = fetch_champion(record, uri, Path(tempfile.mkdtemp(prefix="sweep-serve-")))
    err.print(_e(f"serving study {study}'s champion (version {record.version}, {_which(s, record)}; files verified) "
                 f"on http://{host}:{port}/invocations from {local}; Ctrl-C to stop"))
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(local), "--env-manager", "local",
           "--host", host, "--port", str(port)]
    os.execv(sys.executable, cmd)


def make_data(
    kind: str = typer.Argument(..., help="seed-signal (planted temporal signal, known Bayes rate) or seed-noise (no signal)."),
    out_file: Path = typer.Option(..., "--out", help="Output .npz file."),
    n: int = typer.Option(1000, "--n", help="Training sequences."),
    n_test: int = typer.Option(1000, "--n-test", help="Test sequences."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic imbalanced (80/20) set of 20-step x 5-feature sequences."""
    check_seed(seed)
    from sweep.synthetic import make_dataset, write_dataset

    arrays = make_dataset(kind, n_train=n, n_test=n_test, seed=seed)
    path = write_dataset(arrays, out_file)
    meta = json.loads(str(arrays["meta"]))
    extra = f"; planted Bayes-optimal balanced accuracy {meta['bayes_balanced_accuracy']:.2f}" if kind == "seed-signal" else ""
    out.print(_e(f"wrote {path}: {n} train + {n_test} test sequences, 20 steps x 5 features, labels 80/20{extra}"))

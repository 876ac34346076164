"""The `sweep` command line. It only wires the other modules together.

Heavy imports (TensorFlow, MLflow) happen inside the commands that need them, so `sweep --help`,
`sweep status` and friends start fast. A SweepError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import click
import typer

try:  # newer Typer vendors its own click; its exceptions are not click's
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older Typer uses click itself
    _typer_click = click.exceptions
from rich import box
from rich.markup import escape
from rich.table import Table

from objectives.search_space import KNOBS
from sweep.config import DEFAULT_STORAGE, resolve_config
from sweep import display, interrupt
from sweep.display import arg as _arg  # noqa: F401
from sweep.display import err, out
from sweep.display import esc as _e
from sweep.display import fmt as _fmt
from sweep.display import one_line as _one_line
from sweep.errors import SweepError
from sweep.redact import credential_free, mask_url, redact

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Optuna sweeps of Keras LSTM classifiers that are ranked by balanced accuracy and never win by "
    "predicting one class.",
)


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Log each trial's end and the libraries' warnings to stderr."),
) -> None:
    from sweep import logs

    logs.configure(verbose=verbose)


StorageOpt = typer.Option(
    DEFAULT_STORAGE, "--storage", envvar="SWEEP_STORAGE", show_envvar=True,
    help="Optuna storage: any SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg://user:pw@host/db).",
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout instead of a table.")


@app.command()
def run(
    data: Path = typer.Argument(..., help="Data file: .npz (X_train, y_train[, X_test, y_test]) or UCR-style .csv/.tsv."),
    test: Optional[Path] = typer.Option(None, "--test", help="Test file for .csv/.tsv data (scored, never used for selection)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with [run], [train] and [search_space] tables."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the data file's name)."),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="SWEEP_STORAGE", show_envvar=True,
                                          help=f"Optuna storage URL (default {DEFAULT_STORAGE})."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Total finished trials the study should hold (default 20; with --budget: no limit but the time, or whichever comes first)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Wall time for this whole command: search, re-training and registration (90s, 10m, 2h, or seconds). Trials get up to 100 epochs by successive halving (Hyperband) and the search stops in time to re-train the top configurations and register the champion."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epoch cap per trial (default 15)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop a trial after this many epochs without a better val score (default 5)."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Share of the training data held out for validation (default 0.2)."),
    collapse_patience: Optional[int] = typer.Option(None, "--collapse-patience", help="Stop a trial after this many (near) single-class epochs in a row, as pruned with reason 'collapse' (default 2; 0 = never)."),
    collapse_warmup: Optional[int] = typer.Option(None, "--collapse-warmup", help="Epochs before collapse stopping starts counting (default 2)."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="No trial is stopped (collapse, flat score, median pruner) before this many optimizer steps (default 100)."),
    warmup_fraction: Optional[float] = typer.Option(None, "--warmup-fraction", help="No trial is stopped for a flat or below-median score before this share of --epochs (default 0.5: slow starters get half the budget; collapse stopping keeps its shorter warm-up)."),
    baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline", help="A new study's first two trials are the classic stacked LSTM recipe (2 x LSTM(64), dropout 0.2, Adam 1e-3, balanced class weights, batch 32) and LSTM-FCN's (8 cells, dropout 0.8, batch 16, cosine schedule), moved into the space (default on)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for the split, the sampler and training (default 0)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                                               help="MLflow tracking URI (default sqlite:///mlflow.db, artifacts in ./mlruns)."),
    log_models: Optional[str] = typer.Option(None, "--log-models", help="Which trained models to log: best (default), all, none."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="median (default) or none."),
    threads: Optional[int] = typer.Option(None, "--threads", help="TensorFlow threads per worker (default: the worker's share of the cores)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes on this machine (default 1; 2 on 2 cores is fastest)."),
    adjust_decision: Optional[bool] = typer.Option(None, "--adjust-decision", help="After each complete trial, fit per-class decision offsets on validation to maximize balanced accuracy; recorded as *_adjusted metrics beside the plain ones (the ranking never uses them)."),
    retrain_top: Optional[int] = typer.Option(None, "--retrain-top", envvar="SWEEP_RETRAIN_TOP", show_envvar=True, help="After the search, train the K best configurations again with other seeds and report mean +- std (default 3; 0 = skip)."),
    retrain_seeds: Optional[int] = typer.Option(None, "--retrain-seeds", help="Seeds per re-trained configuration (default 3)."),
    create_only: bool = typer.Option(False, "--create-only", help="Create (or check) the study and its MLflow run, then exit: start `sweep worker` processes anywhere."),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="Resume even if data, search space or settings changed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Run (or resume) a sweep until the study holds N finished trials, or until its --budget is spent."""
    from sweep.budget import process_started

    started = process_started()  # a --budget's start-up minute counts from here
    cfg = resolve_config(config_file=config, flags=dict(
        study=study, storage=storage, n_trials=n_trials, budget=budget, epochs=epochs, patience=patience,
        val_fraction=val_fraction, seed=seed, tracking_uri=tracking_uri, log_models=log_models,
        pruner=pruner, threads=threads, workers=workers, collapse_patience=collapse_patience,
        collapse_warmup=collapse_warmup, warmup_steps=warmup_steps, warmup_fraction=warmup_fraction,
        baseline=baseline, adjust_decision=adjust_decision, retrain_top=retrain_top,
        retrain_seeds=retrain_seeds,
    ))
    from sweep.prepared import prepare
    from sweep.runner import open_sweep

    if cfg.budget is not None and create_only:
        raise SweepError("--budget times this command's own work, and --create-only runs none; "
                         "drop one of them (workers then run to the study's --n-trials)")
    prep = prepare(cfg, data, test_path=test)
    if cfg.workers > 1:
        from sweep.gpus import detect_gpus

        detect_gpus()  # a malformed SWEEP_GPUS fails here, before the study is opened
    if not quiet:
        display.announce(prep)
    opened = open_sweep(prep, allow_changes=allow_changes)
    if create_only:
        opened.tracker.schedule()
        from sweep.loop import count_finished

        done = count_finished(opened.study)
        out.print(_e(f"study {prep.name} is ready ({done} of {cfg.n_trials} trials finished); start workers with "
                     "(replace *** with the passwords, or leave them out and set PGPASSWORD / "
                     "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD):\n"
                     f"  SWEEP_STORAGE={shlex.quote(mask_url(cfg.storage))} "
                     f"MLFLOW_TRACKING_URI={shlex.quote(mask_url(opened.tracker.tracking_uri))} "
                     f"sweep worker {_worker_args(prep.name, str(Path(prep.data.source).resolve()))}"),
                  soft_wrap=True)  # one line the user can copy, however narrow the terminal
        return
    from sweep.clock import start_clock

    start_clock(opened, started=started, workers=cfg.workers)
    if quiet:
        _execute(opened, cfg.workers)
        return
    result = display.run_with_progress(opened, cfg.workers, _execute)
    display.print_summary(result, prep)


def _worker_args(name: str, data: str) -> str:
    """``STUDY --data PATH`` for the ``sweep worker`` hint; a name like an option goes last, after ``--``."""
    if name.startswith("-"):
        return f"--data {shlex.quote(data)} -- {shlex.quote(name)}"
    return f"{shlex.quote(name)} --data {shlex.quote(data)}"


def _execute(opened: Any, workers: int, **callbacks: Any) -> Any:
    if workers > 1:
        from sweep.workers import run_workers

        return run_workers(opened, workers=workers, **callbacks)
    from sweep.runner import run_opened

    return run_opened(opened, **callbacks)


@app.command()
def worker(
    study: str = typer.Argument(..., help="Name of a study created by `sweep run` (or `sweep run --create-only`)."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                                               help="MLflow tracking URI (default: the one the study was started with)."),
    data: Optional[Path] = typer.Option(None, "--data", help="This machine's copy of the study's data file (default: the path the study was created with); its fingerprint must match."),
    threads: Optional[int] = typer.Option(None, "--threads", help="TensorFlow threads (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Join an existing study from any machine and run trials until it holds its N finished trials."""
    if threads is not None and threads < 1:
        raise SweepError(f"--threads must be an integer >= 1, got {threads}")
    from sweep.join import join

    opened = join(study, storage, data_path=data, tracking_uri=tracking_uri, threads=threads)
    if quiet:
        _execute(opened, 1)
        return
    display.announce(opened.prep, role="worker")
    result = display.run_with_progress(opened, 1, _execute)
    display.print_summary(result, opened.prep)


def _open_study(name: str, storage: str) -> Any:
    from sweep.storage import open_storage
    from sweep.study import load_study

    return load_study(name, open_storage(storage, must_exist=True, heartbeat=False))


@app.command()
def studies(storage: str = StorageOpt, as_json: bool = JsonOpt) -> None:
    """List the studies in a storage."""
    from sweep.storage import open_storage
    from sweep.study import list_studies

    infos = list_studies(open_storage(storage, must_exist=True, heartbeat=False))
    if as_json:
        out.print_json(json.dumps([vars(i) for i in infos]))
        return
    table = Table("study", "finished / target", "complete", "pruned", "failed", "running", "best score", "data")
    for i in infos:
        table.add_row(_e(i.name), f"{i.finished} / {_fmt(i.n_trials_target)}", str(i.complete), str(i.pruned),
                      str(i.failed), str(i.running), _fmt(i.best_value), _e(i.data or "-"))
    out.print(table if infos else "no studies yet: start one with `sweep run DATA`")


@app.command()
def status(study: str = typer.Argument(..., help="Study name."), storage: str = StorageOpt, as_json: bool = JsonOpt) -> None:
    """Show every trial of a study: state, score, balanced accuracy, collapse, key params, run id."""
    from sweep.ranking import champion_trial
    from sweep.records import trial_records

    s = _open_study(study, storage)
    records = trial_records(s)
    if as_json:
        out.print_json(json.dumps({"study": study, "n_trials_target": s.user_attrs.get("n_trials"),
                                   "trials": [r.to_dict() for r in records]}))
        return
    table = Table(title=f"study {_e(study)}: {sum(r.state in ('COMPLETE', 'PRUNED') for r in records)} of "
                        f"{_fmt(s.user_attrs.get('n_trials'))} trials finished (* = best)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    wide = out.width >= 100  # narrow terminals drop time and run id (both are in --json)
    columns = ("#", "state", "score", "val BA", "test BA", "coll", "units", "lay", "lr", "weights", "sec", "MLflow run")
    for name in columns if wide else columns[:-2]:
        table.add_column(name, no_wrap=True, justify="left" if name in ("state", "weights", "MLflow run") else "right")
    top, _ = champion_trial(s)
    best = top.number if top is not None else None
    for r in records:
        p = r.params
        table.add_row(
            f"{r.number}{'*' if r.number == best else ''}", r.state.lower(), _fmt(r.score, 3),
            _fmt(r.val_balanced_accuracy, 3), _fmt(r.test_balanced_accuracy, 3),
            "[red]yes[/]" if r.collapsed else "no", _fmt(p.get("units")), _fmt(p.get("layers")),
            f"{p['learning_rate']:.1e}" if "learning_rate" in p else "-", _e(_fmt(p.get("class_weight"))),
            *((_fmt(r.duration_s, 1), (r.mlflow_run_id or "-")[:8]) if wide else ()),
        )
    out.print(table)
    for r in records:
        if r.state in ("FAIL", "PRUNED") and r.reason:
            out.print(f"[dim]trial {r.number} {'failed' if r.state == 'FAIL' else 'pruned'}: {_e(r.reason)}[/]")
        elif r.retry_of is not None:
            out.print(f"[dim]trial {r.number} retried trial {r.retry_of}'s parameters[/]")


@app.command()
def best(study: str = typer.Argument(..., help="Study name."), storage: str = StorageOpt, as_json: bool = JsonOpt) -> None:
    """Show the best trial: params, validation and test scores, confusion matrix, model URI."""
    from sweep.records import best_of

    top = best_of(_open_study(study, storage))
    if top is None:
        raise SweepError(f"study {study!r} has no completed trial yet; run `sweep run` to finish some")
    if as_json:
        out.print_json(json.dumps(top.to_dict()))
        return
    r = top.result
    out.print(f"[bold]study {_e(study)}: best trial {top.number}[/]  score {_fmt(top.value)}")
    if (top.selection or {}).get("reason"):
        out.print(f"  [dim]{_e(top.selection['reason'])}[/]")
    for knob in KNOBS:
        if knob.name in top.params:
            out.print(_e(f"  {knob.name:<14} {top.params[knob.name]}"))
    out.print(f"  val  balanced accuracy {_fmt(r.val_balanced_accuracy)}   accuracy {_fmt(r.val_accuracy)}"
              f"   macro F1 {_fmt(r.val_macro_f1)}   collapsed {_fmt(r.collapsed)}")
    out.print(f"  test balanced accuracy {_fmt(r.test_balanced_accuracy)}   accuracy {_fmt(r.test_accuracy)}"
              f"   macro F1 {_fmt(r.test_macro_f1)}")
    labels = [_e(v) for v in (top.labels or [])]
    for title, matrix in (("validation", r.val_confusion), ("test", r.test_confusion)):
        if not matrix:
            continue
        table = Table(*(["true \\ predicted"] + labels), title=f"confusion matrix ({title})", title_justify="left")
        for lab, row in zip(labels, matrix):
            table.add_row(lab, *(str(v) for v in row))
        out.print(table)
    out.print(_e(f"  model URI  {top.model_uri or '- (not logged: see --log-models)'}"))
    out.print(_e(f"  MLflow run {top.mlflow_run_id or '-'}  ({mask_url(top.tracking_uri or '-')})"))


@app.command()
def export(
    study: str = typer.Argument(..., help="Study name."),
    out_file: Path = typer.Option(..., "--out", help="Output file: .csv or .json."),
    storage: str = StorageOpt,
) -> None:
    """Write every trial of a study (state, scores, params, run ids) to CSV or JSON."""
    from sweep.records import trial_records

    suffix = out_file.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise SweepError(f"--out {out_file}: unknown format '{suffix or '(none)'}'; use .csv or .json")
    if not out_file.parent.exists():
        raise SweepError(f"--out {out_file}: folder {out_file.parent} does not exist; create it first")
    rows = [r.to_dict() for r in trial_records(_open_study(study, storage))]
    if suffix == ".json":
        out_file.write_text(json.dumps({"study": study, "trials": rows}, indent=2))
    else:
        param_keys = sorted({k for r in rows for k in r["params"]})
        flat = [{**{k: v for k, v in r.items() if k != "params"}, **{f"param_{k}": r["params"].get(k) for k in param_keys}}
                for r in rows]
        with out_file.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(flat[0]) if flat else ["number"])
            writer.writeheader()
            writer.writerows(flat)
    out.print(_e(f"wrote {len(rows)} trials to {out_file}"))


@app.command()
def sync(
    study: str = typer.Argument(..., help="Study name."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                                               help="MLflow tracking URI (default: the one the study was started with)."),
) -> None:
    """Log to MLflow every trial of a study it does not hold yet (after an MLflow outage)."""
    from sweep.sync import sync_study

    result = sync_study(study, storage, tracking_uri=tracking_uri)
    logged = f"logged {len(result.logged)} trial(s) from the Optuna study ({', '.join(map(str, result.logged))})" \
        if result.logged else "nothing to log"
    closed = "; ended the study's run" if result.closed_parent else ""
    out.print(f"{study}: {logged}{closed}; MLflow holds all {result.trials} finished or failed trials")


@app.command()
def ui(
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                                               help="MLflow store to browse (default sqlite:///mlflow.db)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(5000, "--port"),
) -> None:
    """Start the MLflow UI on the store sweeps log to."""
    from sweep.preflight import resolve_tracking_uri, sqlite_file

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        out.print(_e(f"that store is served already: open {credential_free(uri)} in a browser"))
        return
    path = sqlite_file(uri)
    if path is not None and not path.exists():
        raise SweepError(f"no MLflow store at {mask_url(uri)} yet; run `sweep run DATA` here first or pass --tracking-uri")
    # The store URI (a database password, maybe) goes through the environment, not the command line (`ps`).
    os.environ["MLFLOW_BACKEND_STORE_URI"] = uri
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    err.print(_e(f"MLflow UI on http://{host}:{port}  (store {mask_url(uri)}; open an experiment's 'Training runs'; "
                 "Ctrl-C to stop)"))
    os.execv(sys.executable, cmd)


@app.command()
def diagnose(
    data: Optional[Path] = typer.Argument(None, help="Data file: .npz or UCR-style .csv/.tsv (as for `sweep run`)."),
    study: Optional[str] = typer.Option(None, "--study", help="Explain a study instead: why its trials collapsed, and what to change."),
    storage: str = StorageOpt,
    test: Optional[Path] = typer.Option(None, "--test", help="Test file for .csv/.tsv data (counted only)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the cross-validation folds and the label shuffles."),
    data_check: bool = typer.Option(True, "--data-check/--no-data-check", help="With --study: also run the signal check on the study's data file (~5 s), when it is still there."),
    log: bool = typer.Option(True, "--log/--no-log", help="With --study: log the report as diagnosis.md to the study's MLflow run."),
    as_json: bool = JsonOpt,
) -> None:
    """Before a sweep (DATA): class balance, chance level, and whether the labels depend on the
    inputs at all. After one (--study NAME): which causes made its models collapse, with the evidence."""
    _check_seed(seed)
    if study is not None:
        if data is not None:
            raise SweepError("give DATA (check data before a sweep) or --study NAME (explain a study), not both")
        _diagnose_study(study, storage, seed=seed, data_check=data_check, log=log, as_json=as_json)
        return
    if data is None:
        raise SweepError("nothing to diagnose: give a data file (`sweep diagnose DATA`) or a study (`sweep diagnose --study NAME`)")
    from sweep.data import load_dataset
    from sweep.diagnose import diagnose as run_diagnosis

    d = run_diagnosis(load_dataset(data, test_path=test), seed=seed)
    if as_json:
        out.print_json(json.dumps(d.to_dict()))
        return
    out.print(f"[bold]{_e(d.source)}[/]: {sum(c.train for c in d.classes)} training sequences, {d.timesteps} steps x "
              f"{d.features} features")
    table = Table("class", "train", "test", box=box.SIMPLE_HEAD)
    for c in d.classes:
        table.add_row(_e(c.label), str(c.train), _fmt(c.test))
    out.print(table)
    out.print(f"imbalance {d.imbalance_ratio:.1f} : 1.  Always predicting the majority class scores accuracy "
              f"{d.majority_class_accuracy:.3f} but balanced accuracy {d.chance_balanced_accuracy:.3f} (chance).")
    s = d.signal
    out.print(f"signal check ({s.series_used} training series, {s.folds}-fold CV, {s.n_permutations} label shuffles): "
              f"baseline balanced accuracy {s.baseline_balanced_accuracy:.3f} +- {s.baseline_std:.3f}; shuffled labels "
              f"{s.shuffled_mean:.3f} (95th percentile {s.shuffled_p95:.3f}); p = {s.p_value:.3f}")
    out.print(f"[bold {'green' if s.has_signal else 'red'}]{_e(d.verdict)}[/]")


def _diagnose_study(name: str, storage: str, *, seed: int, data_check: bool, log: bool, as_json: bool) -> None:
    from sweep.explain import best_lines, explain
    from sweep.records import best_of, trial_records

    s = _open_study(name, storage)
    records = trial_records(s)
    confusion = next((r.result.val_confusion for r in records if r.result.val_confusion), None)
    check = None
    data_path = s.user_attrs.get("data_path")
    if data_check and data_path and Path(data_path).exists():
        from dataclasses import asdict

        from sweep.data import load_dataset
        from sweep.diagnose import signal_check

        try:
            d = load_dataset(data_path)
            check = asdict(signal_check(d.X_train, d.y_train, seed=seed))
        except SweepError as exc:  # the file changed since the sweep: diagnose without it
            err.print(f"[yellow]data check skipped: {_e(_one_line(str(exc)))}[/]")
    d = explain(name, records, best_of(s), val_confusion=confusion, data_check=check, seed=seed)
    logged = _log_diagnosis(s, d) if log else None
    if as_json:
        out.print_json(json.dumps(d.to_dict() | {"logged_to": logged}))
        return
    summary = d.summary
    out.print(f"[bold]study {_e(name)}[/]: {summary.trials_finished} finished trials, {summary.trials_collapsed} "
              f"collapsed; " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.outcomes.items() if v))
    out.print(f"[bold {'green' if not d.findings else 'red'}]{escape(d.headline)}[/]")
    if d.best:
        for line in best_lines(d.best):
            out.print(f"  {escape(line)}")
    for f in d.findings:
        out.print(f"\n[bold]{escape(f.title)}[/]")
        for e in f.evidence:
            out.print(f"  - {escape(e)}")
        out.print(f"  [green]next:[/] {escape(f.next_step)}")
    table = Table("parameter", "collapsed / trials by value", box=box.SIMPLE_HEAD, title="collapse by parameter",
                  title_justify="left")
    for param, groups in summary.by_parameter.items():
        if groups:
            table.add_row(param, _e("   ".join(f"{v}: {g['collapsed']}/{g['trials']}" for v, g in groups.items())))
    out.print(table)
    if logged:
        out.print(f"report logged to MLflow: run {logged} (diagnosis.md)")


def _log_diagnosis(study: Any, diagnosis: Any) -> str | None:
    """Log the report to the study's MLflow parent run; a store that cannot be reached only warns."""
    run_id, uri = study.user_attrs.get("mlflow_parent_run_id"), study.user_attrs.get("tracking_uri")
    if not run_id or not uri:
        return None
    from sweep.tracking import log_diagnosis

    try:
        log_diagnosis(uri, run_id, markdown=diagnosis.to_markdown(), record=diagnosis.to_dict())
    except Exception as exc:  # noqa: BLE001 - the diagnosis itself is printed either way
        err.print(f"[yellow]could not log the report to MLflow ({_e(mask_url(uri))}): "
                  f"{_e(redact(_one_line(str(exc)), uri)[:200])}[/]")
        return None
    return run_id


@app.command()
def predict(
    study: str = typer.Argument(..., help="Study name: its champion model (registry alias 'champion') predicts."),
    data: Path = typer.Argument(..., help=".npz (X, else X_test, else X_train) or .csv/.tsv (one series per row, label first)."),
    out_file: Path = typer.Option(Path("predictions.csv"), "--out", help="Output CSV: label and class probabilities per sequence."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                                               help="MLflow store (default: the one the study logged to)."),
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
    s = _open_study(study, storage)
    seqs = load_sequences(data, unlabeled=unlabeled)
    uri = _study_tracking_uri(s, tracking_uri)
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
    out.print(_e(f"model: models:/{study}/{record.version} (champion, trial {record.trial}; files verified, "
                 f"{record.digest[:19]}...)"))


def _study_tracking_uri(study: Any, tracking_uri: str | None) -> str:
    """The flag / MLFLOW_TRACKING_URI, else the store the study logged to (stored credential-free:
    credentials come from this environment); an SQLite store must exist."""
    uri = tracking_uri or study.user_attrs.get("tracking_uri") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///").partition("?")[0]).exists():
        raise SweepError(f"no MLflow store at {mask_url(uri)}; pass the --tracking-uri the study logged to")
    return uri


@app.command()
def serve(
    study: str = typer.Argument(..., help="Study name: its champion model is served."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                                               help="MLflow store (default: the one the study logged to)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(5001, "--port"),
) -> None:
    """Serve a study's champion over HTTP (MLflow's scoring server, POST /invocations), after checking
    it is the model the sweep registered; the verified copy is what runs."""
    import tempfile

    from sweep.integrity import champion_record

    if not 1 <= port <= 65535:
        raise SweepError(f"--port must be in [1, 65535], got {port}")
    s = _open_study(study, storage)
    uri = _study_tracking_uri(s, tracking_uri)
    record = champion_record(s)
    from sweep.tracking import fetch_champion

    local = fetch_champion(record, uri, Path(tempfile.mkdtemp(prefix="sweep-serve-")))
    err.print(_e(f"serving study {study}'s champion (version {record.version}, trial {record.trial}; files verified) "
                 f"on http://{host}:{port}/invocations from {local}; Ctrl-C to stop"))
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(local), "--env-manager", "local",
           "--host", host, "--port", str(port)]
    os.execv(sys.executable, cmd)


@app.command("make-data")
def make_data(
    kind: str = typer.Argument(..., help="seed-signal (planted temporal signal, known Bayes rate) or seed-noise (no signal)."),
    out_file: Path = typer.Option(..., "--out", help="Output .npz file."),
    n: int = typer.Option(1000, "--n", help="Training sequences."),
    n_test: int = typer.Option(1000, "--n-test", help="Test sequences."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic imbalanced (80/20) set of 20-step x 5-feature sequences."""
    _check_seed(seed)
    from sweep.synthetic import make_dataset, write_dataset

    arrays = make_dataset(kind, n_train=n, n_test=n_test, seed=seed)
    path = write_dataset(arrays, out_file)
    meta = json.loads(str(arrays["meta"]))
    extra = f"; planted Bayes-optimal balanced accuracy {meta['bayes_balanced_accuracy']:.2f}" if kind == "seed-signal" else ""
    out.print(_e(f"wrote {path}: {n} train + {n_test} test sequences, 20 steps x 5 features, labels 80/20{extra}"))


def _check_seed(seed: int) -> None:
    from sweep.config import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise SweepError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")


def main() -> None:
    """Entry point: run the app; turn project errors into one line and exit code 2."""
    # A process started in the background (`sweep run ... &`, nohup, some CI runners) inherits
    # SIGINT as ignored; Ctrl-C, kill -INT and kill -TERM must still stop it cleanly.
    interrupt.install()
    try:
        code = app(standalone_mode=False)
        # Typer turns KeyboardInterrupt into exit code 130 and returns it in this mode.
        if interrupt.requested() or code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except SweepError as exc:
        sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        sys.exit(2)
    except (click.UsageError, _typer_click.UsageError) as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        sys.stderr.write(f"error: {_one_line(exc.format_message())}{hint}\n")
        sys.exit(2)
    except (click.ClickException, _typer_click.ClickException) as exc:
        sys.stderr.write(f"error: {_one_line(exc.format_message())}\n")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        sys.stderr.write("interrupted: finished trials are saved; run the same command again to resume\n")
        sys.exit(130)
    except Exception as exc:  # a full disk, a read-only store, memory, a server gone: one line, no traceback
        from sweep.faults import describe_fault

        message = describe_fault(exc)
        if message is None:
            raise
        sys.stderr.write(f"error: {_one_line(message)}\n")
        sys.exit(2)

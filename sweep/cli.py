"""The `sweep` command line. It only wires the other modules together.

Heavy imports (TensorFlow, MLflow) happen inside the commands that need them, so `sweep --help`,
`sweep status` and friends start fast. A SweepError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

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

from sweep import cli_models, cli_results, display, interrupt
from sweep.cli_options import StorageOpt, StudyTrackingOpt
from sweep.config import DEFAULT_STORAGE, resolve_config
from sweep.display import arg as _arg  # noqa: F401
from sweep.display import err, out
from sweep.display import esc as _e
from sweep.display import one_line as _one_line
from sweep.errors import SweepError
from sweep.redact import credential_free, mask_url

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
    retrain_top: Optional[int] = typer.Option(None, "--retrain-top", envvar="SWEEP_RETRAIN_TOP", show_envvar=True, help="After the search, train the K best configurations again on the training part's folds, with new seeds, and choose the champion from them (default 3; 0 = skip)."),
    retrain_seeds: Optional[int] = typer.Option(None, "--retrain-seeds", help="Folds (runs, each with a new seed) per re-trained configuration (default 3)."),
    ship: Optional[str] = typer.Option(None, "--ship", help="What becomes the champion: trial (the default without --budget: the chosen trial's own model from the search), refit (the configuration the re-training chose, trained again on the whole training part), auto (the default with --budget: that refit unless training as long falls behind the trial's own length on the re-training's folds) or ensemble (its fold models from the re-training, their probabilities averaged)."),
    refit_seeds: Optional[int] = typer.Option(None, "--refit-seeds", help="Seeds of the refit (--ship refit or auto), their probabilities averaged into one model: the first always, the others as time allows (default 3)."),
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
        retrain_seeds=retrain_seeds, ship=ship, refit_seeds=refit_seeds,
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


def worker(
    study: str = typer.Argument(..., help="Name of a study created by `sweep run` (or `sweep run --create-only`)."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = StudyTrackingOpt,
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


def sync(
    study: str = typer.Argument(..., help="Study name."),
    storage: str = StorageOpt,
    tracking_uri: Optional[str] = StudyTrackingOpt,
) -> None:
    """Log to MLflow every trial of a study it does not hold yet (after an MLflow outage)."""
    from sweep.sync import sync_study

    result = sync_study(study, storage, tracking_uri=tracking_uri)
    logged = f"logged {len(result.logged)} trial(s) from the Optuna study ({', '.join(map(str, result.logged))})" \
        if result.logged else "nothing to log"
    closed = "; ended the study's run" if result.closed_parent else ""
    out.print(f"{study}: {logged}{closed}; MLflow holds all {result.trials} finished or failed trials")


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

# The commands, in the order `sweep --help` lists them.
for _command in (run, worker, cli_results.studies, cli_results.status, cli_results.best, cli_results.export, sync, ui,
                 cli_results.diagnose, cli_models.predict, cli_models.serve):
    app.command()(_command)
app.command("make-data")(cli_models.make_data)


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

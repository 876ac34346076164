"""`sweep studies | status | best | export | diagnose`: what a study holds, as tables or JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from objectives.search_space import KNOBS
from sweep.cli_options import JsonOpt, StorageOpt, check_seed, open_study
from sweep.display import err, out
from sweep.display import esc as _e
from sweep.display import finished_text, target_text
from sweep.display import fmt as _fmt
from sweep.display import one_line as _one_line
from sweep.errors import SweepError
from sweep.redact import mask_url, redact


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
        table.add_row(_e(i.name), f"{i.finished} / {target_text(i.n_trials_target, i.budget_seconds)}",
                      str(i.complete), str(i.pruned), str(i.failed), str(i.running), _fmt(i.best_value), _e(i.data or "-"))
    out.print(table if infos else "no studies yet: start one with `sweep run DATA`")


def status(study: str = typer.Argument(..., help="Study name."), storage: str = StorageOpt, as_json: bool = JsonOpt) -> None:
    """Show every trial of a study: state, score, balanced accuracy, collapse, key params, run id."""
    from sweep.ranking import champion_trial
    from sweep.records import trial_records
    from sweep.study import run_target

    s = open_study(study, storage)
    records = trial_records(s)
    n_trials, budget = run_target(s.user_attrs)
    if as_json:
        out.print_json(json.dumps({"study": study, "n_trials_target": n_trials, "budget_seconds": budget,
                                   "trials": [r.to_dict() for r in records]}))
        return
    finished = sum(r.state in ("COMPLETE", "PRUNED") for r in records)
    table = Table(title=f"study {_e(study)}: {finished_text(finished, n_trials, budget, s.user_attrs.get('deadline'))} (* = best)", title_justify="left",
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


def best(study: str = typer.Argument(..., help="Study name."), storage: str = StorageOpt, as_json: bool = JsonOpt) -> None:
    """Show the best trial: params, validation and test scores, confusion matrix, model URI."""
    from sweep.records import best_of

    top = best_of(open_study(study, storage))
    if top is None:
        raise SweepError(f"study {study!r} has no completed trial yet; run `sweep run` to finish some")
    if as_json:
        out.print_json(json.dumps(top.to_dict()))
        return
    r = top.result
    out.print(f"[bold]study {_e(study)}: best trial {top.number}[/]  score {_fmt(top.value)}")
    if (top.selection or {}).get("reason"):
        out.print(f"  [dim]{_e(top.selection['reason'])}[/]")
    if (top.length_check or {}).get("reason"):  # --ship auto: why the refit ships, or why not
        out.print(f"  [dim]{_e(top.length_check['reason'])}[/]")
    if top.shipped:
        from sweep.display import shipped_line, shipped_scores

        out.print(f"  {_e(shipped_line(top.shipped))}: {_e(shipped_scores(top.shipped, _fmt))}")
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
    rows = [r.to_dict() for r in trial_records(open_study(study, storage))]
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
    check_seed(seed)
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

    s = open_study(name, storage)
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

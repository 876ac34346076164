"""What the `sweep` command prints while a sweep runs and when it ends: the announcement, the
progress bar with one line per trial, the summary with validation and test side by side (Rich).

The commands in :mod:`sweep.cli` decide what to do; this module only shows the typed records
(:mod:`sweep.records`).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any, Callable, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from objectives.search_space import short_params
from sweep.redact import credential_free, mask_url

# Piped or redirected output is not cut to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
err = Console(stderr=True, highlight=False)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def esc(value: Any) -> str:
    """``value`` as text that Rich prints as is: a study name, label or path may look like markup ("[/]x")."""
    return escape(str(value))


def arg(value: str) -> str:
    """``value`` as one shell word that no command reads as an option (a study named "-x")."""
    return shlex.quote(value) if not value.startswith("-") else f"-- {shlex.quote(value)}"


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def announce(prep: Any, role: str = "study") -> None:
    d = prep.data
    counts = [int((prep.data.y_train == i).sum()) for i in range(d.n_classes)]
    classes = ", ".join(f"{lab}: {c}" for lab, c in zip(d.labels, counts))
    test = f", {len(d.y_test)} test" if d.has_test else ", no test split"
    workers = f"  {prep.cfg.workers} workers" if prep.cfg.workers > 1 else ""
    who = f"worker {os.getpid()} on study" if role == "worker" else "study"
    out.print(f"[bold]{who}[/] {esc(prep.name)}{workers}  [dim]storage {esc(mask_url(prep.cfg.storage))}[/]")
    out.print(f"[bold]data[/]  {esc(d.source)}: {len(d.y_train)} train sequences ({len(prep.split.y_train)} fit / "
              f"{len(prep.split.y_val)} validation{test}), {d.timesteps} steps x {d.features} features, "
              f"classes {{{esc(classes)}}}")


class _BudgetColumn:
    """A progress column for a time-boxed sweep: a bar of the budget spent and the time left
    (re-read from the deadline at every refresh, so it moves between trials too)."""

    def __new__(cls, opened: Any) -> Any:
        from rich.progress import ProgressColumn
        from rich.progress_bar import ProgressBar
        from rich.table import Table as _Table

        from sweep.budget import time_left_text

        class Column(ProgressColumn):
            def render(self, task: Any) -> Any:
                now, deadline = time.time(), opened.deadline
                if deadline is None:
                    return "workers starting (the budget's clock starts when they are ready)"
                grid = _Table.grid(padding=(0, 1))
                grid.add_row(ProgressBar(total=deadline.budget, completed=min(deadline.budget, now - deadline.started_at),
                                         width=30), time_left_text(deadline, now))
                return grid

        return Column()


def run_with_progress(opened: Any, workers: int, execute: Callable[..., Any]) -> Any:
    """Run ``execute(opened, workers, **callbacks)`` under a progress bar, one line per trial."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    timed = opened.deadline is not None or opened.prep.cfg.budget is not None
    if timed:
        columns: tuple[Any, ...] = (TextColumn("[bold]trials[/] {task.completed:.0f}"),
                                    TextColumn("best {task.fields[best]}"), _BudgetColumn(opened))
    else:
        columns = (TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    progress = Progress(*columns, console=out, transient=True)
    task = None

    def on_start(done: int, total: int) -> None:
        nonlocal task
        if done:
            out.print(f"resuming: {done} {f'of {total} ' if not timed else ''}trials already finished")
        task = progress.add_task("sweep", total=total, completed=min(done, total), best="-")
        deadline = opened.deadline
        if timed and deadline is None:
            from sweep.budget import format_duration

            out.print(f"time budget {format_duration(opened.prep.cfg.budget)}: its clock starts when the workers have "
                      "started (at most a minute after the command), then search, re-training and registration")
        elif deadline is not None:
            from sweep.budget import format_duration

            out.print(f"time budget {format_duration(deadline.budget)}: search until "
                      f"{time.strftime('%H:%M:%S', time.localtime(deadline.search_ends_at))}, then re-training and "
                      f"registration; ends by {time.strftime('%H:%M:%S', time.localtime(deadline.ends_at))}")
        if done >= total:
            out.print(f"nothing to do: the study already holds {done} finished trials (raise --n-trials to run more)")

    def on_wait(running: int) -> None:
        progress.console.print(f"[dim]waiting: the last {running} trial(s) run in other workers; if a worker dies, "
                               "its trial is retried here after the heartbeat grace period[/]")

    def on_trial_end(row: Any, best: Any) -> None:
        state = row.state.lower()
        colour = {"complete": "green", "pruned": "yellow", "fail": "red"}.get(state, "white")
        collapsed = "  [bold red]COLLAPSED[/]" if row.collapsed else ""
        star = " [bold green]*best*[/]" if best is not None and best.number == row.number else ""
        if state == "fail":
            detail = f"[red]{esc(row.reason)}[/]"
        elif state == "pruned" and row.reason:
            detail = (f"[yellow]{esc(row.reason.split(':')[0]):<9}[/] val bal.acc {fmt(row.val_balanced_accuracy)}  "
                      f"after {row.epochs_run} epochs")
        else:
            detail = (f"score {fmt(row.score)}  val bal.acc {fmt(row.val_balanced_accuracy)}  "
                      f"test bal.acc {fmt(row.test_balanced_accuracy)}")
        progress.console.print(
            f"trial {row.number:>3} [{colour}]{state:<8}[/] {detail}{collapsed}{star}  "
            f"[dim]{'baseline recipe: ' if row.baseline else ''}{esc(short_params(row.params))}  "
            f"{fmt(row.duration_s, 1)}s[/]"
        )
        if task is not None and state in ("complete", "pruned"):
            progress.update(task, advance=1, best=fmt(best.value) if best is not None else "-")

    def on_retrain(entry: Any) -> None:
        cfg = opened.prep.cfg
        then = {"refit": "; then the chosen one trains on the whole training part (--ship refit)",
                "auto": ("; then the chosen one trains longer, without early stopping, on the same folds, and on the "
                         "whole training part unless that falls behind (--ship auto)")}.get(cfg.ship, "")
        if entry is None and timed:
            progress.console.print(f"search over; re-training the top {cfg.retrain_top} configurations on up to "
                                   f"{cfg.retrain_seeds} folds each in the time left, to choose the champion{then}")
            return
        if entry is None:
            progress.console.print(f"re-training the top {cfg.retrain_top} configurations on {cfg.retrain_seeds} folds "
                                   "of the training part, new seeds each, for numbers one lucky split cannot make "
                                   f"(--retrain-top 0 skips this){then}")
            return
        if not entry.runs:  # the time budget left no room for it
            return
        progress.console.print(
            f"trial {entry.trial:>3} [cyan]re-trained[/] val bal.acc {mean_std(entry, 'val')}  test bal.acc "
            f"{mean_std(entry, 'test')}  (search: {fmt(entry.search_val_balanced_accuracy)}; "
            f"{entry.near_collapse_runs} of {len(entry.runs)} runs collapsed)")

    if timed:
        stop = progress.console.print

        def on_trial_end_budget(row: Any, best: Any) -> None:
            on_trial_end_plain(row, best)
            if row.state == "COMPLETE" and row.stopped == "deadline":
                stop(f"[dim]trial {row.number} was stopped by the search deadline after {row.epochs_run} epochs "
                     "(complete, with its best epoch's weights)[/]")

        on_trial_end_plain, on_trial_end = on_trial_end, on_trial_end_budget

    with progress:
        if workers > 1:
            return execute(opened, workers, on_start=on_start, on_trial_end=on_trial_end, on_retrain=on_retrain)
        return execute(opened, 1, on_start=on_start, on_trial_end=on_trial_end, on_wait=on_wait, on_retrain=on_retrain)


def mean_std(entry: Any, split: str) -> str:
    mean, std = getattr(entry, f"{split}_balanced_accuracy_mean"), getattr(entry, f"{split}_balanced_accuracy_std")
    return "-" if mean is None else f"{mean:.4f} +- {std:.4f}"


def print_summary(result: Any, prep: Any) -> None:
    from sweep.records import finished

    records = result.records
    done = finished(records)
    collapsed = sum(1 for r in done if r.near_collapse)
    count = f"{len(done)}/{result.n_trials}" if prep.cfg.budget is None else f"{len(done)}"
    out.print(f"\n[bold]{esc(result.name)}[/]: {count} trials finished "
              f"({sum(r.state == 'COMPLETE' for r in records)} complete, {sum(r.state == 'PRUNED' for r in records)} pruned, "
              f"{sum(r.state == 'FAIL' for r in records)} failed; {collapsed} predicted (nearly) one class)")
    if collapsed:
        out.print(esc(f"why they collapsed, and what to change: sweep diagnose {study_option(result.name)}"))
    best = result.best
    if best is None:
        out.print("[red]no trial completed[/]")
        return
    r = best.result
    choice = best.selection or {}
    title = (f"champion: trial {best.number} (chosen by the re-training over the search's winner, trial "
             f"{choice['search_winner']})" if choice.get("switched") else f"best trial: {best.number}")
    table = Table(title=title, show_header=True, title_justify="left")
    table.add_column("")
    table.add_column("validation (selects)")
    table.add_column("test (reported only)")
    table.add_row("balanced accuracy", fmt(r.val_balanced_accuracy), fmt(r.test_balanced_accuracy))
    table.add_row("accuracy", fmt(r.val_accuracy), fmt(r.test_accuracy))
    table.add_row("macro F1", fmt(r.val_macro_f1), fmt(r.test_macro_f1))
    table.add_row("score (bal.acc - penalty)", fmt(best.value), "")
    if r.val_balanced_accuracy_adjusted is not None:
        table.add_row("bal.acc, decision adjusted", f"{fmt(r.val_balanced_accuracy_adjusted)} (fitted here)",
                      fmt(r.test_balanced_accuracy_adjusted))
    if best.shipped and best.shipped.get("kind") == "refit":
        averaged = seeds_averaged(best.shipped)
        table.add_row(f"shipped: refit on all {best.shipped['sequences']} training sequences"
                      + (f" ({averaged})" if averaged else ""),
                      "(nothing held out)", fmt(best.shipped.get("test_balanced_accuracy")))
    elif best.shipped:
        table.add_row(f"shipped: mean of {best.shipped['folds']} fold models", f"{fmt(best.shipped.get('oof_val_balanced_accuracy'))} "
                      "(bal.acc out of fold)", fmt(best.shipped.get("test_balanced_accuracy")))
    if best.bayes_balanced_accuracy is not None:
        test_bayes = best.bayes_balanced_accuracy_test
        table.add_row("planted Bayes-optimal bal.acc", f"{fmt(best.bayes_balanced_accuracy)} (population)",
                      f"{fmt(test_bayes)} (this test split)" if test_bayes is not None else "")
    out.print(table)
    out.print(esc(f"params: {short_params(best.params)}"))
    if result.retrained and any(e.runs for e in result.retrained):
        table = Table("trial", "search val bal.acc", "re-trained val bal.acc", "re-trained test bal.acc", "collapsed runs",
                      title=f"top {len(result.retrained)} re-trained {times_each(result.retrained)}, "
                            "a fold and a new seed per run (mean +- std)", title_justify="left", box=box.SIMPLE_HEAD)
        for e in result.retrained:
            mark = " *" if e.trial == best.number else ""
            table.add_row(f"{e.trial}{mark}", fmt(e.search_val_balanced_accuracy), mean_std(e, "val"),
                          mean_std(e, "test"), f"{e.near_collapse_runs}/{len(e.runs)}")
        out.print(table)
        if choice.get("reason"):  # * = the champion; the margin rule of sweep/selection.py says why
            out.print(f"[{'yellow' if choice.get('switched') else 'dim'}]{esc(choice['reason'])}[/]")
    if best.length_check:  # --ship auto: why the refit ships, or why it does not
        out.print(f"[dim]{esc(best.length_check['reason'])}[/]")
    if best.shipped:
        out.print(esc(shipped_line(best.shipped)))
    if r.collapsed:
        out.print(f"[red]every complete trial predicted one class: no model is registered as the champion "
                  f"(sweep predict has none to use)[/]; see sweep diagnose {esc(study_option(result.name))}")
    elif best.model_uri:
        out.print(esc(f"model:  {best.model_uri}"))
    name, store = arg(result.name), mask_url(result.tracking_uri)
    out.print(esc(f"\nnext:   sweep best {name}    sweep status {name}    sweep ui  (MLflow store {store})"))
    if result.experiment_id is not None and not result.tracking_uri.startswith("http"):
        out.print(f"        then open http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs "
                  "(trials are nested under the study run)")
    elif result.experiment_id is not None:
        out.print(esc(f"        {credential_free(result.tracking_uri).rstrip('/')}/#/experiments/{result.experiment_id}/runs"))


def target_text(n_trials: int | None, budget: float | None) -> str:
    """The latest run's aim as a study listing shows it: ``20``, ``6m00s budget``, ``30 or 6m00s budget``."""
    from sweep.budget import format_duration

    if budget is None:
        return fmt(n_trials)
    return f"{'' if n_trials is None else f'{n_trials} or '}{format_duration(budget)} budget"


def finished_text(finished: int, n_trials: int | None, budget: float | None,
                  deadline: dict[str, Any] | None = None, now: float | None = None) -> str:
    """``14 of 20 trials finished``; with a time budget ``14 trials finished (time budget 6m00s a run)``,
    and while the run lasts (its stored ``deadline``, until the run marks it ended) the time it has left:
    ``(time budget 6m00s a run; now: search 2m10s left)``."""
    text = f"{finished} trials finished" if n_trials is None else f"{finished} of {n_trials} trials finished"
    if budget is None:
        return text
    from sweep.budget import Deadline, format_duration, time_left_text

    clock = ""
    now = time.time() if now is None else now
    if (deadline or {}).get("pending"):
        clock = "; now: starting, the clock starts when its workers are ready"
    elif deadline and "ends_at" in deadline and "ended_at" not in deadline and now < float(deadline["ends_at"]):
        clock = f"; now: {time_left_text(Deadline.from_dict(deadline), now)}"
    return f"{text} (time budget {format_duration(budget)} a run{clock})"


def times_each(retrained: Sequence[Any]) -> str:
    """How many runs the re-trained configurations got: one count, or a range when the time budget
    stopped the re-training before every configuration had all its folds."""
    counts = sorted({len(e.runs) for e in retrained})
    if len(counts) == 1:
        return f"{counts[0]} times each"
    return f"{counts[0]}-{counts[-1]} times (the time budget stopped the rest)"


def seeds_averaged(shipped: dict[str, Any]) -> str:
    """``3 seeds averaged`` for a refit shipped as several seeds (sweep.refit); empty for one."""
    seeds = int(shipped.get("seeds") or 1)
    return f"{seeds} seeds averaged" if seeds > 1 else ""


def shipped_line(shipped: dict[str, Any]) -> str:
    """What ships when it is not the trial's own model (sweep.refit, sweep.ensemble), in one sentence."""
    if shipped.get("kind") == "refit":
        averaged = seeds_averaged(shipped)
        return (f"ships as trial {shipped['trial']}'s configuration refit on all {shipped['sequences']} training "
                f"sequences for {shipped['epochs']} epochs (nothing held out{', ' + averaged if averaged else ''}), "
                "not the search's model")
    k = shipped["folds"]
    return (f"ships as the mean of trial {shipped['trial']}'s {k} fold models from the re-training (each trained "
            f"to its patience without one fold of the training part), not the search's single model")


def shipped_scores(shipped: dict[str, Any], fmt: Callable[[Any], str]) -> str:
    """The shipped model's scores for `sweep best`: out-of-fold validation (an ensemble) and test."""
    if shipped.get("kind") == "refit":
        return f"test balanced accuracy {fmt(shipped.get('test_balanced_accuracy'))} (reported only)"
    return (f"out-of-fold val balanced accuracy {fmt(shipped.get('oof_val_balanced_accuracy'))}, "
            f"test {fmt(shipped.get('test_balanced_accuracy'))}")


def study_option(name: str) -> str:
    """``--study NAME`` as the shell and the CLI read it back (``--study=-x`` for a name like an option)."""
    return f"--study {shlex.quote(name)}" if not name.startswith("-") else f"--study={shlex.quote(name)}"

"""The study's end report on its MLflow parent run: the plots, the collapse summary, the best trial,
the top-k re-training, and the metrics and tags the runs table shows."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from sweep import plots
from sweep.errors import first_line
from sweep.records import BestTrial, RetrainEntry, TrialRecord, finished, steadiest
from sweep.redact import redact

if TYPE_CHECKING:
    from sweep.registry import Registry
    from sweep.summary import CollapseSummary

_logger = logging.getLogger(__name__)


def sync_champion(registry: Registry, best: BestTrial, *, tracking_uri: str,
                  record_model: Callable[[int, dict[str, str]], None]) -> None:
    """Point the champion alias at the shipped trial's model and make sure the study records that
    version and its digest (what `sweep predict` and `sweep serve` check): a version registered
    now, or one whose record a trial lost (its registration went through, its alias move did not)."""
    version = registry.sync_champion(best.number, model_uri=best.model_uri, run_id=best.mlflow_run_id, score=best.value)
    if version is not None and (version != best.record.model_version or not best.record.model_digest):
        record_model(best.number, registry.model_links(version, tracking_uri))


def log_report(
    client: MlflowClient, run_id: str, *, study_name: str, labels: list[Any], registry: Registry,
    records: list[TrialRecord], best: BestTrial | None, summary: CollapseSummary | None = None,
    importances: dict[str, float] | None = None, retrained: list[RetrainEntry] | None = None,
    tracking_uri: str, record_model: Callable[[int, dict[str, str]], None],
) -> None:
    """Log the optimization history, the collapse summary and the best trial on the parent run
    ``run_id``; point the registry's champion at the shipped trial's model. A model registered now
    (a configuration the re-training chose) has its version and digest told to ``record_model``."""
    fig = plots.history_figure(records, title=f"{study_name}: optimization history")
    client.log_figure(run_id, fig, "plots/optimization_history.png")
    done = [r for r in records if r.state in ("COMPLETE", "PRUNED")]
    metrics: dict[str, float] = {
        "trials_finished": len(done),
        "trials_failed": sum(1 for r in records if r.state == "FAIL" and not r.surplus),
    }
    tags: dict[str, str] = {}
    if any(r.val_balanced_accuracy is not None for r in done):
        client.log_figure(run_id, plots.score_by_choice_figure(
            finished(records), "class_weight",
            title=f"{study_name}: balanced accuracy by class-weight strategy"),
            "plots/balanced_accuracy_by_class_weight.png")
    if importances:
        client.log_dict(run_id, importances, "parameter_importances.json")
        client.log_figure(run_id, plots.importance_figure(
            importances, title=f"{study_name}: parameter importances"), "plots/parameter_importances.png")
    if retrained:
        client.log_dict(run_id, [e.to_dict() for e in retrained], "retrained_top_k.json")
        for entry in retrained:
            for split in ("val", "test"):
                for stat in ("mean", "std"):
                    value = getattr(entry, f"{split}_balanced_accuracy_{stat}")
                    if value is not None:
                        metrics[f"retrain_rank{entry.rank}_{split}_balanced_accuracy_{stat}"] = value
        tags["retrain.best_trial_number"] = str(steadiest(retrained).trial)
    if best is not None and best.result.val_confusion:
        panels = [(f"best trial {best.number}: validation", best.result.val_confusion)]
        if best.result.test_confusion:
            panels.append((f"best trial {best.number}: test (not used for selection)", best.result.test_confusion))
        client.log_figure(run_id, plots.confusion_figure(panels, labels), "plots/best_confusion_matrix.png")
    if summary is not None:
        client.log_dict(run_id, summary.to_dict(), "collapse_summary.json")
        if summary.trials_finished:
            client.log_figure(run_id, plots.collapse_by_parameter_figure(summary, title=study_name),
                              "plots/collapse_by_parameter.png")
        metrics.update({f"trials_{k}": v for k, v in summary.outcomes.items()})
        metrics.update({f"trials_{k}_gradients": v for k, v in summary.gradient_trouble.items()})
        metrics["trials_collapsed"] = summary.trials_collapsed
        if summary.collapse_rate is not None:
            metrics["collapse_rate"] = summary.collapse_rate
    if best is not None and best.model_uri and not best.result.collapsed:
        try:
            sync_champion(registry, best, tracking_uri=tracking_uri, record_model=record_model)
        except Exception as exc:  # noqa: BLE001 - a store without a registry must not fail the sweep
            _logger.warning("could not point the champion alias at trial %s: %s", best.number, redact(first_line(exc)))
    if best is not None:
        record = best.to_dict()
        client.log_dict(run_id, record, "best_trial.json")
        metrics.update({f"best_{k}": record[k] for k in (
            "value", "val_balanced_accuracy", "test_balanced_accuracy", "val_balanced_accuracy_adjusted",
            "test_balanced_accuracy_adjusted") if record.get(k) is not None})
        tags.update({
            "best.trial_number": str(best.number),
            "best.run_id": best.mlflow_run_id or "",
            "best.model_uri": best.model_uri or "",
            **{f"best.{k}": str(v) for k, v in best.params.items()},
        })
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])

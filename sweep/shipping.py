"""What ships in place of a trial's own model (``--ship ensemble`` or ``refit``): the model files
logged as one pyfunc in a run of their own, nested under the sweep's run, registered under the
study's name as a new version with a description, and given the ``champion`` alias; the study then
links that model as the trial's (what `sweep predict`, `sweep serve` and the integrity check load)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sweep.errors import first_line
from sweep.redact import redact

_logger = logging.getLogger(__name__)


def ship_models(
    opened: Any, trial: Any, paths: list[Path], *, role: str, run_name: str, metrics: list[tuple[str, float, int]],
    tags: dict[str, str], metadata: dict[str, str], note: str, description: str, what: str,
) -> dict[str, Any] | None:
    """Log the ``.keras`` files ``paths`` (trial ``trial``'s configuration; several: their
    probabilities averaged) as one pyfunc in a new run (tag ``sweep.role`` = ``role``) with the
    trial's parameters, ``metrics`` (key, value, step) and ``tags``; register it (``note`` in the
    version's tags, ``description`` as its text) and point ``champion`` at it.

    Returns the model's links and run id, or None when MLflow refused (``what`` names the model in
    the warning; the trial's own model then stays the champion)."""
    from mlflow.entities import Metric, Param, RunTag

    from sweep.trial_run import TAG_ROLE, TAG_STUDY, TAG_TRIAL, log_pyfunc

    tracker, number = opened.tracker, trial.number
    client = tracker.client
    try:
        run = client.create_run(
            tracker.experiment_id, run_name=run_name,
            tags={TAG_STUDY: tracker.study_name, TAG_ROLE: role, TAG_TRIAL: str(number),
                  **({"mlflow.parentRunId": opened.parent_run_id} if opened.parent_run_id else {})})
        run_id = run.info.run_id
        client.log_batch(run_id, metrics=[Metric(k, float(v), 0, step) for k, v, step in metrics],
                         params=[Param(k, str(v)) for k, v in trial.params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        info = log_pyfunc(tracker, run_id, paths, trial_number=number, metadata=metadata)
        version = tracker.registry.ship(info.model_uri, model_id=info.model_id, run_id=run_id, trial_number=number,
                                        note=note, description=description)
        links = {"model_uri": info.model_uri, **tracker.registry.model_links(version, tracker.tracking_uri)}
        client.set_terminated(run_id, status="FINISHED")
    except Exception as exc:  # noqa: BLE001 - the trial's own model stays the champion
        _logger.warning("could not ship %s (%s); its own model stays the champion", what,
                        redact(first_line(exc), tracker.tracking_uri)[:200])
        return None
    tracker.record_model(number, links)
    return {"mlflow_run_id": run_id, **links}

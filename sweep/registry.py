"""The study's registered model: each new best trial's model is a version, the alias ``champion``
marks the best (moved only to a better one, also with several workers); loading a logged model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from sweep.errors import SweepError, first_line
from sweep.preflight import mlflow_defaults, resolve_tracking_uri
from sweep.ranking import outranks
from sweep.redact import mask_url, redact

_logger = logging.getLogger(__name__)

CHAMPION = "champion"  # the registry alias of a study's best model
TAG_STUDY = "sweep.study"


class Registry:
    """The registered model named after a study (the MLflow client is the tracker's)."""

    def __init__(self, client: MlflowClient, study_name: str) -> None:
        self.client, self.study_name = client, study_name

    def crown(self, model_uri: str, *, model_id: str | None, trial_number: int, score: float,
              val_loss: float | None = None, run_id: str | None = None) -> str:
        """Register a new best model under the study's name and move the ``champion`` alias to it,
        unless another worker's champion ranks higher already (score, then validation loss).
        Returns the registered version."""
        name = self.study_name
        self._ensure_registered_model()
        if run_id is None and mlflow.active_run() is not None:
            run_id = mlflow.active_run().info.run_id
        version = self.client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id, tags={
            "sweep.trial_number": str(trial_number), "sweep.val_score": repr(score),
            "sweep.val_loss": repr(val_loss)})
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION)
            loss = current.tags.get("sweep.val_loss", "None")
            held_score, held_loss = float(current.tags.get("sweep.val_score", "-inf")), None if loss == "None" else float(loss)
        except Exception:  # noqa: BLE001 - no champion yet
            held_score, held_loss = float("-inf"), None
        if outranks(score, val_loss, held_score, held_loss):
            try:
                self.point_champion(version.version, trial_number)
            except Exception as exc:  # noqa: BLE001 - the version stands; the sweep's end points the alias
                # Two workers that finish at the same moment both move the alias; on a SQL store the
                # second write can fail (a unique key). Losing the version's record would leave a
                # champion `sweep predict` refuses to load, so only the alias waits for sync_champion.
                _logger.warning("trial %d: model version %s registered, champion alias not moved yet (%s); the "
                                "sweep's end points it at the best trial", trial_number, version.version,
                                redact(first_line(exc)))
        return str(version.version)

    def _ensure_registered_model(self) -> None:
        """The registered model named after the study (made by the first trial or worker that needs it)."""
        name = self.study_name
        try:
            self.client.create_registered_model(name, tags={TAG_STUDY: name}, description=(
                f"Best models of the lstm-sweep study {name}; the alias '{CHAMPION}' marks the best so far."))
        except Exception:  # noqa: BLE001 - it exists (another trial or worker registered it first)
            pass

    def model_links(self, version: str, tracking_uri: str) -> dict[str, str]:
        """What the study records of a registered version, for `sweep predict` and `sweep serve` to
        check before they load it: ``model_version`` and ``model_digest``."""
        return {"model_version": version, "model_digest": self.model_digest(version, tracking_uri)}

    def model_digest(self, version: str, tracking_uri: str) -> str:
        """:func:`sweep.integrity.tree_digest` of a registered version's files, as the store serves them
        (what `sweep predict` will download and check against the study's record)."""
        import tempfile
        from pathlib import Path

        from sweep.integrity import tree_digest

        with tempfile.TemporaryDirectory(prefix="sweep-digest-") as tmp:
            return tree_digest(_download_version(self.client, tracking_uri, self.study_name, version, Path(tmp)))

    def sync_champion(self, trial_number: int, *, model_uri: str | None = None, run_id: str | None = None,
                      score: float | None = None) -> str | None:
        """At the sweep's end, point ``champion`` at the shipped trial's model: two workers that finish
        tied trials at the same moment may both have registered theirs (the first to register holds
        the alias, while the study's best is the first to finish); a trial the re-training chose
        that was never a new best has its logged model (``model_uri``, ``run_id``) registered now.

        Returns the trial's version the alias now points at (the study must record it and its digest
        if it has not: registered now, or registered by a trial whose record of it was lost), or None
        when the trial has no model to point at."""
        name, number = self.study_name, str(trial_number)
        versions = self.client.search_model_versions(f"name = '{name}'")
        mine = [v for v in versions if v.tags.get("sweep.trial_number") == number]
        if not mine:
            # The re-training chose a configuration that was never a new best: register its model now.
            uri = model_uri
            if not uri:
                return None
            model_id = uri.split("/", 1)[1] if uri.startswith("models:/m-") else None
            mine = [self.client.create_model_version(
                name, uri, run_id=run_id, model_id=model_id,
                tags={"sweep.trial_number": number, "sweep.val_score": repr(score),
                      "sweep.selected_by": "re-training (mean over seeds beyond their spread)"})]
        version = str(max(mine, key=lambda v: int(v.version)).version)  # an int from SQL stores, a str over REST
        try:
            current = str(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except Exception:  # noqa: BLE001 - no alias yet
            current = None
        if current != version:
            self.point_champion(version, trial_number)
        return version

    def ship(self, model_uri: str, *, model_id: str | None, run_id: str, trial_number: int, note: str,
             description: str | None = None) -> str:
        """Register the model that ships for ``trial_number`` (the re-training's fold ensemble) as a
        new version and point ``champion`` at it: the sweep's end (:meth:`sync_champion`) keeps the
        newest version of the shipped trial. Returns the version."""
        name = self.study_name
        self._ensure_registered_model()
        version = self.client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id, tags={
            "sweep.trial_number": str(trial_number), "sweep.selected_by": note}, description=description)
        self.point_champion(version.version, trial_number)
        return str(version.version)

    def point_champion(self, version: str | int, trial_number: int) -> None:
        self.client.set_registered_model_alias(self.study_name, CHAMPION, str(version))
        self.client.set_registered_model_tag(self.study_name, "sweep.champion_trial", str(trial_number))


def load_model(model_uri: str, tracking_uri: str | None) -> Any:
    """Load a logged model as MLflow pyfunc (``predict`` gives ``label`` and ``proba_*`` columns)."""
    mlflow_defaults()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    return mlflow.pyfunc.load_model(model_uri)


def champion_uri(study_name: str) -> str:
    return f"models:/{study_name}@{CHAMPION}"


def model_input_shape(model_uri: str, tracking_uri: str | None) -> tuple[int, int]:
    """(timesteps, features) a logged model takes, read from its signature (no TensorFlow needed).

    Raises:
        SweepError: the model or the store cannot be found.
    """
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_defaults()
    mlflow.set_tracking_uri(uri)
    try:
        info = mlflow.models.get_model_info(model_uri)
    except Exception as exc:  # noqa: BLE001 - registry/store errors vary
        raise SweepError(f"no model {model_uri} in the MLflow store {mask_url(uri)} ({redact(first_line(exc))[:160]}); "
                         "a study's champion is "
                         "registered when a sweep logs its best model (--log-models best or all)") from None
    shape = info.signature.inputs.inputs[0].shape if info.signature is not None else None
    if not shape or len(shape) != 3:
        raise SweepError(f"model {model_uri} has no [n, timesteps, features] input signature; was it logged by lstm-sweep?")
    return int(shape[1]), int(shape[2])


def _download_version(client: MlflowClient, tracking_uri: str, name: str, version: str, dst: Path) -> str:
    """A registered version's files, downloaded into ``dst`` through ``client``'s own registry (a
    ``models:/`` URI would go to the process's default registry, which may be another store)."""
    source = client.get_model_version_download_uri(name, str(version))
    return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri)


def fetch_champion(record: Any, tracking_uri: str | None, dst: Path) -> Path:
    """Download the study's champion into ``dst`` after checking it is the model the sweep registered
    (:class:`sweep.integrity.ChampionRecord`): the alias points at the recorded version, and the files
    hash to the recorded digest. Returns the local copy; load or serve that, not the registry's.

    Raises:
        ModelIntegrityError: the alias moved or the files changed.
        SweepError: the store or the model cannot be reached.
    """
    from sweep.integrity import verify

    uri = resolve_tracking_uri(tracking_uri)
    mlflow_defaults()  # no download progress bar in `sweep predict`'s output
    client = MlflowClient(uri)
    try:
        alias = str(client.get_model_version_by_alias(record.study, CHAMPION).version)
    except Exception as exc:  # noqa: BLE001 - registry/store errors vary
        raise SweepError(f"no champion model for study {record.study!r} in the MLflow store {mask_url(uri)} "
                         f"({redact(first_line(exc))[:160]}); pass the --tracking-uri the study logged to") from None
    if alias == record.version:
        try:
            local = _download_version(client, uri, record.study, record.version, dst)
        except Exception as exc:  # noqa: BLE001 - registry/store errors vary
            raise SweepError(f"cannot download the champion of study {record.study!r} from {mask_url(uri)} "
                             f"({redact(first_line(exc))[:160]})") from None
    else:
        local = str(dst)  # verify() refuses the moved alias before anything is downloaded
    verify(record, alias_version=alias, files=local)
    return Path(local)

"""Which model a study's champion is, and proof that its files are the ones the sweep registered.

Loading an MLflow pyfunc model runs its code, and anyone who can write to the tracking server can
register a model version or move the ``champion`` alias. So the sweep records, in the Optuna
study (a store MLflow users cannot write), the registry version and a digest of the files of every
model it registers; ``sweep predict`` and ``sweep serve`` load a champion only when the alias
points at the version of the study's champion trial (the search's winner, or the one the top-k
re-training chose) and the files hash to what was recorded.

Pure standard library (the download itself is in :mod:`sweep.tracking`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import ModelIntegrityError

DIGEST_ATTR = "model_digest"
VERSION_ATTR = "model_version"


def tree_digest(root: str | Path) -> str:
    """``sha256:<hex>`` over every file under ``root``: its path relative to ``root``, its size and
    its bytes, in path order. Renaming, adding, removing or changing any file changes it; where the
    tree lies does not. A symbolic link is refused (a download never makes one)."""
    root = Path(root)
    outer = hashlib.sha256()
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        if path.is_symlink():
            raise ModelIntegrityError(f"{path}: a symbolic link in a model's files; refusing to load it")
        if not path.is_file():
            continue
        inner = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0{inner.hexdigest()}\n".encode())
    return f"sha256:{outer.hexdigest()}"


@dataclass(frozen=True)
class ChampionRecord:
    """What the study recorded when the sweep registered its champion's model."""

    study: str
    trial: int
    version: str
    digest: str


def model_record(study: Any, number: int) -> dict[str, Any]:
    """The model attributes the sweep stored for trial ``number``: on the trial, or (for a trial
    already finished when its model was logged) on the study as ``<attribute>.<number>``."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    attrs = dict(trial.user_attrs) if trial is not None else {}
    study_attrs = study.user_attrs
    out = {}
    for key in ("model_uri", DIGEST_ATTR, VERSION_ATTR):
        value = attrs.get(key, study_attrs.get(f"{key}.{number}"))
        if value is not None:
            out[key] = value
    return out


def champion_record(study: Any) -> ChampionRecord:
    """The study's champion as the sweep recorded it: the shipped trial's registered version and digest.

    Raises:
        ModelIntegrityError: the study has no registered champion, or none the sweep could verify.
    """
    from sweep.ranking import champion_trial
    from sweep.records import record_of

    name = study.study_name
    best, _ = champion_trial(study)  # the configuration that ships: the re-training may choose another
    if best is None:
        raise ModelIntegrityError(f"study {name!r} has no completed trial, so no champion model; run `sweep run` first")
    if record_of(best).collapsed:
        raise ModelIntegrityError(f"study {name!r}: every complete trial predicted one class, so no model is the "
                                  f"champion; see sweep diagnose --study={name}")
    record = model_record(study, best.number)
    if not record.get(DIGEST_ATTR) or not record.get(VERSION_ATTR):
        raise ModelIntegrityError(
            f"study {name!r}: its best trial {best.number} has no registered model with a recorded digest (logged with "
            "--log-models none, a registry that refused it, or an older lstm-sweep); run the sweep again to register "
            "one that can be verified")
    return ChampionRecord(study=name, trial=best.number, version=str(record[VERSION_ATTR]),
                          digest=str(record[DIGEST_ATTR]))


def verify(record: ChampionRecord, *, alias_version: str, files: str | Path) -> None:
    """Raise ModelIntegrityError unless the alias points at the recorded version and ``files`` hash
    to the recorded digest."""
    why = "loading a model runs its code"
    if str(alias_version) != record.version:
        raise ModelIntegrityError(
            f"the champion alias of study {record.study!r} points at model version {alias_version}, but the sweep "
            f"registered trial {record.trial}'s model as version {record.version}; refusing to load it ({why}). "
            f"Point the alias back at version {record.version} or run the sweep again")
    actual = tree_digest(files)
    if actual != record.digest:
        raise ModelIntegrityError(
            f"the files of study {record.study!r}'s champion (version {record.version}, trial {record.trial}) are not "
            f"the ones the sweep registered ({actual[:19]}... instead of {record.digest[:19]}...); refusing to load "
            f"them ({why}). Restore the model from a backup or run the sweep again")

"""An epoch's checkpoint in MLflow: find it, download it (to evaluate, or to continue training), delete its weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from mg_tune.checkpoint import RESUME_FILE, load_checkpoint
from mg_tune.tracking.layout import CHECKPOINT_ARTIFACT, EPOCH_TAG, WEIGHTS_DELETED_TAG, _tag_value
from mg_tune.tracking.queries import _prefer, _quote, iter_logged_models

__all__ = ["delete_weights", "download_checkpoint", "download_model_file", "download_resume_checkpoint", "find_checkpoint_model"]


def find_checkpoint_model(client: MlflowClient, run_id: str, epoch: int) -> LoggedModel:
    """The READY LoggedModel of ``(run_id, epoch)``; ``FileNotFoundError`` if there is none."""
    experiment_id = client.get_run(run_id).info.experiment_id
    query = f"source_run_id = {_quote(run_id)} AND tags.`{EPOCH_TAG}` = '{int(epoch)}'"
    best: LoggedModel | None = None
    for model in iter_logged_models(client, experiment_id, query):
        if model.status == LoggedModelStatus.READY:
            best = _prefer(best, model)
    if best is None:
        raise FileNotFoundError(f"no checkpoint logged for run {run_id} epoch {epoch}")
    return best


def download_checkpoint(tracking_uri: str, run_id: str, epoch: int, dst: Path) -> Path:
    """Download the checkpoint of ``epoch`` of trial run ``run_id`` and return its local path.

    ``dst`` is a directory (the file lands in ``dst/checkpoint.pt``) or, if it
    ends in ``.pt``, the file path itself. The file is moved into place
    atomically. Load it with :func:`mg_tune.checkpoint.load_checkpoint`.

    Raises:
        FileNotFoundError: no READY model of that epoch, or its weights were
            deleted by the search's retention policy (the message says why).
    """
    model = find_checkpoint_model(MlflowClient(tracking_uri), run_id, epoch)
    if WEIGHTS_DELETED_TAG in model.tags:
        raise FileNotFoundError(f"the weights of run {run_id} epoch {epoch} were deleted by the search's retention policy: {model.tags[WEIGHTS_DELETED_TAG]}")
    dst = Path(dst)
    target = dst if dst.suffix == ".pt" else dst / CHECKPOINT_ARTIFACT
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        download_model_file(tracking_uri, model, CHECKPOINT_ARTIFACT, Path(tmp)).replace(target)
    return target


def download_resume_checkpoint(tracking_uri: str, run_id: str, epoch: int, dst: Path) -> Path:
    """Download ``checkpoint.pt`` and ``resume.pt`` of ``epoch`` into the directory ``dst``; the path of ``checkpoint.pt``.

    :func:`mg_tune.checkpoint.load_resumable` (the trainer's ``resume_from``) joins the two.

    Raises:
        FileNotFoundError: the epoch has no ``resume.pt`` and no optimizer
            state in ``checkpoint.pt`` (only a trial's newest epoch keeps it).
    """
    stored = download_checkpoint(tracking_uri, run_id, epoch, Path(dst))
    model = find_checkpoint_model(MlflowClient(tracking_uri), run_id, epoch)
    with tempfile.TemporaryDirectory(dir=stored.parent) as tmp:
        try:
            download_model_file(tracking_uri, model, RESUME_FILE, Path(tmp)).replace(stored.with_name(RESUME_FILE))
        except (OSError, MlflowException):  # not there: a checkpoint of an older layout holds its optimizer state, or none does
            if load_checkpoint(stored)["optimizer"] is None:
                raise FileNotFoundError(f"run {run_id} epoch {epoch} has no {RESUME_FILE}: only a trial's newest epoch keeps the state to continue training from") from None
    return stored


def delete_weights(tracking_uri: str, model: LoggedModel, reason: str) -> None:
    """Delete ``checkpoint.pt`` (and any ``resume.pt``) of a LoggedModel, keeping its metrics; tag it :data:`WEIGHTS_DELETED_TAG` = ``reason`` first."""
    MlflowClient(tracking_uri).set_logged_model_tags(model.model_id, {WEIGHTS_DELETED_TAG: _tag_value(reason)})
    for name in (CHECKPOINT_ARTIFACT, RESUME_FILE):
        _delete_artifact(tracking_uri, model, name)


def download_model_file(tracking_uri: str, model: LoggedModel, name: str, folder: Path) -> Path:
    """Download the artifact ``name`` of a LoggedModel (``checkpoint.pt``, ``resume.pt``) into ``folder``; its local path."""
    import mlflow.artifacts

    uri = f"{model.artifact_location.rstrip('/')}/{name}"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking_uri))


def _delete_artifact(tracking_uri: str, model: LoggedModel, name: str) -> None:
    """Delete one artifact file of a LoggedModel; a file that is not there is no error."""
    repository = get_artifact_repository(model.artifact_location, tracking_uri=tracking_uri)
    try:
        repository.delete_artifacts(name)
    except MlflowException as exc:
        if exc.get_http_status_code() != 404:
            raise

"""``load_model``: rebuild a model mg-tune wrote, from a package, a checkpoint, ``s3://`` or MLflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models.model import MLMODEL_FILE_NAME as MLMODEL_FILE

from mg_tune.checkpoint import CHECKPOINT_FILE
from mg_tune.export._targets import _S3Location
from mg_tune.mlflow_model import PACKAGE_DIR
from mg_tune.models import StagedModel
from mg_tune.rebuild import MODEL_FILE, read_checkpoint, read_package, rebuild
from mg_tune.textfiles import first_line
from mg_tune.tracking import default_tracking_uri


def _load_local(path: Path, shown: str, device: str | torch.device) -> StagedModel:
    """A package folder, an MLflow Model folder (its ``package/``), an epoch's LoggedModel folder or a raw checkpoint file."""
    if path.is_dir() and not (path / MODEL_FILE).exists():
        if (path / PACKAGE_DIR / MODEL_FILE).is_file():
            return rebuild(read_package(path / PACKAGE_DIR, f"{shown}/{PACKAGE_DIR}"), shown, device)
        if (path / CHECKPOINT_FILE).is_file():
            return rebuild(read_checkpoint(path / CHECKPOINT_FILE, f"{shown}/{CHECKPOINT_FILE}"), shown, device)
        if (path / MLMODEL_FILE).is_file():
            raise ValueError(f"{shown} is an MLflow Model that mg-tune did not write (no {PACKAGE_DIR}/{MODEL_FILE})")
    if path.is_dir():
        return rebuild(read_package(path, shown), shown, device)
    if path.is_file():
        return rebuild(read_checkpoint(path, shown), shown, device)
    raise ValueError(f"{shown} does not exist")


def _model_location(client: MlflowClient, uri: str) -> str:
    """Where ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/<model_id>`` or ``runs:/<run_id>/<name>`` lives.

    Resolved with ``client`` here rather than by ``mlflow.artifacts``, whose
    registry and LoggedModel lookups use the process-wide tracking and
    registry URIs instead of the one given. ``runs:/<run_id>/<path>`` is the
    run's LoggedModel named ``<path>`` if there is one (as MLflow 3 resolves
    it), else that path among the run's artifacts.
    """
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        run = client.get_run(run_id)
        query = f"source_run_id = '{run_id}' AND name = '{path.strip('/')}'"
        found = client.search_logged_models(experiment_ids=[run.info.experiment_id], filter_string=query, max_results=1)
        return found[0].artifact_location if found else f"{run.info.artifact_uri.rstrip('/')}/{path}"
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        source = client.get_model_version_by_alias(name, alias).source
    elif "/" in rest:
        name, version = rest.split("/", 1)
        source = client.get_model_version(name, version).source
    else:
        return client.get_logged_model(rest).artifact_location
    return _model_location(client, source) if source.startswith("models:/") else source


def _download_mlflow(uri: str, tracking_uri: str | None, folder: Path) -> Path:
    """Download what ``models:/…`` or ``runs:/…`` points at (:func:`_model_location`)."""
    import mlflow.artifacts

    tracking_uri = tracking_uri or default_tracking_uri()
    try:
        location = _model_location(MlflowClient(tracking_uri), uri)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder), tracking_uri=tracking_uri))
    except MlflowException as exc:
        raise ValueError(f"{uri}: {first_line(exc.message)}") from None
    except OSError as exc:
        raise ValueError(f"{uri}: {first_line(str(exc))}") from None


def load_model(
    path_or_uri: str | os.PathLike[str],
    *,
    s3_endpoint_url: str | None = None,
    device: str | torch.device = "cpu",
    tracking_uri: str | None = None,
) -> StagedModel:
    """Rebuild a model mg-tune wrote, from wherever it lives.

    Accepted: a package directory, an MLflow Model directory written by
    :mod:`mg_tune.mlflow_model`, a raw ``checkpoint.pt``, an ``s3://``
    package prefix (or ``….pt`` checkpoint), and MLflow URIs resolved by
    MLflow itself against ``tracking_uri`` (default: the default tracking
    URI): ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
    ``models:/<model_id>`` (any epoch's LoggedModel) and ``runs:/…``.

    The architecture comes from ``config.json`` (or the checkpoint's
    ``config``), the weights from ``model.pt`` (or the checkpoint's
    ``model``), always read with ``torch.load(weights_only=True)``; the
    state_dict must fit the model exactly. ``s3_endpoint_url`` defaults to
    ``$MLFLOW_S3_ENDPOINT_URL`` / ``$AWS_ENDPOINT_URL``.

    Returns:
        The :class:`~mg_tune.models.StagedModel` on ``device``, in eval mode.

    Raises:
        ValueError: missing files, a file holding pickled objects instead of
            weights, a config that is not a ``TrainConfig``, weights that do
            not fit, or an unreadable S3 location.
    """
    text = os.fspath(path_or_uri)
    if not text.startswith(("s3://", "models:/", "runs:/")):
        return _load_local(Path(text).expanduser(), text, device)
    with tempfile.TemporaryDirectory(prefix="mg-tune-load-") as tmp:
        if text.startswith("s3://"):
            local = _S3Location.parse(text, s3_endpoint_url).download(Path(tmp))
        else:
            local = _download_mlflow(text, tracking_uri, Path(tmp))
        return _load_local(local, text, device)

"""Export a checkpoint as a self-contained model package, and load packages safely.

A package holds five files (:data:`EXPORT_FILES`):

==================  ===========================================================
``model.pt``        the model's ``state_dict`` only: tensors by name, loadable
                    with ``torch.load(weights_only=True)`` (no optimiser state)
``config.json``     ``TrainConfig.package_json()``: rebuilds the model; only
                    the data fields that apply to its data set
``dataset.json``    the classes in output order, multi-label or not, the input
                    size and preprocessing (:class:`mg_tune.data.card.DatasetCard`)
``metrics.json``    which checkpoint it is (search, trial, epoch, run and
                    LoggedModel ids) and its metrics: ``validation`` and
                    ``train`` of that epoch, ``test`` where ``mg-tune evaluate``
                    logged them (``test_<name>`` on the LoggedModel)
``MODEL_CARD.md``   short human summary: hyperparameters, metrics, how to load
==================  ===========================================================

Targets of :func:`export_checkpoint`: a local directory, ``s3://bucket/prefix``
and, additionally, the MLflow Model Registry (the epoch's LoggedModel becomes
a complete MLflow Model and a registered model version, optionally with an
alias; :mod:`mg_tune.model_registry`).

Nothing half-written: the checkpoint is looked up, downloaded and the whole
package is written to a staging directory first. A new local directory is
then moved into place with one rename (a crash can leave a hidden staging
directory ``.<name>.*`` beside it, never a partial package); on S3 the files
are uploaded only once all of them exist locally, ``metrics.json`` last, so
an S3 package that has ``metrics.json`` is complete. A target that already holds something other
than an export of the same checkpoint is refused, and so are local paths
with ``..`` or whose symlinks lead out of the current directory.

:func:`load_model` reads a package (directory or ``s3://`` prefix), a raw
``checkpoint.pt``, or an MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``models:/<model_id>``, ``runs:/…``) with ``weights_only=True`` and rebuilds the model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, Run
from mlflow.exceptions import MlflowException
from mlflow.models.model import MLMODEL_FILE_NAME as MLMODEL_FILE

from mg_tune.checkpoint import CHECKPOINT_FILE
from mg_tune.config import TrainConfig
from mg_tune.data.card import DatasetCard
from mg_tune.mlflow_model import PACKAGE_DIR
from mg_tune.models import StagedModel
from mg_tune.rebuild import CONFIG_FILE, DATASET_FILE, MODEL_FILE, card_for, read_checkpoint, read_package, rebuild
from mg_tune.textfiles import first_line
from mg_tune.model_registry import register_checkpoint
from mg_tune.tracking import (
    WEIGHTS_DELETED_TAG,
    SearchRun,
    default_tracking_uri,
    download_model_file,
    experiment_name,
    find_checkpoint_model,
    find_search_run,
    find_trial_run,
    iter_logged_models,
    model_epoch,
    model_metrics,
    redact_uri,
)

__all__ = ["EXPORT_FILES", "export_checkpoint", "load_model"]

METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
EXPORT_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, DATASET_FILE, CARD_FILE, METRICS_FILE)
"""The files of a package, in upload order (``metrics.json`` last marks it complete)."""
TEST_PREFIX = "test_"
TRAIN_PREFIX = "train_"
ENDPOINT_VARIABLES = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")


# --------------------------------------------------------------------------- the checkpoint in MLflow


@dataclass(frozen=True)
class _Source:
    """The checkpoint being exported: its trial run, its LoggedModel and the metrics linked to it."""

    search: str
    trial_id: str
    epoch: int
    run: Run
    model: LoggedModel

    def record(self) -> dict[str, Any]:
        """The content of ``metrics.json``: identity, then metrics split into validation/train/test."""
        metrics = model_metrics(self.model, self.epoch)
        metrics.pop("epoch", None)
        test = {k.removeprefix(TEST_PREFIX): v for k, v in metrics.items() if k.startswith(TEST_PREFIX)}
        train = {k: v for k, v in metrics.items() if k.startswith(TRAIN_PREFIX)}
        validation = {k: v for k, v in metrics.items() if not k.startswith((TEST_PREFIX, TRAIN_PREFIX))}
        return {
            "search": self.search,
            "trial_id": self.trial_id,
            "epoch": self.epoch,
            "run_id": self.run.info.run_id,
            "model_id": self.model.model_id,
            "validation": _json_numbers(validation),
            "train": _json_numbers(train),
            "test": _json_numbers(test),
        }


def _json_numbers(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """Sorted metrics with non-finite values as ``null`` (strict JSON)."""
    return {k: (v if math.isfinite(v) else None) for k, v in sorted(metrics.items())}


def _find_source(tracking_uri: str, search: str, trial_id: str, epoch: int) -> _Source:
    """Look the checkpoint up with a bounded number of requests (experiment, parent run, trial run, models).

    Raises:
        ValueError: unknown search, trial or epoch.
    """
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(search))
    parent = find_search_run(client, experiment.experiment_id) if experiment and experiment.lifecycle_stage == "active" else None
    if parent is None:
        raise ValueError(f"no search named {search!r} in {redact_uri(tracking_uri)}")
    handle = SearchRun(tracking_uri, experiment.experiment_id, parent.info.run_id, search)
    run = find_trial_run(client, handle, trial_id)
    if run is None:
        raise ValueError(f"search {search!r} has no trial {trial_id!r}")
    try:
        model = find_checkpoint_model(client, run.info.run_id, epoch)
    except FileNotFoundError:
        logged = _logged_epochs(client, experiment.experiment_id, run.info.run_id)
        raise ValueError(f"trial {trial_id!r} of search {search!r} has no checkpoint of epoch {epoch}; logged epochs: {logged or 'none'}") from None
    if WEIGHTS_DELETED_TAG in model.tags:
        raise ValueError(f"trial {trial_id!r} epoch {epoch} of search {search!r} has no weights: the search's checkpoints.keep policy deleted them ({model.tags[WEIGHTS_DELETED_TAG]}); its metrics stay in MLflow")
    return _Source(search, trial_id, int(epoch), run, model)


def _logged_epochs(client: MlflowClient, experiment_id: str, run_id: str) -> list[int]:
    """Epochs of ``run_id`` with a READY checkpoint (for error messages)."""
    models = iter_logged_models(client, experiment_id, f"source_run_id = '{run_id}'")
    return sorted({e for m in models if m.status == LoggedModelStatus.READY and (e := model_epoch(m)) is not None})


# --------------------------------------------------------------------------- the package


def _write_package(source: _Source, checkpoint: Path, folder: Path, uri: str, registered: str | None) -> None:
    """Write the four package files of ``checkpoint`` into ``folder``; ``uri`` is where it will live."""
    state, config, card = read_checkpoint(checkpoint, f"checkpoint of trial {source.trial_id!r} epoch {source.epoch}")
    card = card_for(config, card)
    torch.save(state, folder / MODEL_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config.package_json(), indent=2) + "\n", encoding="utf-8")
    (folder / DATASET_FILE).write_text(json.dumps(card.to_json(), indent=2) + "\n", encoding="utf-8")
    record = source.record()
    (folder / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (folder / CARD_FILE).write_text(model_card(record, config, card, source.run.data.params, uri, registered), encoding="utf-8")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value).replace("|", "\\|")


def model_card(record: Mapping[str, Any], config: TrainConfig, card: DatasetCard, params: Mapping[str, str], uri: str, registered: str | None = None) -> str:
    """``MODEL_CARD.md``: what the model is, its outputs and input, the trial's hyperparameters, its metrics, how to load and serve it.

    ``registered``: the registry URI (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``) when the export registered it.
    """
    model_uri = registered or f"models:/{record['model_id']}"
    names = sorted(set(record["validation"]) | set(record["test"]))
    lines = [
        f"# mg-tune model: search `{record['search']}`, trial `{record['trial_id']}`, epoch {record['epoch']}",
        "",
        f"`{config.model}` trained on `{config.data.name}/{config.data.variant}` with L = L_class + λ·L_loc, "
        f"loss `{config.loss}`, λ = {config.lam:g}, attribution `{config.attribution}` at layer `{config.layer}`.",
        f"MLflow: experiment `mg-tune/{record['search']}`, trial run `{record['run_id']}`, LoggedModel `{record['model_id']}`.",
        "",
        "## Outputs and input",
        "",
        f"Data set `{card.name}`, {'multi-label: one sigmoid probability per class' if card.multilabel else 'single-label: softmax over the classes'}. "
        "Output columns, in order:",
        "",
        "| output | class |",
        "| ---: | --- |",
        *(f"| {k} | {_cell(name)} |" for k, name in enumerate(card.classes)),
        "",
        f"Input: {card.preprocessing}. The MLflow Model's pyfunc applies the resize, so images can be sent at any size.",
        "",
        "## Hyperparameters of the trial",
        "",
        "| name | value |",
        "| --- | --- |",
        *(f"| {_cell(k)} | {_cell(v)} |" for k, v in sorted(params.items())),
        "",
        "## Metrics",
        "",
        ("IoU uses the search's fixed threshold (`iou_threshold`). " if config.iou_threshold is not None
         else "IoU uses the threshold chosen on the held-out split (`iou_threshold`). ")
        + ("Test metrics were logged by `mg-tune evaluate`." if record["test"] else "No test metrics yet: run `mg-tune evaluate`."),
        "",
        "| metric | validation | test |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {_cell(record['validation'].get(name))} | {_cell(record['test'].get(name))} |" for name in names),
        "",
        "## Load",
        "",
        "```python",
        "import mg_tune",
        "",
        f'model = mg_tune.load_model("{uri}")  # a StagedModel in eval mode',
        "```",
        "",
        f"`{MODEL_FILE}` holds tensors only (`torch.load(..., weights_only=True)`); `{CONFIG_FILE}` rebuilds the architecture; "
        f"`{DATASET_FILE}` names the outputs.",
        "",
        "## From MLflow: load, predict, serve",
        "",
        "The checkpoint is also in MLflow"
        + (f" as the registered version `{registered}`" if registered else f" as LoggedModel `{record['model_id']}`")
        + (". " if registered else " (register it: `mg-tune export ... --register NAME` or `mg-tune pareto --register NAME`). "),
        "",
        "```python",
        "import mlflow, numpy as np",
        "",
        f'pyfunc = mlflow.pyfunc.load_model("{model_uri}")',
        "probabilities = pyfunc.predict(images)  # images: float32 [N, 3, H, W] in [0, 1]",
        'maps = pyfunc.predict(images, params={"output": "attributions", "target_class": 0})',
        f'model = mg_tune.load_model("{model_uri}")  # the StagedModel, from the registry',
        "```",
        "",
        "```bash",
        f'mlflow models serve -m "{model_uri}" --env-manager local -p 5001',
        'curl -s localhost:5001/invocations -H "Content-Type: application/json" -d \'{"inputs": [[[[0.5, ...]]]]}\'',
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


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


# --------------------------------------------------------------------------- targets


def _exported_model_id(text: str) -> str | None:
    """The ``model_id`` recorded in a ``metrics.json`` text (None if it is not one)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record.get("model_id") if isinstance(record, dict) else None


def _refuse_foreign(uri: str, names: list[str], model_id: str | None, wanted: str) -> None:
    """Refuse a non-empty target unless it holds only package files of the same checkpoint."""
    if names and (set(names) - set(EXPORT_FILES) or model_id != wanted):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(f"target {uri} is not empty and holds no export of this checkpoint (found {shown}); choose a new or empty location")


@dataclass(frozen=True)
class _LocalTarget:
    """A local package directory (absolute, not resolved: the path the user named)."""

    path: Path

    @classmethod
    def parse(cls, target: str | os.PathLike[str]) -> _LocalTarget:
        """Refuse ``..`` components and relative targets that symlinks lead out of the current directory."""
        path = Path(target).expanduser()
        if ".." in path.parts:
            raise ValueError(f"target {target} contains '..'; name the directory without parent references")
        if not path.is_absolute():
            root = Path.cwd().resolve()
            resolved = (root / path).resolve()
            if not resolved.is_relative_to(root):
                raise ValueError(f"target {target} leads to {resolved} through a symlink, outside the current directory {root}")
            path = root / path
        return cls(path)

    @property
    def uri(self) -> str:
        return str(self.path)

    def check(self, model_id: str) -> None:
        """Refuse a symlink, a file, or a non-empty directory that is not an export of ``model_id``."""
        if self.path.is_symlink():
            raise ValueError(f"target {self.path} is a symlink (to {os.readlink(self.path)}); name a real directory")
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise ValueError(f"target {self.path} exists and is not a directory")
        entries = list(self.path.iterdir())
        links = [e.name for e in entries if e.is_symlink() or not e.is_file()]
        if links:
            raise ValueError(f"target {self.path} holds {links[0]}, which is not a regular file; refusing to write there")
        metrics = self.path / METRICS_FILE
        model_id_found = _exported_model_id(metrics.read_text(encoding="utf-8", errors="replace")) if metrics.is_file() else None
        _refuse_foreign(self.uri, [e.name for e in entries], model_id_found, model_id)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory next to the target (same file system, so publishing is a rename)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        except OSError as exc:
            raise ValueError(f"cannot write target {self.path}: {exc.strerror or exc}") from None
        try:
            folder.chmod(0o755)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path) -> None:
        """Rename the staged directory into place, or replace the files of an earlier export of the same checkpoint."""
        if not self.path.exists() or not any(self.path.iterdir()):
            staged.replace(self.path)
            return
        for name in EXPORT_FILES:
            (staged / name).replace(self.path / name)


@dataclass(frozen=True)
class _S3Location:
    """``s3://bucket/prefix`` and the endpoint to reach it."""

    bucket: str
    prefix: str
    endpoint_url: str | None

    @classmethod
    def parse(cls, uri: str, endpoint_url: str | None) -> _S3Location:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri} names no bucket; use s3://bucket/prefix")
        endpoint = endpoint_url or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
        return cls(bucket, prefix.strip("/"), endpoint)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url)

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn boto errors into one-line ``ValueError``s naming the URI."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ValueError(f"cannot {doing} {self.uri}: {error.get('Code', '?')} {error.get('Message', '')}".rstrip()) from None
        except BotoCoreError as exc:
            raise ValueError(f"cannot {doing} {self.uri}: {exc}") from None

    def download(self, folder: Path) -> Path:
        """Download the package (or, for a ``.pt`` key, the single checkpoint) into ``folder``; return the local path."""
        s3 = self.client()
        with self.errors("read"):
            if self.prefix.endswith(".pt"):
                local = folder / CHECKPOINT_FILE
                s3.download_file(self.bucket, self.prefix, str(local))
                return local
            for name in (CONFIG_FILE, MODEL_FILE):
                s3.download_file(self.bucket, self.key(name), str(folder / name))
        return folder


@dataclass(frozen=True)
class _S3Target:
    """A package under ``s3://bucket/prefix``."""

    location: _S3Location

    @property
    def uri(self) -> str:
        return self.location.uri

    def check(self, model_id: str) -> None:
        """Refuse a prefix holding objects other than an export of ``model_id`` (also checks access)."""
        location = self.location
        s3 = location.client()
        with location.errors("write"):
            listed = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.key(""), MaxKeys=100)
            names = [item["Key"].removeprefix(location.key("")) for item in listed.get("Contents", [])]
            found = None
            if METRICS_FILE in names:
                found = _exported_model_id(s3.get_object(Bucket=location.bucket, Key=location.key(METRICS_FILE))["Body"].read().decode("utf-8", "replace"))
        _refuse_foreign(self.uri, names, found, model_id)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="mg-tune-export-") as tmp:
            yield Path(tmp)

    def publish(self, staged: Path) -> None:
        """Upload every file, ``metrics.json`` last (its presence marks a complete package)."""
        s3 = self.location.client()
        with self.location.errors("write"):
            for name in EXPORT_FILES:
                s3.upload_file(str(staged / name), self.location.bucket, self.location.key(name))


def _target(target: str | os.PathLike[str], s3_endpoint_url: str | None) -> _LocalTarget | _S3Target:
    text = os.fspath(target)
    if text.startswith("s3://"):
        return _S3Target(_S3Location.parse(text, s3_endpoint_url))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        raise ValueError(f"target {redact_uri(text)}: only local directories and s3://bucket/prefix are supported")
    return _LocalTarget.parse(text)


# --------------------------------------------------------------------------- export


def export_checkpoint(
    tracking_uri: str,
    search: str,
    trial_id: str,
    epoch: int,
    target: str | os.PathLike[str],
    *,
    s3_endpoint_url: str | None = None,
    register: str | None = None,
    alias: str | None = None,
) -> str:
    """Export the checkpoint of ``(trial_id, epoch)`` of ``search`` as a model package at ``target``.

    Steps: find the epoch's READY LoggedModel (experiment, parent run, trial
    run, models of that run: 4 requests), check the target, download
    ``checkpoint.pt``, write the package (see the module docstring) into a
    staging directory, register it if asked, then publish it: a local
    directory (created; an existing one must be empty or hold an export of
    the same checkpoint, which is then replaced) or ``s3://bucket/prefix``
    (boto3; endpoint ``s3_endpoint_url`` or ``$MLFLOW_S3_ENDPOINT_URL`` /
    ``$AWS_ENDPOINT_URL``). With ``register``, the LoggedModel
    (``models:/<model_id>``) becomes a complete MLflow Model and a version
    of registered model ``register`` (:func:`mg_tune.model_registry.register_checkpoint`;
    an already registered checkpoint keeps its version), with ``alias`` if given.

    Returns:
        The URI written: the absolute directory path or ``s3://bucket/prefix``.

    Raises:
        ValueError: unknown search, trial or epoch; a refused or unwritable
            target; a checkpoint that is not an mg-tune checkpoint; a
            registry error. Nothing is written at the target then.
    """
    if alias and not register:
        raise ValueError(f"alias {alias!r} needs a registered model name (register=...)")
    source = _find_source(tracking_uri, search, trial_id, epoch)
    destination = _target(target, s3_endpoint_url)
    destination.check(source.model.model_id)
    with destination.staging() as staged, tempfile.TemporaryDirectory(prefix="mg-tune-ckpt-") as tmp:
        checkpoint = download_model_file(tracking_uri, source.model, CHECKPOINT_FILE, Path(tmp))
        _write_package(source, checkpoint, staged, destination.uri, f"models:/{register}@{alias}" if register and alias else None)
        if register:
            register_checkpoint(tracking_uri, source.model, register, alias)
        destination.publish(staged)
    return destination.uri

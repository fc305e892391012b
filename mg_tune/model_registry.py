"""The Pareto front in MLflow's Model Registry: complete MLflow Models, one version each, aliases.

Which LoggedModels are complete MLflow Models
    Every (trial, epoch) LoggedModel holds its ``checkpoint.pt`` (written
    during the search, :class:`mg_tune.tracking.TrialLogger`). Only the
    checkpoints a user picks become complete MLflow Models
    (:mod:`mg_tune.mlflow_model`): the front when ``mg-tune pareto
    --register`` registers it, and what ``mg-tune export --register``
    registers. :func:`publish_mlflow_model` adds the MLflow Model's files
    to the LoggedModel's own artifacts, beside the checkpoint, so
    ``models:/<model_id>`` and every registered version of it load with
    ``mlflow.pyfunc`` / ``mlflow.pytorch``. Measured (docs/benchmarks.md):
    writing the MLflow Model of every epoch would add its pickled module
    (as large as the weights) to every epoch's upload; the front is a few
    checkpoints out of hundreds.

Versions
    :func:`register_version` makes ``models:/<model_id>`` a version of a
    registered model once: a LoggedModel already registered under that
    name keeps its version, so rerunning ``pareto --register`` never
    duplicates versions.

:func:`register_front` (``mg-tune pareto --register NAME``)
    * each front checkpoint: a version of NAME with tags ``pareto=true``,
      ``pareto_objectives`` (what the front is on, ``f1:max,epg:max,iou:max``),
      its objectives' values (``f1`` …), hyperparameters (``param.<name>``),
      ``search``, ``trial_id``, ``epoch``;
    * versions of the same search that left the front: ``pareto=false``;
    * aliases ``best-<objective>`` (the front checkpoint with the best value
      of that objective; ties: the earliest stored) and ``knee``;
    * the knee point: with every objective min-max normalised over the front
      to ``[0, 1]`` (1 = best; an objective constant on the front counts as
      1), the front point closest in Euclidean distance to the ideal point
      ``(1, …, 1)``: the balanced compromise, where improving one objective
      costs most in the others (Branke et al. 2004 call such points knees;
      distance to the ideal point is the usual way to pick one).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from mg_tune.checkpoint import CHECKPOINT_FILE
from mg_tune.mlflow_model import save_mlflow_model
from mg_tune.rebuild import card_for, read_checkpoint, rebuild
from mg_tune.textfiles import first_line

__all__ = ["KNEE_ALIAS", "MLFLOW_MODEL_TAG", "RegisteredFront", "knee_index", "publish_mlflow_model", "register_front", "register_version", "registered_versions"]

MLFLOW_MODEL_TAG = "mg_tune.mlflow_model"
"""LoggedModel tag: ``true`` once :func:`publish_mlflow_model` added the MLflow Model's files."""
KNEE_ALIAS = "knee"
PARETO_TAG = "pareto"


@contextlib.contextmanager
def _existing_ok() -> Iterator[None]:
    """Ignore MLflow's "already exists" errors (a registered model that exists)."""
    try:
        yield
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def publish_mlflow_model(client: MlflowClient, tracking_uri: str, model: LoggedModel) -> None:
    """Make the LoggedModel ``model`` a complete MLflow Model (idempotent: skipped when already tagged so).

    Downloads its ``checkpoint.pt``, rebuilds the network (tensors only),
    writes the MLflow Model (:func:`mg_tune.mlflow_model.save_mlflow_model`,
    with the search, trial and epoch in ``MLmodel`` metadata) and uploads it
    into the LoggedModel's artifacts, then tags it :data:`MLFLOW_MODEL_TAG`.
    """
    if (model.tags or {}).get(MLFLOW_MODEL_TAG) == "true":
        return
    with tempfile.TemporaryDirectory(prefix="mg-tune-mlmodel-") as tmp:
        uri = f"{model.artifact_location.rstrip('/')}/{CHECKPOINT_FILE}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri))
        shown = f"checkpoint of LoggedModel {model.model_id}"
        found = read_checkpoint(local, shown)
        network = rebuild(found, shown)
        _, config, card = found
        meta = {"mg_tune_checkpoint": {"model_id": model.model_id, "run_id": model.source_run_id, "name": model.name}}
        folder = save_mlflow_model(network, config, card_for(config, card), Path(tmp) / "model", meta)
        client.log_model_artifacts(model.model_id, str(folder))
    client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_TAG: "true"})


def register_version(client: MlflowClient, name: str, model: LoggedModel) -> ModelVersion:
    """The version of registered model ``name`` whose source is ``model``; created (with the model) if there is none.

    Does what ``mlflow.register_model("models:/<model_id>", name)`` does, for
    this client's tracking URI: the version's source is the model's artifact
    location and the LoggedModel lists the version in its
    ``mlflow.modelVersions`` tag, which links the two in MLflow's UI.
    """
    with _existing_ok():
        client.create_registered_model(name)
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.model_id == model.model_id or version.source == model.artifact_location:  # the SQL registry keeps the source only
            return version
    version = client.create_model_version(name, source=model.artifact_location, run_id=model.source_run_id, model_id=model.model_id)
    linked = json.loads(client.get_logged_model(model.model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    linked.append({"name": name, "version": version.version})
    client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)})
    return version


def registered_versions(client: MlflowClient, model_id: str) -> list[tuple[str, str, list[str]]]:
    """The registered versions that hold LoggedModel ``model_id``: ``(name, version, aliases)`` each, as its ``mlflow.modelVersions`` tag lists them.

    Versions deleted since are left out (the tag is not updated when a version goes).
    """
    found = []
    for entry in json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]")):
        name, version = entry["name"], str(entry["version"])
        try:
            registered = client.get_registered_model(name)
            client.get_model_version(name, version)
        except MlflowException:  # deleted since it was registered
            continue
        found.append((name, version, sorted(alias for alias, v in (registered.aliases or {}).items() if str(v) == version)))
    return found


def register_checkpoint(tracking_uri: str, model: LoggedModel, name: str, alias: str | None = None) -> ModelVersion:
    """Publish ``model`` as an MLflow Model and register it under ``name`` (with ``alias``); one ``ValueError`` line on failure."""
    client = MlflowClient(tracking_uri)
    try:
        publish_mlflow_model(client, tracking_uri, model)
        version = register_version(client, name, model)
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        raise ValueError(f"cannot register model {name!r}{f' with alias {alias!r}' if alias else ''}: {first_line(exc.message)}") from None
    return version


def knee_index(points: np.ndarray, maximize: Sequence[bool]) -> int:
    """Index of the knee point of a front ``points [n, m]`` (module docstring): closest to the ideal after min-max scaling."""
    values = np.where(np.asarray(maximize, dtype=bool), points, -points).astype(float)
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(high > low, (values - low) / span, 1.0)
    return int(np.argmin(np.linalg.norm(1.0 - scaled, axis=1)))


@dataclass
class RegisteredFront:
    """What :func:`register_front` did: version per front model id, aliases → version, versions that left the front."""

    name: str
    versions: dict[str, str]
    aliases: dict[str, str]
    left: list[str]


def _version_tags(row: Mapping, objectives: Sequence[str], search_name: str) -> dict[str, str]:
    tags = {PARETO_TAG: "true", "search": search_name, "trial_id": str(row["trial_id"]), "epoch": str(int(row["epoch"]))}
    tags.update({o: f"{float(row[o]):.6g}" for o in objectives if not math.isnan(float(row[o]))})
    tags.update({f"param.{k.removeprefix('params.')}": str(v) for k, v in row.items() if str(k).startswith("params.") and not pd.isna(v)})
    return tags


def register_front(tracking_uri: str, search_name: str, front: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool], name: str) -> RegisteredFront:
    """Register the front (rows of :func:`mg_tune.front.search_pareto`'s ``front``) as versions of ``name``; see the module docstring."""
    client = MlflowClient(tracking_uri)
    if front.empty:
        raise ValueError(f"search {search_name!r} has no Pareto front to register (no checkpoint with all of {', '.join(objectives)})")
    front = front.sort_values("created", kind="stable").reset_index(drop=True)
    versions: dict[str, str] = {}
    try:
        for _, row in front.iterrows():
            model = client.get_logged_model(row["model_id"])
            publish_mlflow_model(client, tracking_uri, model)
            version = register_version(client, name, model).version
            versions[row["model_id"]] = str(version)
            on = ",".join(f"{o}:{'max' if up else 'min'}" for o, up in zip(objectives, maximize))
            for key, value in {**_version_tags(row, objectives, search_name), "pareto_objectives": on}.items():
                client.set_model_version_tag(name, version, key, value)
        points = front[list(objectives)].to_numpy(dtype=float)
        aliases = {f"best-{o}": versions[front.loc[int(np.argmax(points[:, i] if up else -points[:, i])), "model_id"]]
                   for i, (o, up) in enumerate(zip(objectives, maximize))}
        aliases[KNEE_ALIAS] = versions[front.loc[knee_index(points, maximize), "model_id"]]
        for alias, version in aliases.items():
            client.set_registered_model_alias(name, alias, version)
        left = []
        for version in client.search_model_versions(f"name = '{name}'"):
            if version.tags.get("search") == search_name and str(version.version) not in versions.values() and version.tags.get(PARETO_TAG) != "false":
                client.set_model_version_tag(name, version.version, PARETO_TAG, "false")
                left.append(str(version.version))
    except MlflowException as exc:
        raise ValueError(f"cannot register the front of search {search_name!r} as {name!r}: {first_line(exc.message)}") from None
    return RegisteredFront(name, versions, aliases, sorted(left, key=int))

"""The MLflow layout of a search in one place: tag and artifact names, experiment and model names, params and tag values.

See :mod:`mg_tune.tracking` for the layout as a whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, Metric, Param

from mg_tune.checkpoint import CHECKPOINT_FILE
from mg_tune.tracking.uris import redact_text

__all__ = [
    "CHECKPOINT_ARTIFACT", "EPOCH_TAG", "EXPERIMENT_KIND", "FAILURE_TAG", "PARENT_TAG", "ROLE_TAG",
    "SEARCH_TAG", "SPEC_ARTIFACT", "STOPPED_EARLY_TAG", "TRIAL_TAG", "WEIGHTS_DELETED_TAG", "epoch_metrics",
    "experiment_name", "flatten", "model_epoch", "overlay_artifact", "readable_trial_name",
]


SEARCH_TAG = "mg_tune.search"
ROLE_TAG = "mg_tune.role"  # "search" | "trial"
TRIAL_TAG = "mg_tune.trial_id"
EPOCH_TAG = "mg_tune.epoch"
FAILURE_TAG = "mg_tune.failure_reason"
STOPPED_EARLY_TAG = "mg_tune.stopped_early"  # the last epoch of a trial a scheduler stopped
PARENT_TAG = "mlflow.parentRunId"
CHECKPOINT_ARTIFACT = CHECKPOINT_FILE
WEIGHTS_DELETED_TAG = "mg_tune.weights_deleted"  # on a LoggedModel whose checkpoint.pt a retention policy deleted: why
SPEC_ARTIFACT = "spec.yaml"
MODEL_TYPE = "mg-tune-checkpoint"


# MLflow's limits (mlflow.utils.validation): keys 250, param values 6000, tag
# values 8000 characters; 100 params/tags per log_batch.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
BATCH = 100


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Experiment tag marking a search's experiment as model training (not GenAI) for MLflow's UI (see :mod:`mg_tune.mlflow_links`)."""


def overlay_artifact(epoch: int) -> str:
    """Run artifact path of an epoch's attribution overlays: ``overlays/epoch=NNN.png``."""
    return f"overlays/epoch={int(epoch):03d}.png"


def experiment_name(search_name: str) -> str:
    """The MLflow experiment of search ``search_name``: ``mg-tune/<search_name>``."""
    return f"mg-tune/{search_name}"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings → dotted keys (``{"a": {"b": 1}}`` → ``{"a.b": 1}``); other values kept."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    text = redact_text(value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value))
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _as_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Flattened, redacted, truncated to MLflow's key/value limits."""
    return {k[:MAX_KEY]: _param_value(v) for k, v in flatten(params).items()}


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[i : i + BATCH])


def _tag_value(value: str) -> str:
    value = redact_text(value)
    return value if len(value) <= MAX_TAG_VALUE else value[: MAX_TAG_VALUE - 3] + "..."


_BAD_MODEL_NAME_CHARS = re.compile(r"[/:.%\"']")


def readable_trial_name(config: Any, trial_id: str) -> str:
    """A trial run's name a person can read in MLflow's UI: trial number first, then loss, λ, layer.

    ``config`` is the trial's ``TrainConfig``; the number is the suffix of
    Ray's trial id (``a1b2c_00007`` → ``t07``, two digits at least so names sort),
    e.g. ``t07 energy λ=0.5 input``: the number leads because MLflow's tables cut
    long names at their end. Runs are found by the tag ``mg_tune.trial_id``, never
    by name, so searches resumed from older names keep theirs.
    """
    number = trial_id.rpartition("_")[2]
    prefix = f"t{int(number):02d}" if number.isdigit() else trial_id
    return f"{prefix} {config.loss} λ={config.lam:g} {config.layer}"


def _model_name(run_name: str, epoch: int) -> str:
    """The LoggedModel of an epoch, URI-safe for ``runs:/<run_id>/<name>``: ``t07 energy λ=0.5 input``, 3 → ``t07-e03-energy-lam0p5-input``.

    Trial and epoch lead (the run name's first word, then ``eNN``): what tells a
    search's checkpoints apart survives MLflow's cut of long names.
    (LoggedModel names may not contain ``/ : . % " '``.)
    """
    slug = run_name.replace("λ=", "lam").replace(" ", "-")
    safe = _BAD_MODEL_NAME_CHARS.sub(lambda m: "p" if m.group() == "." else "_", slug)
    first, _, rest = safe.partition("-")
    return f"{first}-e{epoch:02d}" + (f"-{rest}" if rest else "")


def model_epoch(model: LoggedModel) -> int | None:
    """The epoch a LoggedModel holds (tag ``mg_tune.epoch``), or ``None`` for models mg-tune did not write."""
    try:
        return int(model.tags[EPOCH_TAG])
    except (KeyError, TypeError, ValueError):
        return None


def epoch_metrics(run_id: str, model_id: str, epoch: int, values: Mapping[str, float], timestamp: int) -> list[Metric]:
    """``values`` as metrics of the run at ``step=epoch``, each linked to the epoch's LoggedModel ``model_id``.

    A NaN value is logged on the run only: MLflow stores a NaN metric linked
    to a LoggedModel as ``0`` (see :mod:`mg_tune.tracking`).
    """
    return [Metric(key, value, timestamp, epoch, model_id=None if math.isnan(value) else model_id, run_id=run_id) for key, value in values.items()]

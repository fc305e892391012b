"""The package files of one checkpoint: where it is in MLflow, ``metrics.json``, ``MODEL_CARD.md``, the rest."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, Run

from mg_tune.config import TrainConfig
from mg_tune.data.card import DatasetCard
from mg_tune.rebuild import CONFIG_FILE, DATASET_FILE, MODEL_FILE, card_for, read_checkpoint
from mg_tune.tracking import (
    WEIGHTS_DELETED_TAG,
    SearchRun,
    experiment_name,
    find_checkpoint_model,
    find_search_run,
    find_trial_run,
    iter_logged_models,
    model_epoch,
    model_metrics,
    redact_uri,
)

METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
EXPORT_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, DATASET_FILE, CARD_FILE, METRICS_FILE)
"""The files of a package, in upload order (``metrics.json`` last marks it complete)."""
TEST_PREFIX = "test_"
TRAIN_PREFIX = "train_"

@dataclass(frozen=True)
class _Source:
    """The checkpoint being exported: its trial run, its LoggedModel and the metrics linked to it."""

    search_name: str
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
            "search": self.search_name,
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


def _find_source(tracking_uri: str, search_name: str, trial_id: str, epoch: int) -> _Source:
    """Look the checkpoint up with a bounded number of requests (experiment, parent run, trial run, models).

    Raises:
        ValueError: unknown search, trial or epoch.
    """
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(search_name))
    parent = find_search_run(client, experiment.experiment_id) if experiment and experiment.lifecycle_stage == "active" else None
    if parent is None:
        raise ValueError(f"no search named {search_name!r} in {redact_uri(tracking_uri)}")
    search_run = SearchRun(tracking_uri, experiment.experiment_id, parent.info.run_id, search_name)
    run = find_trial_run(client, search_run, trial_id)
    if run is None:
        if not client.search_logged_models([experiment.experiment_id], max_results=1):
            raise ValueError(f"search {search_name!r} has no checkpoint yet (no trial finished an epoch): nothing to export")
        raise ValueError(f"search {search_name!r} has no trial {trial_id!r}")
    try:
        model = find_checkpoint_model(client, run.info.run_id, epoch)
    except FileNotFoundError:
        logged = _logged_epochs(client, experiment.experiment_id, run.info.run_id)
        raise ValueError(f"trial {trial_id!r} of search {search_name!r} has no checkpoint of epoch {epoch}; logged epochs: {logged or 'none'}") from None
    if WEIGHTS_DELETED_TAG in model.tags:
        raise ValueError(f"trial {trial_id!r} epoch {epoch} of search {search_name!r} has no weights: the search's checkpoints.keep policy deleted them ({model.tags[WEIGHTS_DELETED_TAG]}); its metrics stay in MLflow")
    return _Source(search_name, trial_id, int(epoch), run, model)


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
        "import mg_tune",
        "",
        "images = np.random.rand(2, 3, 100, 80).astype(np.float32)  # yours: float32 [N, 3, H, W] in [0, 1], any H, W",
        f'pyfunc = mlflow.pyfunc.load_model("{model_uri}")',
        "probabilities = pyfunc.predict(images)",
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

"""Rebuild a model from the files mg-tune writes, reading tensors only.

Three layouts hold a model (all read with ``torch.load(weights_only=True)``):

* a raw checkpoint ``checkpoint.pt`` (:mod:`mg_tune.checkpoint`): ``model``
  and ``config`` entries, and ``dataset`` in checkpoints written since the
  dataset card was added;
* an export package or an MLflow Model's ``package/`` folder:
  ``model.pt`` (state_dict), ``config.json`` (``TrainConfig``) and, where
  written, ``dataset.json`` (:class:`~mg_tune.data.card.DatasetCard`).

The number of outputs and the class names come from the dataset card; only
older files without one fall back to building the data set's validation
split (which needs the data set on disk).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from mg_tune.checkpoint import read_weights
from mg_tune.config import TrainConfig
from mg_tune.data import build_split
from mg_tune.guidance.pruning import load_state
from mg_tune.data.card import DatasetCard, dataset_card
from mg_tune.models import StagedModel, build_model
from mg_tune.textfiles import decode_problem, first_line, read_utf8

__all__ = ["CONFIG_FILE", "MODEL_FILE", "Rebuilt", "read_checkpoint", "read_package", "rebuild"]

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"

Rebuilt = tuple[dict[str, torch.Tensor], TrainConfig, DatasetCard | None]
"""``(state_dict, config, dataset card or None)``: what :func:`rebuild` needs."""


def _state_dict(value: Any, shown: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
        raise ValueError(f"{shown} is not a state_dict (a mapping of names to tensors)")
    return dict(value)


def parse_config(data: Any, shown: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "config"
        raise ValueError(f"{shown} is not an mg-tune TrainConfig: {field}: {error['msg']}") from None


def _card(data: Any, shown: str) -> DatasetCard | None:
    if data is None:
        return None
    try:
        return DatasetCard.from_json(data)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{shown} is not a dataset card (name, classes, multilabel, image_size)") from None


def read_checkpoint(path: Path, shown: str) -> Rebuilt:
    """A raw mg-tune checkpoint: ``model`` (state_dict) and ``config`` entries are required."""
    state = read_weights(path, shown)
    if not isinstance(state, Mapping) or "model" not in state or "config" not in state:
        raise ValueError(f"{shown} is not an mg-tune checkpoint (no 'model' and 'config' entries)")
    return _state_dict(state["model"], shown), parse_config(state["config"], f"the config in {shown}"), _card(state.get("dataset"), f"the dataset in {shown}")


def _json(path: Path, shown: str) -> Any:
    try:
        return json.loads(read_utf8(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{shown}: {decode_problem(exc)}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{shown} is not valid JSON: {exc}") from None


def read_package(folder: Path, shown: str) -> Rebuilt:
    """``model.pt``, ``config.json`` and (if present) ``dataset.json`` of a package folder."""
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{shown} is not an mg-tune export: {name} is missing")
    config = parse_config(_json(folder / CONFIG_FILE, f"{shown}/{CONFIG_FILE}"), f"{shown}/{CONFIG_FILE}")
    state = _state_dict(read_weights(folder / MODEL_FILE, f"{shown}/{MODEL_FILE}"), f"{shown}/{MODEL_FILE}")
    card = _card(_json(folder / DATASET_FILE, f"{shown}/{DATASET_FILE}"), f"{shown}/{DATASET_FILE}") if (folder / DATASET_FILE).is_file() else None
    return state, config, card


def card_for(config: TrainConfig, card: DatasetCard | None) -> DatasetCard:
    """``card``, or for files written before cards existed the card of the data set's validation split."""
    return card if card is not None else dataset_card(build_split(config.data, "val").info, config.data)


def rebuild(found: Rebuilt, shown: str, device: str | torch.device = "cpu") -> StagedModel:
    """The model of ``config`` with ``state`` loaded (strictly, pruning masks included), on ``device``, in eval mode.

    It carries its dataset card (:meth:`~mg_tune.models.StagedModel.describe`): class names, multi-label, input size.
    """
    state, config, card = found
    card = card_for(config, card)
    model = build_model(config.model, len(card.classes)).describe(card.classes, card.multilabel, card.image_size)
    try:
        load_state(model, state)
    except (RuntimeError, AttributeError) as exc:
        raise ValueError(f"{shown} does not fit model {config.model!r}: {first_line(str(exc))}") from None
    return model.to(device).eval()

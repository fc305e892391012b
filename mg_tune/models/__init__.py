"""Models behind one registry (``build_model``); all expose the five guidance layers."""

from mg_tune.models.registry import MODEL_NAMES, PRUNABLE_MODELS, build_model
from mg_tune.models.staged import LAYERS, StagedModel, layer_index

__all__ = ["LAYERS", "MODEL_NAMES", "PRUNABLE_MODELS", "StagedModel", "build_model", "layer_index"]

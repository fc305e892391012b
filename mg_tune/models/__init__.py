"""Models behind one registry (``build_model``); all expose the five guidance layers.

Each model module registers its own models (:func:`register_model`); they are
imported here, once, so that importing ``mg_tune.models`` registers them all.
A new architecture is a new module here plus its name in the import below.
"""

# each module registers its models; this order is the order of MODEL_NAMES (error messages, docs)
from mg_tune.models import smerf_cnn, resnet, bcos_models  # noqa: F401, I001  isort: skip
from mg_tune.models.registry import MODELS, ModelEntry, build_model, model_entry, model_names, prunable_models, register_model
from mg_tune.models.staged import LAYERS, StagedModel, layer_index

MODEL_NAMES: tuple[str, ...] = model_names()
PRUNABLE_MODELS: tuple[str, ...] = prunable_models()
"""Models whose head ends in ``nn.Linear``: the ones CRAYON-Pruning applies to (its penultimate layer is that layer's input)."""

__all__ = [
    "LAYERS",
    "MODELS",
    "MODEL_NAMES",
    "PRUNABLE_MODELS",
    "ModelEntry",
    "StagedModel",
    "build_model",
    "layer_index",
    "model_entry",
    "model_names",
    "prunable_models",
    "register_model",
]

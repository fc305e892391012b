"""One entry point for every model: ``build_model(name, num_classes, ...)`` (timm-style registry).

A model is a builder function in its architecture's own module, registered
with :func:`register_model`, which records a :class:`ModelEntry`::

    @register_model("smerf_cnn", family="standard", prunable=True)
    def smerf_cnn_model(num_classes: int) -> StagedModel: ...

What the rest of mg-tune knows of a model it reads here, not from its name:
its ``family`` (which attributions fit it), whether it ``takes_weights`` (a
local state-dict file) and whether it is ``prunable`` (head ends in
``nn.Linear``: CRAYON-Pruning). ``mg_tune/models/__init__.py`` imports every
model module once, so they are registered whenever ``mg_tune.models`` is
imported (as timm's ``models/__init__.py`` does); this module imports none of
them (they import it, and the import graph has no cycles).

| name | family | notes |
|---|---|---|
| ``smerf_cnn`` | standard | SMERF's small CNN (smerf.md A.2) |
| ``x_smerf_cnn`` | x_dnn | the same without biases (exact IntGrad) |
| ``resnet18`` / ``resnet50`` | standard | torchvision, random init or local weights |
| ``x_resnet18`` / ``x_resnet50`` | x_dnn | bias-free X-DNN ResNets (IntGrad) |
| ``bcos_cnn`` | bcos | small B-cos CNN |
| ``bcos_resnet18`` / ``bcos_resnet50`` | bcos | B-cos ResNets from the ``bcos`` package |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mg_tune.models.staged import FAMILIES, StagedModel

Builder = Callable[..., StagedModel]
"""``builder(num_classes)``, or ``builder(num_classes, weights=path_or_None)`` when the model takes weights."""


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows of one model.

    Attributes:
        name: the name ``build_model`` and configs use.
        family: the built model's ``family`` (``"standard"``, ``"x_dnn"`` or ``"bcos"``).
        takes_weights: the builder accepts ``weights=`` (a local state-dict file).
        prunable: the head ends in ``nn.Linear`` (CRAYON-Pruning prunes that layer's inputs).
        builder: returns a randomly initialised (or weights-loaded) :class:`StagedModel`.
    """

    name: str
    family: str
    takes_weights: bool
    prunable: bool
    builder: Builder


MODELS: dict[str, ModelEntry] = {}
"""Every registered model by name, in registration order."""


def register_model(name: str, *, family: str, takes_weights: bool = False, prunable: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` as model ``name`` (see the module docstring); returns it unchanged."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def register(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = ModelEntry(name, family, takes_weights, prunable, builder)
        return builder

    return register


def model_names() -> tuple[str, ...]:
    """Every registered model name, in registration order."""
    return tuple(MODELS)


def prunable_models() -> tuple[str, ...]:
    """Models whose head ends in ``nn.Linear``: the ones CRAYON-Pruning applies to (its penultimate layer is that layer's input)."""
    return tuple(name for name, entry in MODELS.items() if entry.prunable)


def model_entry(name: str) -> ModelEntry:
    """The entry of model ``name``; ValueError naming the valid models when there is none."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None


def build_model(name: str, num_classes: int, weights: str | Path | None = None) -> StagedModel:
    """Build model ``name`` with ``num_classes`` outputs, randomly initialised.

    ``weights`` (models that take weights: the torchvision ResNets) is a local
    state-dict file loaded with ``weights_only=True``; no weights are ever
    downloaded.
    """
    entry = model_entry(name)
    if weights is None:
        return entry.builder(num_classes)
    if not entry.takes_weights:
        raise ValueError(f"model {name!r} takes no weights file (got {weights})")
    if not Path(weights).is_file():
        raise ValueError(f"weights file {weights} does not exist")
    return entry.builder(num_classes, weights=weights)


def __getattr__(name: str) -> tuple[str, ...]:
    """``MODEL_NAMES`` and ``PRUNABLE_MODELS`` as attributes, read from the registry when asked for."""
    if name == "MODEL_NAMES":
        return model_names()
    if name == "PRUNABLE_MODELS":
        return prunable_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

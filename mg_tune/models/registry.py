"""One entry point for every model: ``build_model(name, num_classes, ...)`` (timm-style).

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

from pathlib import Path
from typing import Callable

from mg_tune.models.bcos_models import bcos_cnn, bcos_resnet_model
from mg_tune.models.resnet import resnet
from mg_tune.models.smerf_cnn import smerf_cnn
from mg_tune.models.staged import StagedModel

_BUILDERS: dict[str, Callable[[int], StagedModel]] = {
    "smerf_cnn": lambda k: smerf_cnn(k),
    "x_smerf_cnn": lambda k: smerf_cnn(k, bias=False),
    "resnet18": lambda k: resnet("resnet18", k),
    "resnet50": lambda k: resnet("resnet50", k),
    "x_resnet18": lambda k: resnet("resnet18", k, x_dnn=True),
    "x_resnet50": lambda k: resnet("resnet50", k, x_dnn=True),
    "bcos_cnn": lambda k: bcos_cnn(k),
    "bcos_resnet18": lambda k: bcos_resnet_model("resnet18", k),
    "bcos_resnet50": lambda k: bcos_resnet_model("resnet50", k),
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
PRUNABLE_MODELS: tuple[str, ...] = tuple(n for n in MODEL_NAMES if not n.startswith("bcos"))
"""Models whose head ends in ``nn.Linear``: the ones CRAYON-Pruning applies to (its penultimate layer is that layer's input)."""


def build_model(name: str, num_classes: int, weights: str | Path | None = None) -> StagedModel:
    """Build model ``name`` with ``num_classes`` outputs, randomly initialised.

    ``weights`` (torchvision ResNets only) is a local state-dict file loaded
    with ``weights_only=True``; no weights are ever downloaded.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if weights is not None:
        if name not in ("resnet18", "resnet50", "x_resnet18", "x_resnet50"):
            raise ValueError(f"model {name!r} takes no weights file (got {weights})")
        if not Path(weights).is_file():
            raise ValueError(f"weights file {weights} does not exist")
        arch = name.removeprefix("x_")
        return resnet(arch, num_classes, x_dnn=name.startswith("x_"), weights=weights)
    return _BUILDERS[name](num_classes)

"""A checkpoint as a complete MLflow Model: ``pytorch`` and ``python_function`` flavors.

:func:`save_mlflow_model` writes an MLflow Model directory that MLflow's own
tools load (``mlflow.pyfunc.load_model``, ``mlflow.pytorch.load_model``,
``mlflow models serve``, batch scoring)::

    MLmodel                 flavors, signature, metadata (classes, preprocessing)
    data/model.pth          the StagedModel, pickled (pytorch flavor)
    package/model.pt        its state_dict (tensors only: weights_only=True)
    package/config.json     the TrainConfig that rebuilds the architecture (TrainConfig.package_json)
    package/dataset.json    classes in output order, multilabel, input size
    requirements.txt, python_env.yaml, conda.yaml, input_example.json, serving_input_example.json

Flavors
    ``pytorch``: ``mlflow.pytorch.load_model`` returns the model as mg-tune
    built it -- a :class:`~mg_tune.models.StagedModel` with its hooks,
    stages and CRAYON pruning masks, and the same contract as
    ``mg_tune.load_model``'s: ``model(x)`` logits, ``model.probabilities(x)``
    (resized, σ/softmax), ``model.classes``. The format is chosen deliberately:
    ``serialization_format="pickle"``, not MLflow's default ``"pt2"``,
    which loads as a ``torch.fx.GraphModule`` (no ``features_and_logits``,
    so no attribution at inner layers, no pruning mask). Unpickling runs
    code: MLflow 3.17 allows it by default, and a deployment that sets
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` bans it -- the pyfunc
    below still works there, since it reads tensors only.

    ``python_function``: mg-tune's own loader (``loader_module`` =
    this module, :func:`_load_pyfunc`) rebuilds the model from
    ``package/`` -- tensors only, no pickle, so pyfunc loading and serving
    need no opt-in. ``predict(images, params)``:

    * ``images``: float32 ``[N, 3, H, W]`` RGB in ``[0, 1]``, any ``H, W``
      (as images come); the pyfunc applies the training preprocessing:
      resize to ``S x S`` (bilinear, antialiased, as ``Resize((S, S))`` of
      :mod:`mg_tune.data.real`), ``S`` = ``dataset.json`` ``image_size``;
    * ``params.output = "probabilities"`` (default): ``[N, K]``,
      σ(logits) for multi-label data, softmax(logits) otherwise, column
      ``k`` = ``classes[k]`` (``MLmodel``'s ``metadata.mg_tune.classes``;
      ``mlflow models serve`` answers ``{"predictions": [[p_0, …, p_K-1], …]}``
      in that order);
    * ``params.output = "attributions"``: ``[N, S, S]`` maps of
      ``params.target_class`` (``-1``: each image's top class) by
      ``params.method`` at ``params.layer`` (defaults: the trial's own),
      upsampled bilinearly to the input size -- the attribution the model
      was guided with (logit for multi-label, log-odds otherwise).

    A wrong ``params`` value or input shape raises ``MlflowException``
    (``INVALID_PARAMETER_VALUE``): ``mlflow models serve`` answers HTTP 400
    with the reason in ``message``.

Requirements are the installed versions (the project's lock) of mg-tune and
what loading needs, so ``--env-manager local`` in an environment with
mg-tune installed reproduces the predictions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pytorch
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import add_to_model
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from mg_tune.config import TrainConfig
from mg_tune.data.card import DatasetCard
from mg_tune.split_eval import attribution_target
from mg_tune.guidance.attribution import attribute
from mg_tune.models import StagedModel
from mg_tune.rebuild import CONFIG_FILE, DATASET_FILE, MODEL_FILE, read_package, rebuild

__all__ = ["PACKAGE_DIR", "GuidedClassifier", "requirements", "save_mlflow_model"]

PACKAGE_DIR = "package"
OUTPUTS = ("probabilities", "attributions")
EXAMPLE_SIZE = 32
"""Side of the input example: small, since the pyfunc resizes any input to the training size."""
REQUIRED = ("mg-tune", "torch", "torchvision", "mlflow", "numpy", "pandas", "pydantic", "bcos")
"""Distributions the loaded model needs; pinned at their installed (locked) versions."""


def requirements() -> list[str]:
    """``name==version`` of :data:`REQUIRED` as installed here (the lock's versions)."""
    pins = []
    for name in REQUIRED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def _signature(card: DatasetCard, config: TrainConfig) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(card.classes)))]),
        params=ParamSchema([
            ParamSpec("output", "string", "probabilities"),
            ParamSpec("target_class", "long", -1),
            ParamSpec("method", "string", config.attribution),
            ParamSpec("layer", "string", config.layer),
        ]),
    )


PICKLE_WARNING = "Saving pytorch model by Pickle or CloudPickle format"
"""Start of the warning MLflow logs on every ``serialization_format="pickle"`` save: mg-tune chose that
format (module docstring, "Flavors"), so :func:`save_mlflow_model` drops it (it was printed once per
front checkpoint by ``pareto --register``); MLflow's other warnings pass."""


def save_mlflow_model(model: StagedModel, config: TrainConfig, card: DatasetCard, path: str | Path, metadata_: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a complete MLflow Model directory at ``path`` (see the module docstring).

    ``metadata_`` is added to ``MLmodel``'s ``metadata`` (with ``mg_tune``:
    the dataset card); ``path`` must not exist yet.
    """
    path = Path(path)
    model = model.cpu().eval().describe(card.classes, card.multilabel, card.image_size)  # pickled with it: the pytorch flavor knows its classes
    example = np.full((1, 3, EXAMPLE_SIZE, EXAMPLE_SIZE), 0.5, dtype=np.float32)
    chosen_pickle = lambda record: not record.getMessage().startswith(PICKLE_WARNING)  # noqa: E731
    logging.getLogger("mlflow.pytorch").addFilter(chosen_pickle)
    try:
        mlflow.pytorch.save_model(
            model, str(path), serialization_format="pickle", signature=_signature(card, config), input_example=example,
            pip_requirements=requirements(), metadata={"mg_tune": card.to_json(), **(metadata_ or {})},
        )
    finally:
        logging.getLogger("mlflow.pytorch").removeFilter(chosen_pickle)
    package = path / PACKAGE_DIR
    package.mkdir()
    torch.save(model.state_dict(), package / MODEL_FILE)
    (package / CONFIG_FILE).write_text(json.dumps(config.package_json(), indent=2) + "\n", encoding="utf-8")
    (package / DATASET_FILE).write_text(json.dumps(card.to_json(), indent=2) + "\n", encoding="utf-8")
    mlmodel = Model.load(str(path / "MLmodel"))
    pyfunc = mlmodel.flavors["python_function"]
    add_to_model(mlmodel, loader_module=__name__, data=PACKAGE_DIR, conda_env=pyfunc.get("env", {}).get("conda"),
                 python_env=pyfunc.get("env", {}).get("virtualenv"))
    mlmodel.save(str(path / "MLmodel"))
    return path


def build_from_package(folder: Path, device: str | torch.device = "cpu") -> tuple[StagedModel, TrainConfig, DatasetCard]:
    """The model of an MLflow Model's ``package/`` folder (tensors only), its config and its dataset card."""
    found = read_package(folder, str(folder))
    _, config, card = found
    if card is None:
        raise ValueError(f"{folder} has no {DATASET_FILE}: not a package written by save_mlflow_model")
    return rebuild(found, str(folder), device), config, card


class GuidedClassifier:
    """The pyfunc model: probabilities or attribution maps of a guided classifier (module docstring)."""

    def __init__(self, model: StagedModel, config: TrainConfig, card: DatasetCard) -> None:
        self.model, self.config, self.card = model, config, card
        self.device = next(model.parameters()).device

    def preprocess(self, images: Any) -> torch.Tensor:
        """Float ``[N, 3, H, W]`` in [0, 1] → ``[N, 3, S, S]`` on the model's device, as training resized it (:meth:`StagedModel.preprocess`)."""
        try:
            return self.model.preprocess(torch.as_tensor(np.asarray(images, dtype=np.float32)))
        except ValueError as exc:
            raise _bad_request(str(exc)) from None

    def probabilities(self, images: Any) -> np.ndarray:
        """``[N, K]`` probabilities (:meth:`StagedModel.probabilities`), column ``k`` = ``classes[k]``."""
        return self.model.probabilities(self.preprocess(images)).cpu().numpy()

    def attributions(self, images: Any, target_class: int = -1, method: str | None = None, layer: str | None = None) -> np.ndarray:
        """Maps ``[N, S, S]`` of ``target_class`` (``-1``: each image's top class)."""
        batch = self.preprocess(images)
        if not -1 <= target_class < len(self.card.classes):
            classes = ", ".join(f"{k} {name}" for k, name in enumerate(self.card.classes))
            raise _bad_request(f"params.target_class {target_class} is not a class index: -1 (each image's top class) or one of {classes}")
        with torch.no_grad():
            top = self.model(batch).argmax(dim=1)
        targets = top if target_class < 0 else torch.full_like(top, target_class)
        size = (batch.shape[-2], batch.shape[-1])
        result = attribute(self.model, batch, targets, method or self.config.attribution, layer or self.config.layer,
                           size=size, target=attribution_target(self.card.multilabel))
        return result.maps.detach().float().cpu().numpy()

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> np.ndarray:
        params = dict(params or {})
        output = params.get("output", "probabilities")
        if output not in OUTPUTS:
            raise _bad_request(f"params.output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if output == "probabilities":
            return self.probabilities(data)
        return self.attributions(data, int(params.get("target_class", -1)), params.get("method"), params.get("layer"))


def _bad_request(message: str) -> MlflowException:
    """A wrong input or param: ``mlflow models serve`` answers HTTP 400 with ``message`` (any other exception becomes a generic message, the reason only in ``stack_trace``)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _load_pyfunc(path: str, model_config: Mapping[str, Any] | None = None) -> GuidedClassifier:
    """MLflow's pyfunc entry point (``loader_module``): ``path`` is the model's ``package/`` folder."""
    device = (model_config or {}).get("device") or "cpu"
    return GuidedClassifier(*build_from_package(Path(path), device))

"""Differentiable attribution maps at any of the five guidance layers.

For image n and its chosen class k_n, with U the feature map at the chosen
layer (the image itself at ``input``) and y_k the logit (main paper Sec. 3.2):

* ``ixg``     — Input×Gradient (:class:`InputXGradient`), A = Σ_c U_c ⊙ ∂y_k/∂U_c.
* ``gradcam`` — GradCAM (:class:`LayerGradCam`), A = ReLU(Σ_c α_c U_c) with α_c = mean_hw ∂y_k/∂U_c.
* ``intgrad`` — Integrated Gradients with a zero baseline (:class:`IntegratedGradients`),
  A = Σ_c U_c ⊙ ∫₀¹ ∂s/∂U_c(αU) dα for the attributed score s. On an X-DNN
  (bias-free, positively homogeneous) model every logit satisfies
  y_j(αU) = α·y_j(U), so ∇y_j(αU) = ∇y_j(U): for s = y_k the integrand is
  constant and IntGrad = IxG exactly in one backward pass (Hesse et al. 2021).
  The log-odds g = y_k − log Σ_{j≠k} exp y_j is not homogeneous for more than
  2 classes; there, exactly,
  ∇g(αU) = ∇y_k(U) − Σ_{j≠k} π_j(α) ∇y_j(U) with
  π_j(α) = exp(α y_j) / Σ_{i≠k} exp(α y_i), so
  IntGrad = Σ_c U_c ⊙ (∇y_k − Σ_{j≠k} π̄_j ∇y_j), π̄_j = ∫₀¹ π_j(α) dα.
  π̄ is an integral of scalars (Gauss–Legendre, :data:`INTGRAD_NODES` nodes,
  exact to float precision for this analytic integrand); the map needs one
  backward pass per class (K instead of 1). Other model families are refused.
* ``bcos``    — B-cos contributions (:class:`BcosContribution`), A = Σ_c W_k(x)ᵀ ⊙ x: IxG with the
  dynamic weights detached (the ``bcos`` package's explanation mode). The
  contributions sum to y_k minus the constant logit bias.

What is attributed (``target_kind`` of a method's ``attribute``, ``target`` of
:func:`attribute`): the logit y_k (``"logit"``, the main paper's
multi-label setting, where each logit is the log-odds of its class under
binary cross-entropy) or, for single-label (softmax) classifiers, the
log-odds of class k, ``"log_odds"``:
log p_k / (1 − p_k) = y_k − log Σ_{j≠k} exp y_j (= y_k − y_j for two
classes). Softmax decisions depend only on logit differences, so with
``logit`` a model can hide a shortcut as evidence *against* the other class,
which no map of y_k shows; the log-odds map shows it.

With ``create_graph=True`` the maps stay differentiable w.r.t. the model
parameters (a double backward), so a localization loss on them trains the
model. The gradient of y_k w.r.t. U only traverses the network above the
layer; that is why guidance at ``mid2`` costs less than at ``input``.

Maps of different images never mix in eval mode: each map uses only the
gradient of its own logit, and eval-mode batch norm is per image.

Each method is a class (captum-style): ``InputXGradient(model, layer)
.attribute(inputs, target, target_kind="log_odds")`` returns an
:class:`Attribution` (maps and logits). Its ``name`` is what configs, specs
and the CLI use, its ``required_family`` the model family it needs (None: any).
``@register_attribution`` adds it to :data:`ATTRIBUTIONS`, which
:data:`METHODS` and :func:`check_method` read, so adding a method is one class
in this file. :func:`attribute` is the one-call form
``ATTRIBUTIONS[method](model, layer).attribute(...)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from bcos.common import explanation_mode
from torch import Tensor

from mg_tune.guidance.metrics import resize_maps

__all__ = [
    "ATTRIBUTIONS", "METHODS", "Attribution", "AttributionMethod", "BcosContribution", "InputXGradient",
    "IntegratedGradients", "LayerGradCam", "attribute", "register_attribution",
]

TARGETS: tuple[str, ...] = ("logit", "log_odds")
INTGRAD_NODES = 64
"""Gauss–Legendre nodes for π̄_j = ∫₀¹ π_j(α) dα (IntGrad of multi-class log-odds)."""


class StagedNetwork(Protocol):
    """What attribution needs of a model: its family and the features at a named stage with the logits.

    ``family``: ``"standard"``, ``"x_dnn"`` or ``"bcos"`` (:func:`check_method`);
    ``features_and_logits(x, layer)``: the activations ``[N, C, h, w]`` at
    ``layer`` and the logits ``[N, K]`` of one forward pass. A ``bcos`` model
    must also be an ``nn.Module`` (``bcos``'s explanation mode). mg-tune's
    models (:class:`mg_tune.models.StagedModel`) are such networks; the
    guidance layer never imports them.
    """

    family: str

    def features_and_logits(self, x: Tensor, layer: str) -> tuple[Tensor, Tensor]: ...


@dataclass
class Attribution:
    """Attribution maps ``[N, H, W]`` and the logits ``[N, K]`` of the same forward pass."""

    maps: Tensor
    logits: Tensor


ATTRIBUTIONS: dict[str, type[AttributionMethod]] = {}
"""Every attribution method by its ``name``, in registration order (:func:`register_attribution`)."""


def register_attribution(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator: add ``cls`` to :data:`ATTRIBUTIONS` under ``cls.name``; returns it unchanged."""
    if cls.name in ATTRIBUTIONS:
        raise ValueError(f"attribution {cls.name!r} is already registered")
    ATTRIBUTIONS[cls.name] = cls
    return cls


def check_method(method: str, model: StagedNetwork) -> None:
    """Raise ValueError when ``method`` is unknown or does not fit the model family."""
    attribution_class(method).check_model(model)


def attribution_class(method: str) -> type[AttributionMethod]:
    """The class registered as ``method``; ValueError naming the valid methods when there is none."""
    try:
        return ATTRIBUTIONS[method]
    except KeyError:
        raise ValueError(f"unknown attribution method {method!r}; valid methods: {', '.join(ATTRIBUTIONS)}") from None


class AttributionMethod:
    """One attribution method on one model at one guidance layer (captum-style: construct, then ``attribute``).

    Subclasses set ``name`` (the config / CLI name), ``required_family`` (the
    model family the method needs, None for any) and, where the maths
    differs from Input×Gradient, override :meth:`_maps` or :meth:`_combine`.

    Args:
        model: a :class:`StagedNetwork` of a family that fits (else ValueError).
        layer: ``"input"``, ``"mid1"``, ``"mid2"``, ``"mid3"`` or ``"final"``.
    """

    name: ClassVar[str]
    required_family: ClassVar[str | None] = None
    logits_trainable: ClassVar[bool] = True
    """False when the logits of :meth:`attribute` must not train the classifier (B-cos explanation mode detaches the dynamic weights)."""

    def __init__(self, model: StagedNetwork, layer: str) -> None:
        self.check_model(model)
        self.model = model
        self.layer = layer

    @classmethod
    def check_model(cls, model: StagedNetwork) -> None:
        """Raise ValueError when ``model``'s family is not the one this method needs."""
        family = cls.required_family
        if family is not None and model.family != family:
            raise ValueError(
                f"attribution {cls.name!r} needs a {family} model (family of this model: {model.family!r})"
            )

    def attribute(
        self,
        inputs: Tensor,
        target: Tensor,
        *,
        create_graph: bool = False,
        size: tuple[int, int] | None = None,
        target_kind: str = "logit",
    ) -> Attribution:
        """Attribution maps of class ``target[n]`` for each image at the layer.

        Args:
            inputs: ``[N, 3, H, W]`` images.
            target: ``[N]`` class index per image (one map per image).
            create_graph: keep the maps differentiable w.r.t. the parameters (guidance training).
            size: resize the raw maps (bilinear, :func:`~mg_tune.guidance.metrics.resize_maps`)
                to this ``(H, W)``, e.g. the mask size. Training resizes after
                normalising instead (:func:`~mg_tune.guidance.losses.layer_loss`).
            target_kind: ``"logit"`` or ``"log_odds"`` (see the module docstring).
        """
        if target_kind not in TARGETS:
            raise ValueError(f"unknown attribution target {target_kind!r}; valid targets: {', '.join(TARGETS)}")
        with self._mode():
            feature, logits = self.model.features_and_logits(inputs, self.layer)
            maps = self._maps(feature, logits, target, target_kind, create_graph)
        if size is not None:
            maps = resize_maps(maps, size)
        return Attribution(maps=maps, logits=logits)

    def _mode(self) -> contextlib.AbstractContextManager:
        """The context the forward and backward passes run in."""
        return contextlib.nullcontext()

    def _maps(self, feature: Tensor, logits: Tensor, target: Tensor, target_kind: str, create_graph: bool) -> Tensor:
        """Maps ``[N, h, w]`` from the gradient of the attributed scores w.r.t. ``feature``."""
        selected = _target_scores(logits, target, target_kind).sum()
        (grad,) = torch.autograd.grad(selected, feature, create_graph=create_graph)
        return self._combine(feature, grad)

    def _combine(self, feature: Tensor, grad: Tensor) -> Tensor:
        """Input×Gradient: Σ_c U_c ⊙ ∂s/∂U_c."""
        return (feature * grad).sum(dim=1)


@register_attribution
class InputXGradient(AttributionMethod):
    """``ixg``: A = Σ_c U_c ⊙ ∂y_k/∂U_c (captum's ``InputXGradient`` at ``input``, ``LayerGradientXActivation`` elsewhere)."""

    name = "ixg"


@register_attribution
class LayerGradCam(AttributionMethod):
    """``gradcam``: A = ReLU(Σ_c α_c U_c), α_c = mean_hw ∂y_k/∂U_c (captum's ``LayerGradCam`` with ``relu_attributions=True``)."""

    name = "gradcam"

    def _combine(self, feature: Tensor, grad: Tensor) -> Tensor:
        weights = grad.mean(dim=(2, 3), keepdim=True)
        return F.relu((weights * feature).sum(dim=1))


@register_attribution
class IntegratedGradients(AttributionMethod):
    """``intgrad``: Integrated Gradients from a zero baseline, exact on an X-DNN (module docstring).

    The logit (and two-class log-odds) of a homogeneous model: IxG, one
    backward pass. The log-odds of more than two classes:
    :func:`_intgrad_log_odds`, one backward pass per class.
    """

    name = "intgrad"
    required_family = "x_dnn"

    def _maps(self, feature: Tensor, logits: Tensor, target: Tensor, target_kind: str, create_graph: bool) -> Tensor:
        if target_kind == "log_odds" and logits.shape[1] > 2:
            return _intgrad_log_odds(feature, logits, target, create_graph)
        return super()._maps(feature, logits, target, target_kind, create_graph)


@register_attribution
class BcosContribution(AttributionMethod):
    """``bcos``: B-cos contributions Σ_c W_k(x)ᵀ ⊙ x, IxG in the ``bcos`` package's explanation mode.

    The logits it returns come from explanation mode (dynamic weights
    detached): fine to report, not to train on (``logits_trainable``).
    """

    name = "bcos"
    required_family = "bcos"
    logits_trainable = False

    def _mode(self) -> contextlib.AbstractContextManager:
        return explanation_mode(self.model)


METHODS: tuple[str, ...] = tuple(ATTRIBUTIONS)
"""The registered attribution names, in registration order (error messages, docs): every class above this line."""


def attribute(model: StagedNetwork, images: Tensor, targets: Tensor, method: str, layer: str, *, target: str = "logit", **options: Any) -> Attribution:
    """Attribution maps of ``targets[n]`` for each image at ``layer``: ``ATTRIBUTIONS[method](model, layer).attribute(...)``.

    Args:
        images: ``[N, 3, H, W]``.
        targets: ``[N]`` class index per image (one map per image).
        method: a name in :data:`ATTRIBUTIONS`.
        target: ``"logit"`` or ``"log_odds"`` (see the module docstring): the method's ``target_kind``.
        options: the method's ``create_graph`` and ``size`` (:meth:`AttributionMethod.attribute`).
    """
    method_class = attribution_class(method)
    return method_class(model, layer).attribute(images, targets, target_kind=target, **options)


def _intgrad_log_odds(feature: Tensor, logits: Tensor, targets: Tensor, create_graph: bool) -> Tensor:
    """Σ_c U_c ⊙ (∇y_k − Σ_{j≠k} π̄_j ∇y_j) on a homogeneous model (module docstring)."""
    nodes, weights = np.polynomial.legendre.leggauss(INTGRAD_NODES)
    alpha = torch.as_tensor((nodes + 1) / 2, dtype=logits.dtype, device=logits.device)  # [-1, 1] -> [0, 1]
    w = torch.as_tensor(weights / 2, dtype=logits.dtype, device=logits.device)
    others = logits.masked_fill(F.one_hot(targets, logits.shape[1]).bool(), float("-inf"))
    pi_bar = torch.einsum("q,qnk->nk", w, torch.softmax(alpha[:, None, None] * others, dim=2))  # 0 at k
    coeff = F.one_hot(targets, logits.shape[1]).to(logits.dtype) - pi_bar  # [N, K]
    maps = torch.zeros_like(feature[:, 0])
    for j in range(logits.shape[1]):
        (grad_j,) = torch.autograd.grad(logits[:, j].sum(), feature, create_graph=create_graph, retain_graph=True)
        maps = maps + coeff[:, j, None, None] * (feature * grad_j).sum(dim=1)
    return maps


def _target_scores(logits: Tensor, targets: Tensor, target: str) -> Tensor:
    """y_k, or the log-odds y_k − log Σ_{j≠k} exp y_j, per image."""
    chosen = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    if target == "logit":
        return chosen
    others = logits.masked_fill(F.one_hot(targets, logits.shape[1]).bool(), float("-inf"))
    return chosen - torch.logsumexp(others, dim=1)

"""Differentiable attribution maps at any of the five guidance layers.

For image n and its chosen class k_n, with U the feature map at the chosen
layer (the image itself at ``input``) and y_k the logit (main paper Sec. 3.2):

* ``ixg``     — Input×Gradient, A = Σ_c U_c ⊙ ∂y_k/∂U_c.
* ``gradcam`` — GradCAM, A = ReLU(Σ_c α_c U_c) with α_c = mean_hw ∂y_k/∂U_c.
* ``intgrad`` — Integrated Gradients with a zero baseline,
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
* ``bcos``    — B-cos contributions, A = Σ_c W_k(x)ᵀ ⊙ x: IxG with the
  dynamic weights detached (the ``bcos`` package's explanation mode). The
  contributions sum to y_k minus the constant logit bias.

What is attributed: the logit y_k (``target="logit"``, the main paper's
multi-label setting, where each logit is the log-odds of its class under
binary cross-entropy) or, for single-label (softmax) classifiers, the
log-odds of class k, ``target="log_odds"``:
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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from bcos.common import explanation_mode
from torch import Tensor

from mg_tune.guidance.metrics import resize_maps

METHODS: tuple[str, ...] = ("ixg", "gradcam", "intgrad", "bcos")
TARGETS: tuple[str, ...] = ("logit", "log_odds")
_REQUIRED_FAMILY = {"intgrad": "x_dnn", "bcos": "bcos"}
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


def check_method(method: str, model: StagedNetwork) -> None:
    """Raise ValueError when ``method`` is unknown or does not fit the model family."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid methods: {', '.join(METHODS)}")
    family = _REQUIRED_FAMILY.get(method)
    if family is not None and model.family != family:
        raise ValueError(
            f"attribution {method!r} needs a {family} model (family of this model: {model.family!r})"
        )


def attribute(
    model: StagedNetwork,
    images: Tensor,
    targets: Tensor,
    method: str,
    layer: str,
    create_graph: bool = False,
    size: tuple[int, int] | None = None,
    target: str = "logit",
) -> Attribution:
    """Attribution maps of ``targets[n]`` for each image at ``layer``.

    Args:
        images: ``[N, 3, H, W]``.
        targets: ``[N]`` class index per image (one map per image).
        size: resize the raw maps (bilinear, :func:`~mg_tune.guidance.metrics.resize_maps`)
            to this ``(H, W)``, e.g. the mask size. Training resizes after
            normalising instead (:func:`~mg_tune.guidance.losses.layer_loss`).
        target: ``"logit"`` or ``"log_odds"`` (see the module docstring).
    """
    check_method(method, model)
    if target not in TARGETS:
        raise ValueError(f"unknown attribution target {target!r}; valid targets: {', '.join(TARGETS)}")
    mode = explanation_mode(model) if method == "bcos" else contextlib.nullcontext()
    with mode:
        feature, logits = model.features_and_logits(images, layer)
        if method == "intgrad" and target == "log_odds" and logits.shape[1] > 2:
            maps = _intgrad_log_odds(feature, logits, targets, create_graph)
        else:
            selected = _target_scores(logits, targets, target).sum()
            (grad,) = torch.autograd.grad(selected, feature, create_graph=create_graph)
            if method == "gradcam":
                weights = grad.mean(dim=(2, 3), keepdim=True)
                maps = F.relu((weights * feature).sum(dim=1))
            else:
                maps = (feature * grad).sum(dim=1)
    if size is not None:
        maps = resize_maps(maps, size)
    return Attribution(maps=maps, logits=logits)


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

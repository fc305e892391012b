"""CRAYON-Pruning (crayon.md Sec. III-C): prune penultimate neurons that respond to irrelevant regions.

CRAYON shows annotators, for every neuron of the penultimate layer, the image
patches of the **three training images that activate it most** (Sec. IV-B)
and asks yes/no: is this concept relevant? Neurons answered "no" are pruned
and only the last fully connected layer is fine-tuned with the prediction
loss (eq. 3). Here the annotator is simulated from the box annotations, as
``mg_tune.data.masks.crayon_relevance`` does for CRAYON-Attention:

* the penultimate layer is the input of the model's last ``nn.Linear``:
  z = body(F), logits = W z + b, with F the ``final`` feature map;
* neuron c's attribution map on image n is its Input×Gradient at ``final``,
  A_{nc} = Σ_ch F_n ⊙ ∂z_{nc}/∂F_n, resized (bilinear) to the mask size (for a
  ResNet head, pooling + linear, this is F_{n,c} / hw: the activation map
  whose peak CRAYON crops as the patch);
* its share on the region annotated irrelevant (outside the relevant mask M_n)
  is s_{nc} = Σ (1 − M_n) A⁺_{nc} / Σ A⁺_{nc} (0 for an all-zero map);
* its irrelevance r_c is the mean of s_{nc} over its ``top_k`` most activating
  annotated images (largest z_{nc});
* the ``round(fraction · D)`` neurons of highest r_c are pruned: their
  columns of W are masked to zero with ``torch.nn.utils.prune``, so their
  contribution to every logit is exactly zero and stays zero through any
  later training (the mask is a buffer, ``<linear>.weight_mask``, saved in
  every checkpoint; :func:`load_state` re-installs it when loading).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

__all__ = ["rank_and_prune"]

TOP_IMAGES = 3
"""CRAYON Sec. IV-B: each neuron is shown by the patches of its three most activating images."""


def penultimate(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``(body, last)``: the head up to the penultimate layer and its final ``nn.Linear``.

    Needs ``model.head`` to be an ``nn.Sequential`` ending in ``nn.Linear``
    (SMERF CNN, torchvision/X-DNN ResNets); other heads raise ValueError.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
        raise ValueError("CRAYON-Pruning needs a model whose head ends in nn.Linear (smerf_cnn, resnet*, x_*)")
    return head[:-1], head[-1]


def neuron_irrelevant_shares(body: nn.Module, features: Tensor, masks: Tensor, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Penultimate activations z ``[N, D]`` and shares s ``[N, D]`` on the irrelevant region.

    ``features`` is the ``final`` feature map ``[N, C, h, w]``, ``masks`` the
    relevant region ``[N, H, W]`` (0/1). s_{nc} = Σ(1 − M_n)·A⁺_{nc} / ΣA⁺_{nc}
    with A_{nc} the Input×Gradient map of z_{nc} w.r.t. the features (module
    docstring). Neurons are processed ``chunk`` at a time (batched vector-Jacobian
    products), so memory is O(chunk · N · C · h · w).
    """
    leaf = features.detach().requires_grad_(True)
    with torch.enable_grad():
        z = body(leaf)
        if z.dim() != 2:
            raise ValueError(f"the penultimate layer must be flat [N, D], got shape {tuple(z.shape)}")
        n, d = z.shape
        outside = (1.0 - masks.to(leaf.dtype)).unsqueeze(1)
        shares = []
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        for start in range(0, d, chunk):
            rows = eye[start : start + chunk]
            grad_out = rows[:, None, :].expand(-1, n, -1)
            (grad,) = torch.autograd.grad(z, leaf, grad_out, retain_graph=True, is_grads_batched=True)
            maps = (grad * leaf.detach()).sum(2).transpose(0, 1)  # [N, chunk, h, w]
            if maps.shape[-2:] != masks.shape[-2:]:
                maps = F.interpolate(maps, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)
            positive = maps.clamp(min=0)
            total = positive.sum((2, 3))
            off = (positive * outside).sum((2, 3))
            shares.append(torch.where(total > 0, off / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0))
    return z.detach(), torch.cat(shares, 1)


def neuron_irrelevance(activations: Tensor, shares: Tensor, top_k: int = TOP_IMAGES) -> Tensor:
    """r_c: mean of s_{nc} over the ``top_k`` images n with the largest activation z_{nc}. ``[D]``."""
    if activations.shape != shares.shape or activations.dim() != 2:
        raise ValueError(f"activations and shares must both be [N, D], got {tuple(activations.shape)} and {tuple(shares.shape)}")
    k = min(top_k, activations.shape[0])
    top = activations.topk(k, dim=0).indices  # [k, D]
    return shares.gather(0, top).mean(0)


def neurons_to_prune(irrelevance: Tensor, fraction: float) -> Tensor:
    """Indices of the ``round(fraction · D)`` most irrelevant neurons (ties: lower index first)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    count = round(fraction * irrelevance.numel())
    order = torch.sort(irrelevance, descending=True, stable=True).indices
    return order[:count].sort().values


def prune_inputs(linear: nn.Linear, neurons: Tensor) -> Tensor:
    """Mask the input columns ``neurons`` of ``linear`` (their weights are zero from now on); returns the keep mask ``[D]``."""
    keep = torch.ones(linear.in_features, dtype=linear.weight.dtype, device=linear.weight.device)
    keep[neurons.to(keep.device)] = 0.0
    prune.custom_from_mask(linear, "weight", keep.expand_as(linear.weight).contiguous())
    return keep


@torch.no_grad()
def rank_and_prune(model: nn.Module, batches, fraction: float, top_k: int = TOP_IMAGES) -> Tensor:
    """CRAYON-Pruning of ``model`` in place; returns the pruned neuron indices.

    ``batches`` yields ``(images, relevant_masks)`` of the annotated training
    images; ``model`` must be a :class:`~mg_tune.models.StagedModel`.
    """
    body, linear = penultimate(model)
    was_training = model.training
    model.eval()
    activations, shares = [], []
    for images, masks in batches:
        features = model.features_and_logits(images, "final")[0]
        z, s = neuron_irrelevant_shares(body, features, masks)
        activations.append(z)
        shares.append(s)
    model.train(was_training)
    if not activations:
        raise ValueError("CRAYON-Pruning needs annotated training images (annotation_fraction > 0 and non-empty masks)")
    neurons = neurons_to_prune(neuron_irrelevance(torch.cat(activations), torch.cat(shares), top_k), fraction)
    prune_inputs(linear, neurons)
    return neurons


def load_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """``model.load_state_dict(state)``, first re-installing pruning masks the state holds.

    A pruned parameter is saved as ``<module>.<name>_orig`` and
    ``<module>.<name>_mask`` (``torch.nn.utils.prune``); a freshly built model
    has ``<module>.<name>`` instead, so the mask is applied before loading.
    """
    for key, mask in state.items():
        if not key.endswith("_mask") or key.removesuffix("_mask") + "_orig" not in state:
            continue
        module_name, _, name = key.removesuffix("_mask").rpartition(".")
        module = model.get_submodule(module_name)
        if not hasattr(module, f"{name}_mask"):
            prune.custom_from_mask(module, name, mask.to(getattr(module, name).device))
    model.load_state_dict(state)

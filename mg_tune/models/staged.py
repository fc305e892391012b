"""A classifier split at the five guidance layers.

Model guidance computes attributions at one of five depths (main paper Sec. 3.2
and 4: ``input``, three intermediate layers and the ``final`` spatial layer).
Every mg-tune model is a :class:`StagedModel`::

    x --prepare--> input --stages[0]--> mid1 --stages[1]--> mid2
      --stages[2]--> mid3 --stages[3]--> final --head--> logits

so the feature map at any layer, and the logits computed from it, come out of
one forward pass. Gradients of a logit w.r.t. ``mid2`` only traverse
``stages[2:]`` and ``head``, which is what makes guidance at deeper layers
cheaper than at the input.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

LAYERS: tuple[str, ...] = ("input", "mid1", "mid2", "mid3", "final")
FAMILIES: tuple[str, ...] = ("standard", "x_dnn", "bcos")


class StagedModel(nn.Module):
    """``prepare`` → four ``stages`` → ``head``; see the module docstring.

    Args:
        prepare: fixed input encoding that is not attributed through (e.g. the
            B-cos ``[x, 1-x]`` channels); its output is the ``input`` layer.
        stages: exactly four modules producing ``mid1``, ``mid2``, ``mid3``,
            ``final``.
        head: pooling and classifier, ``final`` feature map → logits.
        family: ``"standard"`` (ReLU network), ``"x_dnn"`` (bias-free, so
            IntGrad is exact in one pass) or ``"bcos"`` (B-cos network).
        logit_offset: a constant added to every logit that no input contributes
            to (B-cos logit bias); 0 for other families.
    """

    def __init__(
        self,
        prepare: nn.Module,
        stages: Sequence[nn.Module],
        head: nn.Module,
        family: str,
        logit_offset: float = 0.0,
    ) -> None:
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"StagedModel needs 4 stages, got {len(stages)}")
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        self.prepare = prepare
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.family = family
        self.logit_offset = float(logit_offset)

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x, "final")[1]

    def features_and_logits(self, x: Tensor, layer: str) -> tuple[Tensor, Tensor]:
        """Return ``(feature map at layer, logits)`` from a single forward pass.

        The returned feature requires grad, so ``autograd.grad(logit, feature)``
        works for every layer including ``input``.
        """
        depth = layer_index(layer)
        h = self.prepare(x)
        if depth == 0 and not h.requires_grad:
            h = h.detach().requires_grad_(True)  # a new leaf: the caller's tensor is untouched
        feature = h
        for i, stage in enumerate(self.stages, start=1):
            h = stage(h)
            if i == depth:
                feature = h
        return feature, self.head(h)

    def feature_maps(self, x: Tensor) -> dict[str, Tensor]:
        """All five feature maps, keyed by layer name (for inspection)."""
        maps = {"input": self.prepare(x)}
        h = maps["input"]
        for name, stage in zip(LAYERS[1:], self.stages):
            h = stage(h)
            maps[name] = h
        return maps


def layer_index(layer: str) -> int:
    """Depth of a layer name: 0 for ``input`` … 4 for ``final``."""
    try:
        return LAYERS.index(layer)
    except ValueError:
        raise ValueError(f"unknown layer {layer!r}; valid layers: {', '.join(LAYERS)}") from None

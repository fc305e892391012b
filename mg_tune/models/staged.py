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

import torch
from torch import Tensor, nn

LAYERS: tuple[str, ...] = ("input", "mid1", "mid2", "mid3", "final")
FAMILIES: tuple[str, ...] = ("standard", "x_dnn", "bcos")


class StagedModel(nn.Module):
    """``prepare`` → four ``stages`` → ``head``; see the module docstring.

    What it returns: ``model(x)`` gives **logits** ``[N, K]`` of images already at
    the training size; :meth:`probabilities` gives σ(logits) (multi-label) or
    softmax(logits) of images at any size, resized as in training. A model that
    mg-tune loads (``mg_tune.load_model``, ``mlflow.pytorch.load_model`` of what
    mg-tune registered) carries its data set's card: :attr:`classes` (output
    ``k`` is ``classes[k]``), :attr:`multilabel` and :attr:`image_size`; a model
    built by hand (or pickled before the card was attached) has ``classes == ()``.

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

    classes: tuple[str, ...] = ()
    """Name of each output, in order (set by :meth:`describe`; class-level default for older pickles)."""
    multilabel: bool | None = None
    """Multi-label (one sigmoid per class) or single-label (softmax over classes)."""
    image_size: int | None = None
    """Side ``S`` of the ``S x S`` images the model was trained on."""

    def describe(self, classes: Sequence[str], multilabel: bool, image_size: int) -> StagedModel:
        """Attach what the outputs mean and the input size (a dataset card's fields); returns ``self``."""
        self.classes, self.multilabel, self.image_size = tuple(classes), bool(multilabel), int(image_size)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, K]`` of images ``[N, 3, S, S]`` (no resize, no sigmoid/softmax: see :meth:`probabilities`)."""
        return self.features_and_logits(x, "final")[1]

    def preprocess(self, images: Tensor) -> Tensor:
        """Float RGB ``[N, 3, H, W]`` in ``[0, 1]``, any ``H, W`` → ``[N, 3, S, S]`` on the model's device, resized as training resized it.

        Bilinear, antialiased, as ``Resize((S, S))`` of :mod:`mg_tune.data.real`; no mean/std normalisation.
        """
        import torch.nn.functional as F

        if self.image_size is None:
            raise ValueError("this model carries no input size (not loaded by mg-tune, or pickled before mg-tune attached its card): load it with mg_tune.load_model")
        batch = images.to(next(self.parameters()).device, torch.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"images must be a float32 batch [N, 3, H, W], got shape {tuple(batch.shape)}")
        if batch.shape[-2:] != (self.image_size, self.image_size):
            batch = F.interpolate(batch, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return batch

    def probabilities(self, images: Tensor) -> Tensor:
        """``[N, K]``: σ(logits) for multi-label data, softmax(logits) otherwise, of :meth:`preprocess`-ed images; column ``k`` is ``classes[k]``."""
        with torch.no_grad():
            logits = self(self.preprocess(images)).float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

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

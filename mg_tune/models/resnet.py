"""torchvision ResNets and their bias-free X-DNN variants as :class:`StagedModel`.

Stages follow the papers' layer naming: ``mid1`` = layer1 (after the stem),
``mid2`` = layer2, ``mid3`` = layer3, ``final`` = layer4; the head is global
average pooling and the linear classifier.

X-DNN (Hesse et al. 2021, used by the main paper for IntGrad): every additive
constant is removed — convolutions and the classifier have no bias and batch
normalisation only rescales, y = γ·x / sqrt(Var[x] + ε) (no mean subtraction,
no β). With ReLU, max/avg pooling and these layers the network is positively
homogeneous in eval mode, so IntGrad with a zero baseline equals IxG.

Registered models: ``resnet18``, ``resnet50``, ``x_resnet18``, ``x_resnet50``;
all take a local weights file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from mg_tune.models.registry import register_model
from mg_tune.models.staged import StagedModel


class BiasFreeBatchNorm2d(nn.BatchNorm2d):
    """Batch norm without centring or shift: y = γ·x / sqrt(σ² + ε) (X-DNN)."""

    def drop_shift(self) -> None:
        """Remove β (torchvision's initialisation needs it to exist first)."""
        self.register_parameter("bias", None)
        self.register_buffer("running_mean", None)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / max(n - 1, 1))
        else:
            var = self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        return x * scale[None, :, None, None]


ARCHITECTURES = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}


def resnet(arch: str, num_classes: int, x_dnn: bool = False, weights: str | Path | None = None) -> StagedModel:
    """Build ``arch`` ("resnet18"/"resnet50"), randomly initialised or from a local file.

    ``weights`` is a torchvision-format state dict saved with ``torch.save``;
    it is loaded with ``weights_only=True``. The classifier is kept from the
    file only when its shape matches ``num_classes``.
    """
    kwargs = {"norm_layer": BiasFreeBatchNorm2d} if x_dnn else {}
    net = ARCHITECTURES[arch](num_classes=num_classes, **kwargs)
    if x_dnn:
        net.fc = nn.Linear(net.fc.in_features, num_classes, bias=False)
        for module in net.modules():
            if isinstance(module, BiasFreeBatchNorm2d):
                module.drop_shift()
    if weights is not None:
        load_matching(net, torch.load(weights, map_location="cpu", weights_only=True))
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return StagedModel(nn.Identity(), [stem, net.layer2, net.layer3, net.layer4], head, family="x_dnn" if x_dnn else "standard")


def load_matching(net: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Load the entries of ``state`` whose name and shape match; return the skipped names."""
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(usable, strict=False)
    return sorted(set(state) - set(usable))



@register_model("resnet18", family="standard", takes_weights=True, prunable=True)
def resnet18_model(num_classes: int, weights: str | Path | None = None) -> StagedModel:
    """torchvision ResNet-18, random init or a local weights file."""
    return resnet("resnet18", num_classes, weights=weights)


@register_model("resnet50", family="standard", takes_weights=True, prunable=True)
def resnet50_model(num_classes: int, weights: str | Path | None = None) -> StagedModel:
    """torchvision ResNet-50, random init or a local weights file."""
    return resnet("resnet50", num_classes, weights=weights)


@register_model("x_resnet18", family="x_dnn", takes_weights=True, prunable=True)
def x_resnet18_model(num_classes: int, weights: str | Path | None = None) -> StagedModel:
    """Bias-free X-DNN ResNet-18, random init or a local weights file."""
    return resnet("resnet18", num_classes, x_dnn=True, weights=weights)


@register_model("x_resnet50", family="x_dnn", takes_weights=True, prunable=True)
def x_resnet50_model(num_classes: int, weights: str | Path | None = None) -> StagedModel:
    """Bias-free X-DNN ResNet-50, random init or a local weights file."""
    return resnet("resnet50", num_classes, x_dnn=True, weights=weights)

"""B-cos networks (Böhle et al. 2022) from the ``bcos`` package as :class:`StagedModel`.

B-cos networks compute y = W(x)ᵀx with an input-dependent linear map W(x).
The model-inherent explanation for class k is the contribution map
W_k(x)ᵀ ⊙ x (main paper Sec. 3.2); in the package's *explanation mode* the
dynamic scaling is detached, so Input×Gradient yields exactly these
contributions and they sum to the logit (minus the constant logit bias).
Inputs are encoded as the six channels [x, 1 − x] (the package's AddInverse);
this encoded image is the ``input`` layer.

Registered models: ``bcos_cnn``, ``bcos_resnet18``, ``bcos_resnet50`` (their
heads are 1×1 B-cos convolutions, so none is prunable).
"""

from __future__ import annotations

import math

import bcos.models.resnet as bcos_resnet
from bcos.data.transforms import AddInverse
from bcos.modules import BcosConv2d
from torch import nn

from mg_tune.models.registry import register_model
from mg_tune.models.staged import StagedModel


class _BcosHead(nn.Module):
    """1×1 B-cos classifier, global average pooling, constant logit bias."""

    def __init__(self, classifier: nn.Module, logit_bias: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.logit_bias = logit_bias

    def forward(self, x):
        return self.classifier(x).mean(dim=(2, 3)) + self.logit_bias


def bcos_resnet_model(arch: str, num_classes: int) -> StagedModel:
    """B-cos ResNet-18/50 (``arch`` = "resnet18"/"resnet50"), random init."""
    net = getattr(bcos_resnet, arch)(num_classes=num_classes)
    stem = nn.Sequential(net.conv1, net.bn1, *([net.pool] if net.pool is not None else []), net.layer1)
    bias = float(net.logit_layer.logit_bias or 0.0)
    head = _BcosHead(net.fc, bias)
    return StagedModel(AddInverse(), [stem, net.layer2, net.layer3, net.layer4], head, family="bcos", logit_offset=bias)


def bcos_cnn(num_classes: int, widths: tuple[int, int, int, int] = (32, 64, 64, 64)) -> StagedModel:
    """A small B-cos CNN mirroring the SMERF CNN: four stride-2 B-cos convs (MaxOut 2)."""
    channels = (6, *widths)
    stages = [
        BcosConv2d(cin, cout, kernel_size=3, stride=2, padding=1, max_out=2)
        for cin, cout in zip(channels[:-1], channels[1:])
    ]
    bias = -math.log(num_classes - 1) if num_classes > 2 else 0.0
    head = _BcosHead(BcosConv2d(widths[-1], num_classes, kernel_size=1), bias)
    return StagedModel(AddInverse(), stages, head, family="bcos", logit_offset=bias)


@register_model("bcos_cnn", family="bcos")
def bcos_cnn_model(num_classes: int) -> StagedModel:
    """The small B-cos CNN."""
    return bcos_cnn(num_classes)


@register_model("bcos_resnet18", family="bcos")
def bcos_resnet18_model(num_classes: int) -> StagedModel:
    """B-cos ResNet-18 from the ``bcos`` package."""
    return bcos_resnet_model("resnet18", num_classes)


@register_model("bcos_resnet50", family="bcos")
def bcos_resnet50_model(num_classes: int) -> StagedModel:
    """B-cos ResNet-50 from the ``bcos`` package."""
    return bcos_resnet_model("resnet50", num_classes)

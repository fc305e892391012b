"""The small CNN of SMERF (smerf.md, Appendix A.2), as a :class:`StagedModel`.

SMERF's complex-reasoning network has four 3×3 stride-2 convolutions with
ReLU followed by fully connected layers (200 units) and the class logits. The
four convolutions produce ``mid1``, ``mid2``, ``mid3`` and ``final``; at 64 px
they are 32, 16, 8 and 4 px wide.

``bias=False`` gives the X-DNN variant (Hesse et al. 2021): without biases the
network is positively homogeneous, f(αx) = α f(x) for α > 0, so Integrated
Gradients with a zero baseline equals Input×Gradient exactly.

Registered models: ``smerf_cnn`` and ``x_smerf_cnn``.
"""

from __future__ import annotations

from torch import nn

from mg_tune.models.registry import register_model
from mg_tune.models.staged import StagedModel


def smerf_cnn(
    num_classes: int,
    widths: tuple[int, int, int, int] = (32, 64, 64, 64),
    hidden: int = 200,
    bias: bool = True,
) -> StagedModel:
    """Build the SMERF CNN; ``bias=False`` builds its X-DNN variant."""
    channels = (3, *widths)
    stages = [
        nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=bias), nn.ReLU())
        for cin, cout in zip(channels[:-1], channels[1:])
    ]
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(widths[-1] * 16, hidden, bias=bias),
        nn.ReLU(),
        nn.Linear(hidden, num_classes, bias=bias),
    )
    return StagedModel(nn.Identity(), stages, head, family="standard" if bias else "x_dnn")


@register_model("smerf_cnn", family="standard", prunable=True)
def smerf_cnn_model(num_classes: int) -> StagedModel:
    """SMERF's small CNN."""
    return smerf_cnn(num_classes)


@register_model("x_smerf_cnn", family="x_dnn", prunable=True)
def x_smerf_cnn_model(num_classes: int) -> StagedModel:
    """SMERF's small CNN without biases (X-DNN: IntGrad in one pass)."""
    return smerf_cnn(num_classes, bias=False)

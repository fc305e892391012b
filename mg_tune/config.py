"""Configuration objects of one training run (Ray Tune style: objects, not argument lists).

``TrainConfig`` is everything :func:`mg_tune.train.train` needs; a search spec
(:mod:`mg_tune.search.spec`) samples values into it. Unknown keys are refused
(``extra="forbid"``) so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mg_tune.guidance.attribution import METHODS
from mg_tune.guidance.losses import LOSSES
from mg_tune.models import LAYERS, MODEL_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Which data set, which variant and how its annotations are degraded.

    ``annotation_fraction`` keeps masks for that share of training images only
    (main paper Sec. 5.4: 1 / 10 / 100 %); ``dilation`` grows every box by that
    percentage (10 / 25 / 50 %); ``mask_kind`` guides with boxes or with
    segmentation masks where the data set has them.
    """

    name: Literal["textbox"] = "textbox"
    variant: str = "spurious"
    train_size: int = Field(1000, gt=0)
    val_size: int = Field(300, gt=0)
    heldout_size: int = Field(100, gt=0)
    test_size: int = Field(500, gt=0)
    annotation_fraction: float = Field(1.0, ge=0.0, le=1.0)
    dilation: float = Field(0.0, ge=0.0)
    mask_kind: Literal["box", "segmentation"] = "box"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Strict):
    """One guided-training configuration: L = L_class + λ·L_loc (main paper eq. overall)."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: str = "smerf_cnn"
    weights: str | None = None
    init_checkpoint: str | None = None
    attribution: str = "ixg"
    layer: str = "input"
    loss: str = "energy"
    lam: float = Field(0.0, ge=0.0, description="λ_loc, weight of the localization loss")
    loss_params: dict[str, float] = Field(default_factory=dict)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(5, gt=0)
    batch_size: int = Field(64, gt=0)
    eval_batch_size: int = Field(128, gt=0)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    num_workers: int = Field(0, ge=0)
    overlay_images: int = Field(8, ge=0)

    @model_validator(mode="after")
    def _known_names(self) -> "TrainConfig":
        for field, value, valid in (
            ("model", self.model, MODEL_NAMES),
            ("attribution", self.attribution, METHODS),
            ("layer", self.layer, LAYERS),
            ("loss", self.loss, tuple(LOSSES)),
        ):
            if value not in valid:
                raise ValueError(f"{field}={value!r} is not one of {', '.join(valid)}")
        if self.loss == "crayon_attention" and self.lam > 0 and self.init_checkpoint is None:
            raise ValueError("loss='crayon_attention' refines an original model: set init_checkpoint")
        return self

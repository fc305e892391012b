"""Configuration objects of one training run (Ray Tune style: objects, not argument lists).

``TrainConfig`` is everything :func:`mg_tune.train.train` needs; a search spec
(:mod:`mg_tune.search.spec`) samples values into it. Unknown keys are refused
(``extra="forbid"``) so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mg_tune.guidance.attribution import ATTRIBUTIONS
from mg_tune.guidance.losses import LOSSES
from mg_tune.models import LAYERS, model_entry, model_names, prunable_models
from mg_tune.textfiles import expected_one_of


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Which data set, which variant and how its annotations are degraded.

    ``name``: ``textbox`` (embedded, generated) or a real data set read from the
    user's copy at ``root``, a local directory or ``s3://bucket/prefix`` mirrored
    into a node-local cache (``voc``, ``coco``, ``waterbirds``; see
    ``mg_tune.data.voc`` / ``coco`` / ``waterbirds`` for the files and
    ``options`` each one takes). ``variant``: the TextBox variant, the VOC year
    (``2007``), the COCO year (``2014``) or the Waterbirds setting
    (``conventional`` / ``reversed``); it defaults per ``name``.

    ``annotation_fraction`` keeps masks for that share of training images only
    (main paper Sec. 5.4: 1 / 10 / 100 %); ``dilation`` moves every side of every
    box outward by that percentage of the box's size (10 / 25 / 50 %, as the
    authors' ``enlarge_bb``; :func:`mg_tune.data.masks.dilate_box`); ``mask_kind`` guides with boxes or with
    segmentation masks where the data set has them.

    Real data sets only: ``image_size`` (images and masks are resized to S x S),
    ``augment`` (random resized crop + horizontal flip of the training split,
    applied identically to image and masks), ``on_bad_sample`` (a bad image or
    annotation raises, or is skipped with one warning), ``max_samples`` (use at
    most the first N samples of each split: quick runs). The ``*_size`` fields
    apply to TextBox only (real splits have the size of the data); TextBox
    images are always 64 px. The data set's files are only looked at when a
    split is built, never when a config or spec is parsed.
    """

    name: str = "textbox"
    variant: str = "spurious"
    root: str | None = None
    train_size: int = Field(1000, gt=0)
    val_size: int = Field(300, gt=0)
    heldout_size: int = Field(100, gt=0)
    test_size: int = Field(500, gt=0)
    annotation_fraction: float = Field(1.0, ge=0.0, le=1.0)
    dilation: float = Field(0.0, ge=0.0)
    mask_kind: Literal["box", "segmentation"] = "box"
    image_size: int = Field(224, gt=0)
    augment: bool = False
    on_bad_sample: Literal["error", "skip"] = "error"
    max_samples: int | None = Field(None, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)

    def unused_fields(self) -> tuple[str, ...]:
        """The fields that do not apply to the data set ``name``: :data:`TEXTBOX_ONLY_FIELDS` for a real one, :data:`REAL_ONLY_FIELDS` for TextBox."""
        return REAL_ONLY_FIELDS if self.name == "textbox" else TEXTBOX_ONLY_FIELDS

    @field_validator("name")
    @classmethod
    def _registered_name(cls, name: str) -> str:
        from mg_tune.data import data_set_names

        if name not in data_set_names():
            raise ValueError(expected_one_of(data_set_names()))
        return name

    @model_validator(mode="before")
    @classmethod
    def _default_variant(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("variant") is None:
            values = {**values, "variant": default_variant(values.get("name", "textbox"))}
        return values

    @model_validator(mode="after")
    def _real_data(self) -> "DataConfig":
        if self.name == "textbox":
            return self
        from mg_tune.data import REAL_LOADERS

        loader = REAL_LOADERS[self.name]
        if not self.root:
            raise ValueError(f"root is required for name={self.name!r}: the directory holding the data set (see README 'Using your data')")
        if self.variant not in loader.variants:
            raise ValueError(f"variant={self.variant!r} is not a {self.name} variant; valid: {', '.join(loader.variants)}")
        try:
            loader.options.model_validate(self.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            message = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            valid = ", ".join(loader.options.model_fields)
            raise ValueError(f"options.{where}: {message} (got {err.get('input')!r}; {self.name} options: {valid})") from None
        return self


def default_variant(name: Any) -> str:
    """``DataConfig.variant`` when none is given: ``spurious`` for TextBox, a real data set's first variant (its loader's)."""
    from mg_tune.data import REAL_LOADERS

    loader = REAL_LOADERS.get(name) if isinstance(name, str) else None
    return loader.default_variant if loader is not None else "spurious"

TEXTBOX_ONLY_FIELDS: tuple[str, ...] = ("train_size", "val_size", "heldout_size", "test_size")
"""``DataConfig`` fields only the generated TextBox data reads (real splits have the size of the data)."""

REAL_ONLY_FIELDS: tuple[str, ...] = ("root", "image_size", "augment", "on_bad_sample", "max_samples")
"""``DataConfig`` fields only the real data sets read (TextBox images are generated, always 64 px)."""


class TrainConfig(_Strict):
    """One guided-training configuration: L = L_class + λ·L_loc (main paper eq. overall).

    ``lam_reduction`` says what λ multiplies. ``sum`` (default): L_loc is the *sum*
    of the per-image losses over the batch's annotated images, as in the authors'
    train.py (``localization_loss += loss_loc(...)`` per image), so a λ from the
    papers (:data:`mg_tune.search.lambda_grid.PAPER_LAMBDA_GRID`) means the papers'
    guidance strength at the same batch size and annotated share. ``mean``: their
    mean, which keeps λ independent of the batch size (λ_mean = λ_sum × number
    of annotated images per batch gives the same step).

    CRAYON-Pruning (crayon.md Sec. III-C, :mod:`mg_tune.guidance.pruning`):
    ``prune_fraction`` > 0 prunes that share of the penultimate neurons of the
    ``init_checkpoint`` model, those most active outside the annotated boxes,
    before the first epoch. The first ``prune_finetune_epochs`` epochs then
    fine-tune only the last layer with L_class (eq. 3); the remaining
    ``epochs - prune_finetune_epochs`` epochs train the whole (still pruned)
    model with the configured guidance, e.g. ``loss: crayon_attention`` for
    CRAYON-Pruning+Attention.

    ``iou_threshold``: None (default, the paper's protocol) chooses the IoU
    threshold after every epoch on the held-out split
    (:func:`mg_tune.split_eval.choose_iou_threshold`); a value in (0, 1) is used
    as is for every epoch and every trial, so the reported IoU of all
    checkpoints is measured alike (held-out splits too small to choose one
    reliably; ``mg-tune evaluate`` uses it too). A spec sets it in ``fixed``; it is not searchable.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: str = "smerf_cnn"
    weights: str | None = None
    init_checkpoint: str | None = None
    attribution: str = "ixg"
    layer: str = "input"
    loss: str = "energy"
    lam: float = Field(0.0, ge=0.0, description="λ_loc, weight of the localization loss")
    lam_reduction: Literal["sum", "mean"] = Field("sum", description="L_loc over the batch's annotated images: sum (the papers' λ units) or mean")
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
    prune_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="CRAYON-Pruning: share of penultimate neurons pruned")
    prune_finetune_epochs: int = Field(0, ge=0, description="epochs that fine-tune only the last layer (L_class)")
    iou_threshold: float | None = Field(None, description="fixed IoU threshold; None: chosen per epoch on the held-out split")

    @field_validator("iou_threshold")
    @classmethod
    def _threshold_in_unit_interval(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 < value < 1.0:
            raise ValueError("must lie strictly between 0 and 1 (a share of the map's maximum); leave it out to choose it per epoch on the held-out split")
        return value

    def package_json(self) -> dict[str, Any]:
        """The config as an exported model describes itself (``config.json`` of an export and of an MLflow Model).

        ``model_dump(mode="json")`` without the data fields that do not apply to the
        data set (:meth:`DataConfig.unused_fields`): a VOC model carries no TextBox
        split sizes, a TextBox model no ``root``. :meth:`model_validate` reads it back
        (those fields take their defaults, which nothing reads).
        """
        return self.model_dump(mode="json", exclude={"data": set(self.data.unused_fields())})

    @model_validator(mode="after")
    def _known_names(self) -> "TrainConfig":
        for field, value, valid in (
            ("model", self.model, model_names()),
            ("attribution", self.attribution, tuple(ATTRIBUTIONS)),
            ("layer", self.layer, LAYERS),
            ("loss", self.loss, tuple(LOSSES)),
        ):
            if value not in valid:
                raise ValueError(f"{field}={value!r} is not one of {', '.join(valid)}")
        if self.loss == "crayon_attention" and self.lam > 0 and self.init_checkpoint is None:
            raise ValueError("loss='crayon_attention' refines an original model: set init_checkpoint")
        if self.prune_fraction > 0:
            if self.init_checkpoint is None:
                raise ValueError("prune_fraction > 0 (CRAYON-Pruning) prunes a trained model: set init_checkpoint")
            if not model_entry(self.model).prunable:
                raise ValueError(f"prune_fraction > 0 needs a model whose head ends in a linear layer: {', '.join(prunable_models())} (got model={self.model!r})")
        if self.prune_finetune_epochs > 0 and not model_entry(self.model).prunable:
            raise ValueError(f"prune_finetune_epochs > 0 fine-tunes a last linear layer: model must be one of {', '.join(prunable_models())} (got model={self.model!r})")
        if self.prune_finetune_epochs > self.epochs:
            raise ValueError(f"prune_finetune_epochs={self.prune_finetune_epochs} exceeds epochs={self.epochs}")
        return self

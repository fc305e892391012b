"""Model guidance: attributions, localization losses and localization/classification metrics."""

from mg_tune.guidance.attribution import METHODS, Attribution, attribute

from mg_tune.guidance.losses import (
    LOSSES,
    crayon_attention,
    energy,
    energy_star,
    get_loss,
    l1,
    ppce,
    rrr,
)
from mg_tune.guidance.metrics import (
    accuracy,
    attribution_focus,
    epg,
    f1_score,
    group_accuracies,
    iou,
    mean_average_precision,
    normalize_abs,
    normalize_positive,
    seg_epg,
    select_iou_threshold,
    x_seg_epg,
)
from mg_tune.guidance.pruning import rank_and_prune

__all__ = [
    "METHODS",
    "Attribution",
    "attribute",
    "LOSSES",
    "accuracy",
    "attribution_focus",
    "crayon_attention",
    "energy",
    "energy_star",
    "epg",
    "f1_score",
    "get_loss",
    "group_accuracies",
    "iou",
    "l1",
    "mean_average_precision",
    "normalize_abs",
    "normalize_positive",
    "ppce",
    "rank_and_prune",
    "rrr",
    "seg_epg",
    "select_iou_threshold",
    "x_seg_epg",
]

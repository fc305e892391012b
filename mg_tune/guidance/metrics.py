"""Localization and classification metrics for model guidance (pure torch, no I/O).

Contract: attribution maps ``A`` and masks ``M`` are ``[N, H, W]`` float tensors,
one map per (image, chosen class); masks are 0/1. Every localization metric
returns one value per map (``Tensor[N]``) and is finite for empty masks, full
masks and all-zero maps. Classification metrics return Python floats and give
0.0 (never NaN) on empty input.

Papers (``/work/shared/papers``):
  * main paper: Rao et al., "Studying How to Efficiently and Effectively Guide
    Models with Explanations", ICCV 2023 (``model_guidance_iccv2023.md``).
  * reproducibility study of the main paper (``model_guidance_reproducibility.md``).
  * SMERF (``smerf.md``), CRAYON (``crayon.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "accuracy", "attribution_focus", "epg", "f1_score", "group_accuracies", "iou", "mean_average_precision",
    "normalize_abs", "normalize_positive", "seg_epg", "select_iou_threshold", "x_seg_epg",
]

DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Grid 0.05, 0.10, ..., 0.95 searched by :func:`select_iou_threshold`."""


def _prepare(A: Tensor, *masks: Tensor) -> tuple[Tensor, ...]:
    """Check the ``[N, H, W]`` contract and promote to at least float32.

    Promotion keeps tiny maxima and sums representable (float16 underflows below
    6e-8) and makes half-precision attributions safe; autograd flows through the cast.
    """
    if A.dim() != 3:
        raise ValueError(f"attribution maps must be [N, H, W], got shape {tuple(A.shape)}")
    for m in masks:
        if m.shape != A.shape:
            raise ValueError(f"mask shape {tuple(m.shape)} != attribution shape {tuple(A.shape)}")
    dtype = torch.promote_types(A.dtype, torch.float32)
    return (A.to(dtype), *(m.to(dtype) for m in masks))


def _sum_hw(x: Tensor) -> Tensor:
    """Per-map sum over the two spatial dimensions: ``[N, H, W] -> [N]``."""
    return x.sum(dim=(-2, -1))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 — with finite values and gradients.

    The denominators here (max A⁺, Σ A⁺, Σ M, |B ∪ M|) are ≥ 0 and a zero one comes
    with a zero numerator. Dividing by the *true* denominator however small keeps
    the normalised maps scale-invariant (a map scaled by 1e-15 normalises like the
    original; flooring at 1e-12 would not, issue 17 item 4).

    Both are first multiplied by the same power of two, 2^-⌊log₂ den⌋ (exact in
    floating point, no gradient), so the denominator autograd squares lies in
    [1, 2): unscaled, ``den²`` underflows to 0 for den < ~1e-23 in float32 and
    the gradient through the denominator becomes inf. A denominator below the
    dtype's smallest normal number (float32: 1.2e-38) counts as 0: the
    gradient 1/den would not fit the dtype.
    """
    positive = den >= torch.finfo(den.dtype).tiny
    safe = torch.where(positive, den, torch.ones_like(den))
    scale = torch.exp2(-torch.floor(torch.log2(safe.detach())))
    return torch.where(positive, (num * scale) / (safe * scale), torch.zeros_like(num))


def _max_hw(x: Tensor) -> Tensor:
    """Per-map maximum, kept broadcastable: ``[N, H, W] -> [N, 1, 1]``."""
    return x.amax(dim=(-2, -1), keepdim=True)


def normalize_positive(A: Tensor) -> Tensor:
    """Â⁺ = A⁺ / max(A⁺) per map, A⁺ = max(A, 0) (main paper Sec. 3.4, eqs. lone/ppce).

    Values lie in [0, 1]; a map without positive attribution gives all zeros. The
    division is by the true maximum whenever it is > 0, however small.
    """
    A_pos = torch.relu(A)
    return _safe_div(A_pos, _max_hw(A_pos))


def normalize_abs(A: Tensor) -> Tensor:
    """Â = A / max|A| per map (main paper Sec. 3.4, eq. rrr); all-zero map -> zeros."""
    return _safe_div(A, _max_hw(A.abs()))


def resize_maps(A: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[N, h, w]`` maps to ``size`` (``align_corners=False``).

    The authors' ``LayerAttribution.interpolate`` (captum) with
    ``interpolate_mode="bilinear"``, i.e. ``F.interpolate(..., mode="bilinear")``.
    Maps already of that size are returned unchanged.
    """
    if tuple(A.shape[-2:]) == tuple(size):
        return A
    return F.interpolate(A.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


# --------------------------------------------------------------------------- localization


def epg(A: Tensor, M: Tensor) -> Tensor:
    """Energy Pointing Game, main paper eq. (epg), Sec. 3.3.

    EPG = Σ_hw M·A⁺ / Σ_hw A⁺  in [0, 1]; 0 for a map with no positive attribution.
    """
    A, M = _prepare(A, M)
    A_pos = torch.relu(A)
    return _safe_div(_sum_hw(M * A_pos), _sum_hw(A_pos))


def iou(A: Tensor, M: Tensor, threshold: float) -> Tensor:
    """Intersection over union of the binarised map with the mask (main paper Sec. 3.3).

    The map is binarised as B = [Â⁺ ≥ threshold] with Â⁺ = A⁺ / max(A⁺); the mask
    is binarised at 0.5 (masks are 0/1 by contract). IoU = |B ∩ M| / |B ∪ M|.
    A map with no positive attribution scores 0 (for every threshold), and so does
    an empty union (empty mask and empty binarised map).

    Convention vs the authors' code (``metrics.BoundingBoxIoUMultiple``): they
    binarise [(A⁺ − min A⁺) / (max A⁺ − min A⁺) > t]. mg-tune keeps ``≥`` and
    max-normalisation (the DESIGN contract). The two agree whenever some pixel
    has A ≤ 0 (then min A⁺ = 0) and no pixel's Â⁺ equals t exactly, i.e. on
    almost every real attribution map. They differ (a) on maps positive
    everywhere, where min–max maps the weakest pixel to 0 (off for every t), and
    (b) on exact ties Â⁺ = t, which ``≥`` counts as on. ``tests/guidance/test_metrics.py``
    checks the agreement and both differences against the authors' formula.
    """
    A, M = _prepare(A, M)
    on = normalize_positive(A) >= threshold
    gt = M >= 0.5
    inter = _sum_hw((on & gt).to(A.dtype))
    union = _sum_hw((on | gt).to(A.dtype))
    has_positive = _sum_hw(torch.relu(A)) > 0
    return torch.where(has_positive, _safe_div(inter, union), torch.zeros_like(inter))


def select_iou_threshold(A: Tensor, M: Tensor, thresholds: Sequence[float] | None = None) -> float | None:
    """Threshold maximising mean :func:`iou` on a held-out set of maps (main paper Sec. 3.3).

    ``thresholds`` defaults to 0.05, 0.10, ..., 0.95; ties go to the smallest
    threshold. With no maps (N = 0, a held-out set without boxes) there is
    nothing to choose on: None, never a threshold that only looks chosen.
    """
    grid = sorted(DEFAULT_IOU_THRESHOLDS if thresholds is None else thresholds)
    if not grid:
        raise ValueError("thresholds must not be empty")
    if A.numel() == 0:
        return None
    best_t, best_score = grid[0], -1.0
    for t in grid:
        score = iou(A, M, t).mean().item()
        if score > best_score:
            best_t, best_score = t, score
    return float(best_t)


def seg_epg(A: Tensor, seg: Tensor, box: Tensor) -> Tensor:
    """SegEPG, main paper Sec. 5.2: positive energy on the segmentation mask vs the whole box.

    SegEPG = Σ seg·box·A⁺ / Σ box·A⁺  in [0, 1]; 0 if the box holds no positive
    attribution. Attribution outside the box is ignored. ``seg`` is meant to lie
    inside ``box``; the numerator uses seg ∩ box so the score stays ≤ 1 if it does not.
    """
    A, seg, box = _prepare(A, seg, box)
    A_box = box * torch.relu(A)
    return _safe_div(_sum_hw(seg * A_box), _sum_hw(A_box))


def x_seg_epg(A: Tensor, seg: Tensor) -> Tensor:
    """X-SegEPG, reproducibility study Sec. 3.5.1: EPG with the segmentation mask.

    X-SegEPG = Σ seg·A⁺ / Σ A⁺ — all positive attribution off the object counts as
    incorrect, inside or outside the bounding box. 0 with no positive attribution.
    """
    return epg(A, seg)


def attribution_focus(A: Tensor, M: Tensor) -> Tensor:
    """SMERF attribution focus level (AFL), smerf.md Appendix A.4.

    AFL = Σ M·|A| / Σ |A|  in [0, 1]; 0 for an all-zero map. PAFL uses the primary
    (focus) object's mask, SAFL the secondary (avoid) object's mask.
    """
    A, M = _prepare(A, M)
    A_abs = A.abs()
    return _safe_div(_sum_hw(M * A_abs), _sum_hw(A_abs))


# --------------------------------------------------------------------------- classification


def f1_score(probs: Tensor, targets: Tensor, threshold: float = 0.5) -> float:
    """Micro-averaged multi-label F1 (main paper Sec. 3.3, classification metrics).

    ``probs`` and ``targets`` are ``[N, C]``; a pair (image, class) is predicted
    positive when ``probs ≥ threshold``. Counting TP, FP, FN over all pairs,
    F1 = 2TP / (2TP + FP + FN); 0.0 when there are no positives and no predictions.
    """
    pred = probs >= threshold
    true = targets >= 0.5
    tp = (pred & true).sum().item()
    fp = (pred & ~true).sum().item()
    fn = (~pred & true).sum().item()
    den = 2 * tp + fp + fn
    return 2 * tp / den if den else 0.0


def _average_precision(scores: Tensor, positive: Tensor) -> float:
    """AP of one class: mean over positives of precision at the positive's rank.

    Ranking is by decreasing score; tied scores put negatives first (conservative,
    a tie never helps). Requires at least one positive.
    """
    by_label = torch.argsort(positive.to(torch.int8), stable=True)  # negatives first
    by_score = torch.argsort(scores[by_label], descending=True, stable=True)
    ranked = positive[by_label][by_score].to(torch.float64)
    hits = torch.cumsum(ranked, dim=0)
    ranks = torch.arange(1, ranked.numel() + 1, dtype=torch.float64, device=ranked.device)
    return ((hits / ranks) * ranked).sum().item() / ranked.sum().item()


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Macro mean average precision over classes (main paper Sec. 3.3).

    ``scores`` and ``targets`` are ``[N, C]``. For each class with ≥ 1 positive,
    AP = (1/P) Σ_{positives i} precision@rank(i), ranking by decreasing score with
    ties broken conservatively (negatives ranked before positives of equal score).
    mAP is the mean AP over those classes; 0.0 if no class has a positive.
    """
    positive = targets >= 0.5
    aps = [
        _average_precision(scores[:, c], positive[:, c])
        for c in range(positive.shape[1])
        if positive[:, c].any()
    ]
    return sum(aps) / len(aps) if aps else 0.0


def accuracy(pred: Tensor, target: Tensor) -> float:
    """Fraction of predicted labels equal to the targets (``[N]`` each); 0.0 if N = 0."""
    if target.numel() == 0:
        return 0.0
    return (pred == target).to(torch.float64).mean().item()


def group_accuracies(pred: Tensor, target: Tensor, group: Tensor) -> dict[str, float]:
    """Overall, worst-group and mean-group accuracy (CRAYON Sec. IV; main paper Sec. 5.5).

    ``pred``, ``target``, ``group`` are ``[N]`` (labels and integer group ids).
    Accuracy is computed per group present in ``group``; WGA is their minimum and
    MGA their unweighted mean. Keys: ``overall_acc``, ``worst_group_acc``,
    ``mean_group_acc`` and ``group_acc/<g>`` per group present. Empty input -> 0.0s.
    """
    result = {"overall_acc": accuracy(pred, target), "worst_group_acc": 0.0, "mean_group_acc": 0.0}
    per_group = {
        int(g): accuracy(pred[group == g], target[group == g]) for g in torch.unique(group).tolist()
    }
    if per_group:
        result["worst_group_acc"] = min(per_group.values())
        result["mean_group_acc"] = sum(per_group.values()) / len(per_group)
    result.update({f"group_acc/{g}": acc for g, acc in per_group.items()})
    return result

"""Annotation helpers: box masks, box dilation, annotated subsets, simulated yes/no annotator.

Conventions used throughout mg-tune:

* A box is ``(x0, y0, x1, y1)`` in integer pixel coordinates with ``x`` the column and
  ``y`` the row; ``x0``/``y0`` are inclusive and ``x1``/``y1`` exclusive, so the box
  covers ``mask[y0:y1, x0:x1]`` and has area ``(x1 - x0) * (y1 - y0)``.
* A valid box satisfies ``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

Box = tuple[int, int, int, int]


def check_box(box: Sequence[int], height: int, width: int, name: str = "box") -> Box:
    """Return ``box`` as an int 4-tuple, or raise ValueError if it is not a valid box.

    Valid means ``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height`` (see module doc).
    """
    if len(box) != 4:
        raise ValueError(f"{name} must have 4 entries (x0, y0, x1, y1), got {tuple(box)!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"{name}={tuple(box)!r} must satisfy 0 <= x0 < x1 <= width={width} "
            f"and 0 <= y0 < y1 <= height={height}"
        )
    return x0, y0, x1, y1


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got height={height}, width={width}")


def box_mask(boxes: Sequence[Sequence[int]], height: int, width: int) -> torch.Tensor:
    """Binary union of pixel boxes: ``M[y, x] = 1`` iff some box has ``x0<=x<x1, y0<=y<y1``.

    Returns a FloatTensor ``[height, width]`` of 0/1; an empty ``boxes`` gives all zeros.
    """
    _check_size(height, width)
    mask = torch.zeros(height, width)
    for j, box in enumerate(boxes):
        x0, y0, x1, y1 = check_box(box, height, width, name=f"boxes[{j}]")
        mask[y0:y1, x0:x1] = 1.0
    return mask


def class_box_masks(
    boxes: Sequence[Sequence[int]],
    labels: Sequence[int],
    num_classes: int,
    height: int,
    width: int,
) -> torch.Tensor:
    """Per-class box masks ``[K, H, W]``: ``M_k`` is the union of the boxes whose label is ``k``.

    Model guidance paper, Sec. 3: "M_k ... is given by the union of bounding boxes of all
    occurrences of class k in X". Classes without a box get an all-zero mask.
    """
    if len(boxes) != len(labels):
        raise ValueError(f"boxes and labels must have equal length, got {len(boxes)} and {len(labels)}")
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got num_classes={num_classes}")
    for j, k in enumerate(labels):
        if not 0 <= int(k) < num_classes:
            raise ValueError(f"labels[{j}]={k} must lie in [0, num_classes={num_classes})")
    return torch.stack(
        [
            box_mask([b for b, k in zip(boxes, labels) if int(k) == c], height, width)
            for c in range(num_classes)
        ]
    )


def dilate_box(box: Sequence[int], percent: float, height: int, width: int) -> Box:
    """Move each side of a box outward by ``percent`` % of the box's size, clipped to the image.

    Model guidance paper, Sec. 5 ("coarse annotations": boxes dilated by 10 / 25 / 50 %),
    as the authors' ``utils.enlarge_bb`` does it: with p = ``percent`` / 100, the margins
    are ``m_x = floor(p · (x1 − x0))`` and ``m_y = floor(p · (y1 − y0))`` (their
    ``int(percentage * width)``), and *every* side moves by its margin:
    ``(max(0, x0 − m_x), max(0, y0 − m_y), min(width, x1 + m_x), min(height, y1 + m_y))``.
    So at p = 50 % a box's width doubles (it grows by 2·m_x). Arithmetic is exact
    (``percent`` is read as its decimal literal: a 10-px side at 25 % moves by 2 px).

    Deliberate difference: the authors clip ``x1``/``y1`` to 223 on their 224-px images,
    which with exclusive ends never covers the last row and column; here the clip is to
    the image size (``width``, ``height``).
    """
    x0, y0, x1, y1 = check_box(box, height, width)
    if not math.isfinite(percent) or percent < 0:
        raise ValueError(f"percent must be a finite number >= 0, got percent={percent}")
    p = Fraction(str(percent)) / 100
    mx = math.floor(Fraction(x1 - x0) * p)
    my = math.floor(Fraction(y1 - y0) * p)
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def annotated_subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Deterministic BoolTensor ``[n]`` marking the images that keep their annotation masks.

    Exactly ``k = floor(fraction * n + 1/2)`` images (halves round up) are chosen, with
    ``k >= 1`` whenever ``fraction > 0`` and ``n > 0`` (model guidance paper, Sec. 5:
    guidance with 1 / 10 / 100 % of the annotations). The chosen images are the first
    ``k`` of a permutation drawn from ``numpy.random.default_rng(seed)``, so for a fixed
    ``(n, seed)`` the subsets are nested: a smaller fraction selects a subset of a larger one.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got n={n}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got fraction={fraction}")
    k = math.floor(fraction * n + 0.5)
    if fraction > 0 and n > 0:
        k = max(k, 1)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[torch.from_numpy(np.random.default_rng(seed).permutation(n)[:k])] = True
    return chosen


def crayon_relevance(saliency: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Simulated CRAYON yes/no annotator (CRAYON, Sec. III-B): is each saliency map "relevant"?

    A human answers "yes" when a map mainly highlights the relevant region. We simulate
    this with the share of positive attribution inside the mask,
    ``s_n = sum(M * A_n^+) / sum(A_n^+)`` (``s_n = 0`` when ``A_n^+`` is all zero), and
    answer yes iff ``s_n >= threshold``. ``saliency`` is ``[N, H, W]``; ``mask`` is
    ``[N, H, W]`` or a single ``[H, W]`` mask shared by all maps. Returns BoolTensor ``[N]``.
    """
    if saliency.dim() != 3:
        raise ValueError(f"saliency must have shape [N, H, W], got shape={tuple(saliency.shape)}")
    if mask.shape not in (saliency.shape, saliency.shape[1:]):
        raise ValueError(
            f"mask shape={tuple(mask.shape)} must equal saliency shape {tuple(saliency.shape)} "
            f"or its [H, W] part {tuple(saliency.shape[1:])}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got threshold={threshold}")
    if not saliency.is_floating_point():
        saliency = saliency.to(torch.get_default_dtype())
    positive = saliency.clamp(min=0).flatten(1)
    inside = (positive * mask.to(positive.dtype).expand_as(saliency).flatten(1)).sum(1)
    total = positive.sum(1)
    share = torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)
    return share >= threshold

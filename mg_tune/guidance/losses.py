"""Localization losses for model guidance (pure torch, no I/O).

Every loss has the signature ``(A, M, **params) -> Tensor[N]``: ``A`` and ``M``
are ``[N, H, W]`` (attribution maps and 0/1 masks, one per (image, chosen class))
and the result is one loss per map; the trainer averages over the batch. All
losses are differentiable w.r.t. ``A`` and finite (values and gradients) for
empty masks, full masks and all-zero maps.

Notation of the main paper (Rao et al., ICCV 2023, Sec. 3.4): A⁺ = max(A, 0),
Â = A / max|A|, Â⁺ = A⁺ / max(A⁺), each per map; denominators are floored at
:data:`~mg_tune.guidance.metrics.EPS` so all-zero maps give 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mg_tune.guidance.metrics import (
    EPS,
    _prepare,
    _safe_div,
    _sum_hw,
    epg,
    normalize_abs,
    normalize_positive,
)

LossFn = Callable[..., Tensor]

PPCE_LOG_FLOOR = 1e-6
"""PPCE evaluates log(max(Â⁺, floor)): in-mask pixels with Â⁺ = 0 cost -log(1e-6) ≈ 13.8
instead of +inf (the reproducibility study, Sec. 3.4, reports NaN losses with the
authors' PPCE code). Pixels below the floor get no gradient from the log."""


def energy(A: Tensor, M: Tensor) -> Tensor:
    """Energy loss, main paper eq. (energyloss): L = −EPG = −Σ M·A⁺ / Σ A⁺.

    In [−1, 0]; 0 for a map with no positive attribution.
    """
    return -epg(A, M)


def l1(A: Tensor, M: Tensor) -> Tensor:
    """L1 loss, main paper eq. (lone): L = (1 / HW) Σ_hw |M − Â⁺|."""
    A, M = _prepare(A, M)
    return (M - normalize_positive(A)).abs().mean(dim=(-2, -1))


def ppce(A: Tensor, M: Tensor, log_floor: float = PPCE_LOG_FLOOR) -> Tensor:
    """Per-pixel cross entropy, main paper eq. (ppce): L = −(1/‖M‖₁) Σ_hw M·log(Â⁺).

    The log is clamped, log(max(Â⁺, ``log_floor``)), see :data:`PPCE_LOG_FLOOR`.
    In [0, −log(log_floor)]; 0 for an empty mask.
    """
    A, M = _prepare(A, M)
    log_a = torch.log(normalize_positive(A).clamp_min(log_floor))
    return _safe_div(-_sum_hw(M * log_a), _sum_hw(M))


def rrr(A: Tensor, M: Tensor) -> Tensor:
    """RRR* loss, main paper eq. (rrr): L = Σ_hw (1 − M)·Â², Â = A / max|A|.

    Only attribution outside the mask is penalised; 0 for a full mask.
    """
    A, M = _prepare(A, M)
    return _sum_hw((1 - M) * normalize_abs(A) ** 2)


def energy_star(A: Tensor, M: Tensor, alpha: float = 0.5) -> Tensor:
    """Energy* loss, reproducibility study Sec. 4.2: L = 1 − EPG / area^α.

    ``area`` = Σ M / (H·W) is the mask's *relative* area (share of the image, in
    [0, 1]) rather than a pixel count, so the loss does not depend on image size;
    with α = 0.5 a mask covering a quarter of the image doubles EPG's weight.
    The loss can be negative (down to 1 − 1/area^α). An empty mask gives 1
    (EPG is 0 there).
    """
    A, M = _prepare(A, M)
    area = M.mean(dim=(-2, -1))
    return 1 - _safe_div(epg(A, M), area**alpha)


def crayon_attention(A: Tensor, M: Tensor, relevant: Tensor, alpha: float, beta: float) -> Tensor:
    """CRAYON-Attention loss, crayon.md eqs. (1), (2), (4).

    ``A`` is the saliency map of the model being fine-tuned, ``M`` the ORIGINAL
    model's saliency map (not necessarily 0/1), ``relevant`` a BoolTensor[N] of
    yes/no annotations. With A' = A⁺ / max(A⁺) and M' = M / max(M) per map:

      * relevant map   (eq. 1): L = α · Σ_hw A'·(1 − M')
      * irrelevant map (eq. 2): L = β · Σ_hw A'·M'

    Eq. (4) normalises the two sums by 1/|R| and 1/|I|; here the per-map losses
    are instead averaged over the batch by the trainer.
    """
    A, M = _prepare(A, M)
    if relevant.shape != A.shape[:1]:
        raise ValueError(f"relevant must be [N] = {tuple(A.shape[:1])}, got {tuple(relevant.shape)}")
    A_n = normalize_positive(A)
    M_n = M / M.amax(dim=(-2, -1), keepdim=True).clamp_min(EPS)
    rel = alpha * _sum_hw(A_n * (1 - M_n))
    irrel = beta * _sum_hw(A_n * M_n)
    return torch.where(relevant.to(torch.bool).to(A.device), rel, irrel)


LOSSES: dict[str, LossFn] = {
    "energy": energy,
    "l1": l1,
    "ppce": ppce,
    "rrr": rrr,
    "energy_star": energy_star,
    "crayon_attention": crayon_attention,
}


def get_loss(name: str) -> LossFn:
    """Look up a loss in :data:`LOSSES`; unknown names raise ValueError listing valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}") from None

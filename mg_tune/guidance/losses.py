"""Localization losses for model guidance (pure torch, no I/O).

Every loss has the signature ``(A, M, **params) -> Tensor[N]``: ``A`` and ``M``
are ``[N, H, W]`` (attribution maps and 0/1 masks, one per (image, chosen class))
and the result is one loss per map; the trainer reduces them over the batch
(``TrainConfig.lam_reduction``: a sum over the images, as the authors' train.py,
or a mean). All losses are differentiable w.r.t. ``A`` and finite (values and
gradients) for empty masks, full masks and all-zero maps.

Notation of the main paper (Rao et al., ICCV 2023, Sec. 3.4): A⁺ = max(A, 0),
Â = A / max|A|, Â⁺ = A⁺ / max(A⁺), each per map; a map whose maximum is 0
normalises to all zeros, any positive maximum is divided by exactly.

Maps below the input layer are coarser than the masks. :func:`layer_loss`
computes a loss the way the authors' code does (``attribution_methods.py``,
``apply_post_processing``): normalise at the layer's resolution (ReLU and /max
for L1 and PPCE, /max|A| for RRR), *then* resize bilinearly to the mask, and
apply the loss to the resized normalised map without normalising it again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mg_tune.guidance.metrics import (
    _max_hw,
    _prepare,
    _safe_div,
    _sum_hw,
    epg,
    normalize_abs,
    normalize_positive,
    resize_maps,
)

__all__ = ["LOSSES", "crayon_attention", "energy", "energy_star", "get_loss", "l1", "ppce", "rrr"]

LossFn = Callable[..., Tensor]

PPCE_LOG_FLOOR = 1e-6
"""PPCE evaluates log(max(Â⁺, floor)): in-mask pixels with Â⁺ = 0 cost −log(1e-6) ≈ 13.8
instead of +inf. The authors' PPCE (``torch.nn.BCELoss``) is finite too: BCELoss clamps
the log at −100, so such a pixel costs 100 there; their loss is NaN only for an empty
mask (a mean over no pixels), which is what the reproducibility study (Sec. 3.4) ran
into. mg-tune's PPCE is 0 for an empty mask. The floors differ on purpose: 1e-6 bounds
a pixel's cost at 13.8 so a few dead in-box pixels cannot dominate λ·L_loc; values of
Â⁺ ≥ 1e-6 (and their gradients) are the authors' exactly. Pixels below the floor get
no gradient from the log here; in BCELoss a pixel in (0, 1e-6) still gets −1/Â⁺."""


def energy(A: Tensor, M: Tensor) -> Tensor:
    """Energy loss, main paper eq. (energyloss): L = −EPG = −Σ M·A⁺ / Σ A⁺.

    In [−1, 0]; 0 for a map with no positive attribution.
    """
    return -epg(A, M)


def l1(A: Tensor, M: Tensor) -> Tensor:
    """L1 loss, main paper eq. (lone): L = (1 / HW) Σ_hw |M − Â⁺|."""
    A, M = _prepare(A, M)
    return _l1(normalize_positive(A), M)


def _l1(A_hat: Tensor, M: Tensor) -> Tensor:
    return (M - A_hat).abs().mean(dim=(-2, -1))


def ppce(A: Tensor, M: Tensor, log_floor: float = PPCE_LOG_FLOOR) -> Tensor:
    """Per-pixel cross entropy, main paper eq. (ppce): L = −(1/‖M‖₁) Σ_hw M·log(Â⁺).

    The log is clamped, log(max(Â⁺, ``log_floor``)), see :data:`PPCE_LOG_FLOOR`.
    In [0, −log(log_floor)]; 0 for an empty mask.
    """
    A, M = _prepare(A, M)
    return _ppce(normalize_positive(A), M, log_floor)


def _ppce(A_hat: Tensor, M: Tensor, log_floor: float = PPCE_LOG_FLOOR) -> Tensor:
    return _safe_div(-_sum_hw(M * torch.log(A_hat.clamp_min(log_floor))), _sum_hw(M))


def rrr(A: Tensor, M: Tensor) -> Tensor:
    """RRR* loss, main paper eq. (rrr): L = Σ_hw (1 − M)·Â², Â = A / max|A|.

    Only attribution outside the mask is penalised; 0 for a full mask.
    """
    A, M = _prepare(A, M)
    return _rrr(normalize_abs(A), M)


def _rrr(A_hat: Tensor, M: Tensor) -> Tensor:
    return _sum_hw((1 - M) * A_hat**2)


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

    Eq. (4) normalises the two sums by 1/|R| and 1/|I|: with
    ``lam_reduction: mean`` the trainer averages the per-map losses over the
    batch's annotated images instead (the CRAYON specs set it).
    """
    A, M = _prepare(A, M)
    if relevant.shape != A.shape[:1]:
        raise ValueError(f"relevant must be [N] = {tuple(A.shape[:1])}, got {tuple(relevant.shape)}")
    A_n = normalize_positive(A)
    M_n = _safe_div(M, _max_hw(M))
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


NORMALIZED_LOSSES: dict[str, tuple[Callable[[Tensor], Tensor], LossFn]] = {
    "l1": (normalize_positive, _l1),
    "ppce": (normalize_positive, _ppce),
    "rrr": (normalize_abs, _rrr),
}
"""Losses of a normalised map: (normalisation, loss of the normalised map). These are the
losses the authors' code post-processes before resizing (their ``only_positive`` /
``binarize`` flags: L1 and PPCE ReLU then /max, RRR /max|A|); Energy gets the raw map."""


def layer_loss(name: str, A: Tensor, M: Tensor, **params: float) -> Tensor:
    """Loss ``name`` of maps ``A`` [N, h, w] at the attribution layer against masks ``M`` [N, H, W].

    As in the authors' code: for L1, PPCE and RRR (:data:`NORMALIZED_LOSSES`) the map
    is normalised at the layer's resolution, Â = norm(A), then resized bilinearly,
    R(Â), and the loss is taken of R(Â) as it is (eqs. lone, ppce, rrr with Â⁺ :=
    R(A⁺ / max A⁺), resp. Â := R(A / max|A|)). Bilinear interpolation is a convex
    combination, so R(Â) stays in [0, 1] (resp. [−1, 1]) but its maximum may be < 1;
    normalising after resizing would change values and gradients. Every other loss
    (Energy, Energy*, which clamp A⁺ themselves) gets the raw map resized, R(A), as the
    authors' Energy does. When h×w = H×W, ``layer_loss(name, A, M) == LOSSES[name](A, M)``.
    """
    if name in NORMALIZED_LOSSES:
        normalize, loss = NORMALIZED_LOSSES[name]
        A = normalize(_prepare(A)[0])
        A, M = _prepare(resize_maps(A, tuple(M.shape[-2:])), M)
        return loss(A, M, **params)
    return get_loss(name)(resize_maps(A, tuple(M.shape[-2:])), M, **params)


def get_loss(name: str) -> LossFn:
    """Look up a loss in :data:`LOSSES`; unknown names raise ValueError listing valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}") from None

"""Localization losses against hand-computed values, edge cases and gradients."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mg_tune.guidance.losses import (
    LOSSES,
    PPCE_LOG_FLOOR,
    crayon_attention,
    energy,
    energy_star,
    get_loss,
    l1,
    ppce,
    rrr,
)
from mg_tune.guidance.metrics import epg


def t(x: list) -> torch.Tensor:
    """[H, W] nested list -> [1, H, W] float tensor."""
    return torch.tensor(x, dtype=torch.float32).unsqueeze(0)


# Running example (one 2x2 map):
#   A  = [[2, -1], [1, 0]]   A⁺ = [[2, 0], [1, 0]]   ΣA⁺ = 3
#   Â⁺ = A⁺/2 = [[1, 0], [0.5, 0]]
#   Â  = A/max|A| = A/2 = [[1, -0.5], [0.5, 0]]
A = t([[2.0, -1.0], [1.0, 0.0]])
M_TL = t([[1.0, 0.0], [0.0, 0.0]])  # top-left pixel only
EMPTY = torch.zeros(1, 2, 2)
FULL = torch.ones(1, 2, 2)
ZERO_MAP = torch.zeros(1, 2, 2)
NEG_MAP = t([[-1.0, -2.0], [-1.0, -2.0]])


# --------------------------------------------------------------------------- hand-computed values


def test_energy_hand():
    # EPG = Σ M·A⁺ / Σ A⁺ = 2 / 3  ->  loss = -2/3
    assert energy(A, M_TL).tolist() == pytest.approx([-2 / 3])


def test_l1_hand():
    # |M - Â⁺| = [[|1-1|, |0-0|], [|0-0.5|, |0-0|]] = [[0, 0], [0.5, 0]]; sum 0.5 / (H·W = 4) = 0.125
    assert l1(A, M_TL).tolist() == pytest.approx([0.125])


def test_ppce_hand():
    # M = left column: Â⁺ in mask = {1, 0.5};  -(log 1 + log 0.5) / ‖M‖₁=2 = log(2)/2
    M = t([[1.0, 0.0], [1.0, 0.0]])
    assert ppce(A, M).tolist() == pytest.approx([math.log(2) / 2])


def test_ppce_log_floor():
    # mask on the bottom-right pixel where Â⁺ = 0: -log(floor)/1 instead of +inf
    M = t([[0.0, 0.0], [0.0, 1.0]])
    assert ppce(A, M).tolist() == pytest.approx([-math.log(PPCE_LOG_FLOOR)])
    assert ppce(A, M, log_floor=1e-3).tolist() == pytest.approx([-math.log(1e-3)])


def test_rrr_hand():
    # (1-M)·Â² = [[0, 0.25], [0.25, 0]]  -> 0.5
    assert rrr(A, M_TL).tolist() == pytest.approx([0.5])


def test_energy_star_hand():
    # EPG = 2/3, relative area = 1/4
    # alpha = 0.5: 1 - (2/3) / (1/4)^0.5 = 1 - 4/3 = -1/3
    assert energy_star(A, M_TL).tolist() == pytest.approx([-1 / 3])
    # alpha = 1:   1 - (2/3) / (1/4)   = 1 - 8/3 = -5/3
    assert energy_star(A, M_TL, alpha=1.0).tolist() == pytest.approx([-5 / 3])
    # full mask: area 1, EPG 1 -> 0
    assert energy_star(A, FULL).tolist() == pytest.approx([0.0])


def test_energy_star_area_is_relative():
    # same content at 2x resolution (each pixel -> 2x2 block): same relative area, same loss
    big_A = A.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    big_M = M_TL.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert energy_star(big_A, big_M).tolist() == pytest.approx(energy_star(A, M_TL).tolist())


def test_crayon_attention_hand():
    # A' = A⁺/max = [[1, 0], [0.5, 0]];  saliency M = [[4, 2], [0, 0]] -> M' = [[1, 0.5], [0, 0]]
    # relevant:   Σ A'(1-M') = 1·0 + 0·0.5 + 0.5·1 + 0·1 = 0.5 -> alpha=2 -> 1.0
    # irrelevant: Σ A'·M'    = 1·1 + 0 + 0 + 0        = 1.0 -> beta=3  -> 3.0
    As = torch.cat([A, A])
    S = torch.cat([t([[4.0, 2.0], [0.0, 0.0]])] * 2)
    relevant = torch.tensor([True, False])
    out = crayon_attention(As, S, relevant, alpha=2.0, beta=3.0)
    assert out.tolist() == pytest.approx([1.0, 3.0])


def test_crayon_attention_zero_saliency():
    # M' = 0: relevant -> alpha·Σ A' = 1·1.5; irrelevant -> 0
    out = crayon_attention(torch.cat([A, A]), torch.zeros(2, 2, 2), torch.tensor([True, False]), 1.0, 1.0)
    assert out.tolist() == pytest.approx([1.5, 0.0])


def test_crayon_attention_bad_relevant_shape():
    with pytest.raises(ValueError, match="relevant"):
        crayon_attention(A, M_TL, torch.tensor([True, False]), 1.0, 1.0)


def test_per_map_batch():
    # losses are per map: a batch of two gives two values, each equal to the single-map value
    As, Ms = torch.cat([A, ZERO_MAP]), torch.cat([M_TL, FULL])
    for name in ("energy", "l1", "ppce", "rrr", "energy_star"):
        out = LOSSES[name](As, Ms)
        assert out.shape == (2,)
        assert out[0].item() == pytest.approx(LOSSES[name](A, M_TL).item())


def test_shape_contract():
    with pytest.raises(ValueError):
        energy(A, torch.ones(1, 3, 3))
    with pytest.raises(ValueError):
        energy(A[0], M_TL[0])


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    ("loss", "A_", "M_", "expected"),
    [
        # energy = -EPG; EPG is 0 without positive attribution or with an empty mask
        (energy, A, EMPTY, 0.0),
        (energy, A, FULL, -1.0),
        (energy, ZERO_MAP, FULL, 0.0),
        (energy, NEG_MAP, FULL, 0.0),
        # l1: Â⁺ = 0 for zero/negative maps -> mean |M| ; empty mask -> mean Â⁺ = 1.5/4
        (l1, A, EMPTY, 0.375),
        (l1, A, FULL, 0.625),  # |1-1|+|1-0|+|1-0.5|+|1-0| = 2.5, /4
        (l1, ZERO_MAP, FULL, 1.0),
        (l1, NEG_MAP, EMPTY, 0.0),
        # ppce: empty mask -> 0; Â⁺ = 0 everywhere -> -log(floor)
        (ppce, A, EMPTY, 0.0),
        (ppce, ZERO_MAP, FULL, -math.log(PPCE_LOG_FLOOR)),
        (ppce, NEG_MAP, FULL, -math.log(PPCE_LOG_FLOOR)),
        (ppce, ZERO_MAP, EMPTY, 0.0),
        # rrr: full mask -> 0; zero map -> 0; negative map, empty mask: Â = A/2 -> .25+1+.25+1
        (rrr, A, FULL, 0.0),
        (rrr, ZERO_MAP, EMPTY, 0.0),
        (rrr, NEG_MAP, EMPTY, 2.5),
        (rrr, A, EMPTY, 1.5),  # 1 + 0.25 + 0.25 + 0
        # energy_star: empty mask -> 1; no positive attribution -> 1
        (energy_star, A, EMPTY, 1.0),
        (energy_star, ZERO_MAP, FULL, 1.0),
        (energy_star, NEG_MAP, M_TL, 1.0),
        (energy_star, ZERO_MAP, EMPTY, 1.0),
    ],
)
def test_edge_case_values(loss, A_, M_, expected):
    assert loss(A_, M_).tolist() == pytest.approx([expected])


def _call(name: str, A_: torch.Tensor, M_: torch.Tensor) -> torch.Tensor:
    if name == "crayon_attention":
        relevant = torch.arange(A_.shape[0]) % 2 == 0
        return crayon_attention(A_, M_, relevant, alpha=1.0, beta=1.0)
    return LOSSES[name](A_, M_)


EDGE_MAPS = {"regular": A, "zero": ZERO_MAP, "negative": NEG_MAP, "tiny": t([[1e-30, 0.0], [0.0, -1e-30]])}
EDGE_MASKS = {"empty": EMPTY, "full": FULL, "partial": M_TL}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("map_name", sorted(EDGE_MAPS))
@pytest.mark.parametrize("mask_name", sorted(EDGE_MASKS))
def test_values_and_gradients_finite(name, map_name, mask_name):
    A_ = EDGE_MAPS[map_name].clone().requires_grad_(True)
    out = _call(name, A_, EDGE_MASKS[mask_name])
    assert out.shape == (1,)
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.sum(), A_)
    assert torch.isfinite(grad).all()


def test_half_precision_finite():
    # EPS underflows in float16; inputs are promoted to float32 internally
    out = energy(ZERO_MAP.half(), FULL.half())
    assert torch.isfinite(out).all() and out.item() == 0.0


# --------------------------------------------------------------------------- gradient direction


def test_energy_descent_step_raises_epg():
    gen = torch.Generator().manual_seed(0)
    A_ = torch.rand(4, 6, 6, generator=gen) + 0.1
    M_ = torch.zeros(4, 6, 6)
    M_[:, 1:4, 2:5] = 1.0
    A_.requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(A_, M_).sum(), A_)
    # dEPG/dA = (M - EPG)/ΣA⁺ for positive pixels: inside the mask the loss decreases with A
    assert (grad[M_.bool()] < 0).all() and (grad[~M_.bool()] > 0).all()
    stepped = (A_ - 0.5 * grad).detach()
    assert (epg(stepped, M_) > epg(A_.detach(), M_)).all()


@pytest.mark.parametrize("name", ["l1", "ppce", "rrr", "energy_star"])
def test_descent_step_lowers_loss(name):
    gen = torch.Generator().manual_seed(1)
    A_ = (torch.rand(3, 5, 5, generator=gen) + 0.1).requires_grad_(True)
    M_ = torch.zeros(3, 5, 5)
    M_[:, :3, :3] = 1.0
    before = LOSSES[name](A_, M_)
    (grad,) = torch.autograd.grad(before.sum(), A_)
    after = LOSSES[name]((A_ - 1e-2 * grad).detach(), M_)
    assert (after < before.detach()).all()


# --------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(LOSSES) == {"energy", "l1", "ppce", "rrr", "energy_star", "crayon_attention"}
    for name, fn in LOSSES.items():
        assert get_loss(name) is fn


def test_get_loss_unknown():
    with pytest.raises(ValueError, match="nope") as err:
        get_loss("nope")
    for name in LOSSES:
        assert name in str(err.value)


# --------------------------------------------------------------------------- properties

maps = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        arrays("float32", shape, elements=st.floats(-1e6, 1e6, width=32)),
        arrays("bool", shape),
    )
)


@settings(deadline=None, max_examples=60)
@given(maps)
def test_losses_finite_random(data):
    a, m = data
    for name in sorted(LOSSES):
        A_ = torch.from_numpy(a).requires_grad_(True)
        out = _call(name, A_, torch.from_numpy(m).float())
        assert torch.isfinite(out).all(), name
        (grad,) = torch.autograd.grad(out.sum(), A_)
        assert torch.isfinite(grad).all(), name


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("scale", [1e-25, 1e-37])
def test_tiny_maps_keep_their_loss_and_finite_gradients(name, scale):
    """A map scaled down to 1e-37 normalises like the original, and its gradient is finite (den² would underflow)."""
    A_ = (A * scale).requires_grad_(True)
    out = _call(name, A_, M_TL)
    assert out.detach() == pytest.approx(_call(name, A, M_TL), rel=1e-4)
    (grad,) = torch.autograd.grad(out.sum(), A_)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_subnormal_map_counts_as_zero(name):
    """Maximum 1e-44 (below float32's smallest normal number): the zero map's loss and a zero gradient, not inf."""
    A_ = (A.sign() * 1e-44).requires_grad_(True)
    out = _call(name, A_, M_TL)
    assert out.detach() == pytest.approx(_call(name, ZERO_MAP, M_TL))
    (grad,) = torch.autograd.grad(out.sum(), A_)
    assert torch.isfinite(grad).all()

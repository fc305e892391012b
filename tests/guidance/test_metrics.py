"""Localization and classification metrics against hand-computed values."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mg_tune.guidance.metrics import (
    DEFAULT_IOU_THRESHOLDS,
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


def t(x: list) -> torch.Tensor:
    """[H, W] nested list -> [1, H, W] float tensor."""
    return torch.tensor(x, dtype=torch.float32).unsqueeze(0)


A = t([[2.0, -1.0], [1.0, 0.0]])  # A⁺ = [[2, 0], [1, 0]], ΣA⁺ = 3
M_TL = t([[1.0, 0.0], [0.0, 0.0]])
EMPTY = torch.zeros(1, 2, 2)
FULL = torch.ones(1, 2, 2)
ZERO_MAP = torch.zeros(1, 2, 2)
NEG_MAP = t([[-1.0, -2.0], [-1.0, -2.0]])


# --------------------------------------------------------------------------- normalisation


def test_normalisations():
    assert normalize_positive(A)[0].tolist() == [[1.0, 0.0], [0.5, 0.0]]
    assert normalize_abs(A)[0].tolist() == [[1.0, -0.5], [0.5, 0.0]]
    assert normalize_positive(ZERO_MAP).abs().sum() == 0
    assert normalize_abs(ZERO_MAP).abs().sum() == 0


# --------------------------------------------------------------------------- EPG


def test_epg_hand():
    # Σ M·A⁺ = 2, Σ A⁺ = 3
    assert epg(A, M_TL).tolist() == pytest.approx([2 / 3])
    # bottom-left pixel: 1/3
    assert epg(A, t([[0.0, 0.0], [1.0, 0.0]])).tolist() == pytest.approx([1 / 3])


@pytest.mark.parametrize(
    ("A_", "M_", "expected"),
    [(A, EMPTY, 0.0), (A, FULL, 1.0), (ZERO_MAP, FULL, 0.0), (NEG_MAP, FULL, 0.0), (ZERO_MAP, EMPTY, 0.0)],
)
def test_epg_edges(A_, M_, expected):
    assert epg(A_, M_).tolist() == [expected]


def test_epg_batch_and_scale_invariance():
    out = epg(torch.cat([A, 5 * A, NEG_MAP]), torch.cat([M_TL, M_TL, FULL]))
    assert out.tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])


# --------------------------------------------------------------------------- IoU

# Â⁺ = [[1, 0.5], [0.25, 0]], mask = top row.
IOU_A = t([[1.0, 0.5], [0.25, 0.0]])
IOU_M = t([[1.0, 1.0], [0.0, 0.0]])


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.5, 1.0),  # on = {1, 0.5} (0.5 ≥ 0.5 counts): ∩ 2, ∪ 2
        (0.51, 0.5),  # on = {1}: ∩ 1, ∪ 2
        (0.25, 2 / 3),  # on = {1, 0.5, 0.25}: ∩ 2, ∪ 3
        (1.0, 0.5),  # the max pixel is always on (1 ≥ 1)
    ],
)
def test_iou_hand_and_threshold_semantics(threshold, expected):
    assert iou(IOU_A, IOU_M, threshold).tolist() == pytest.approx([expected])
    assert iou(7 * IOU_A, IOU_M, threshold).tolist() == pytest.approx([expected])  # scale-free


@pytest.mark.parametrize(
    ("A_", "M_", "threshold"),
    [
        (ZERO_MAP, FULL, 0.5),  # all-zero map
        (ZERO_MAP, FULL, 0.0),  # ... even where 0 ≥ threshold
        (NEG_MAP, FULL, 0.0),  # no positive attribution
        (NEG_MAP, EMPTY, 0.5),  # empty mask and empty binarised map
        (IOU_A, EMPTY, 0.5),  # empty mask, non-empty binarised map: ∩ = 0
    ],
)
def test_iou_edges_are_zero(A_, M_, threshold):
    assert iou(A_, M_, threshold).tolist() == [0.0]


def test_iou_full_mask():
    # threshold 0.25 turns on 3 of 4 pixels: ∩ 3, ∪ 4
    assert iou(IOU_A, FULL, 0.25).tolist() == pytest.approx([0.75])


def test_select_iou_threshold_default_grid():
    # IoU(t) on the example: 2/3 for t ≤ 0.25, 1 for 0.25 < t ≤ 0.5, 0.5 for t > 0.5.
    # The best (1.0) is reached on 0.30..0.50; ties -> smallest = 0.30.
    assert select_iou_threshold(IOU_A, IOU_M) == pytest.approx(0.30)
    assert DEFAULT_IOU_THRESHOLDS[0] == 0.05 and DEFAULT_IOU_THRESHOLDS[-1] == 0.95
    assert len(DEFAULT_IOU_THRESHOLDS) == 19


def test_select_iou_threshold_mean_over_maps():
    # second map: Â⁺ = [[1, 0.8], [0.1, 0]], mask = top-left only.
    #   IoU: t ≤ 0.1 -> 1/3;  0.1 < t ≤ 0.8 -> 1/2;  t > 0.8 -> 1
    # mean with the first map over the custom grid:
    #   0.2: (2/3 + 1/2)/2 = 0.583;  0.4: (1 + 1/2)/2 = 0.75;  0.9: (1/2 + 1)/2 = 0.75
    # tie between 0.4 and 0.9 -> 0.4 (given unsorted on purpose)
    As = torch.cat([IOU_A, t([[1.0, 0.8], [0.1, 0.0]])])
    Ms = torch.cat([IOU_M, t([[1.0, 0.0], [0.0, 0.0]])])
    assert select_iou_threshold(As, Ms, thresholds=[0.9, 0.4, 0.2]) == pytest.approx(0.4)
    assert select_iou_threshold(As, Ms, thresholds=[0.9, 0.2]) == pytest.approx(0.9)


def test_select_iou_threshold_empty_grid():
    with pytest.raises(ValueError):
        select_iou_threshold(IOU_A, IOU_M, thresholds=[])


def test_select_iou_threshold_without_maps_chooses_nothing():
    # a held-out set without boxes: no map to choose on, so no threshold (not the smallest of the grid)
    assert select_iou_threshold(torch.zeros(0, 2, 2), torch.zeros(0, 2, 2)) is None


# --------------------------------------------------------------------------- SegEPG / X-SegEPG

# 3x3 map, box = top-left 2x2, segmentation = middle column of the box
SEG_A = t([[1.0, 2.0, 0.0], [3.0, 4.0, -1.0], [5.0, 0.0, 0.0]])  # ΣA⁺ = 15
BOX = t([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # Σ box·A⁺ = 1+2+3+4 = 10
SEG = t([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # Σ seg·A⁺ = 2+4 = 6


def test_seg_epg_hand():
    assert seg_epg(SEG_A, SEG, BOX).tolist() == pytest.approx([6 / 10])


def test_x_seg_epg_hand():
    # counts the 5 outside the box as incorrect too: 6 / 15
    assert x_seg_epg(SEG_A, SEG).tolist() == pytest.approx([6 / 15])
    # plain EPG on the box for comparison: 10 / 15
    assert epg(SEG_A, BOX).tolist() == pytest.approx([10 / 15])


def test_seg_epg_edges():
    outside_only = t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    assert seg_epg(outside_only, SEG, BOX).tolist() == [0.0]  # no positive energy in the box
    assert seg_epg(torch.zeros(1, 3, 3), SEG, BOX).tolist() == [0.0]
    assert seg_epg(SEG_A, torch.zeros(1, 3, 3), BOX).tolist() == [0.0]
    assert seg_epg(SEG_A, BOX, BOX).tolist() == pytest.approx([1.0])
    assert x_seg_epg(torch.zeros(1, 3, 3), SEG).tolist() == [0.0]


# --------------------------------------------------------------------------- AFL


def test_attribution_focus_hand():
    # |A| = [[1, 1], [0.5, 0.5]], Σ = 3
    A_ = t([[1.0, -1.0], [0.5, -0.5]])
    primary = t([[1.0, 0.0], [0.0, 0.0]])  # PAFL = 1/3
    secondary = t([[0.0, 1.0], [1.0, 0.0]])  # SAFL = 1.5/3 = 0.5
    assert attribution_focus(A_, primary).tolist() == pytest.approx([1 / 3])
    assert attribution_focus(A_, secondary).tolist() == pytest.approx([0.5])


def test_attribution_focus_smerf_toy():
    # SMERF A.4-style: object A (4 px) at 1, object B (2 px) at 0.8, background (2 px) 0.001
    #   total = 4 + 1.6 + 0.002 = 5.602;  PAFL = 4/5.602,  SAFL = 1.6/5.602
    A_ = t([[1.0, 1.0, 0.8, 0.001], [1.0, 1.0, 0.8, 0.001]])
    obj_a = t([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    obj_b = t([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert attribution_focus(A_, obj_a).tolist() == pytest.approx([4 / 5.602])
    assert attribution_focus(A_, obj_b).tolist() == pytest.approx([1.6 / 5.602])


def test_attribution_focus_edges():
    assert attribution_focus(ZERO_MAP, FULL).tolist() == [0.0]
    assert attribution_focus(NEG_MAP, FULL).tolist() == pytest.approx([1.0])  # |A| counts negatives
    assert attribution_focus(A, EMPTY).tolist() == [0.0]


# --------------------------------------------------------------------------- classification


def test_f1_micro_hand():
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1]])
    targets = torch.tensor([[1, 0, 0], [1, 1, 0]])
    # predicted (≥ 0.5): [[1,0,1],[0,1,0]];  TP = 2, FP = 1 (0,2), FN = 1 (1,0)
    # F1 = 2·2 / (2·2 + 1 + 1) = 4/6
    assert f1_score(probs, targets) == pytest.approx(2 / 3)
    # threshold 0.65: predicted [[1,0,0],[0,1,0]]: TP = 2, FP = 0, FN = 1 -> 4/5
    assert f1_score(probs, targets, threshold=0.65) == pytest.approx(0.8)


def test_f1_edges():
    assert f1_score(torch.zeros(2, 3), torch.zeros(2, 3)) == 0.0  # no positives, no predictions
    assert f1_score(torch.zeros(0, 3), torch.zeros(0, 3)) == 0.0
    assert f1_score(torch.tensor([[0.5]]), torch.tensor([[1]])) == 1.0  # ≥ threshold


def test_map_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.3],
            [0.8, 0.4, 0.2],
            [0.7, 0.4, 0.1],
            [0.6, 0.2, 0.0],
        ]
    )
    targets = torch.tensor(
        [
            [1, 0, 0],
            [0, 0, 0],
            [1, 1, 0],
            [0, 0, 0],
        ]
    )
    # class 0: ranking 0.9(+) 0.8(-) 0.7(+) 0.6(-): precisions at positives 1/1, 2/3 -> AP = 5/6
    # class 1: positive (0.4) tied with a negative (0.4): conservative -> negative first,
    #          positive at rank 2 -> AP = 1/2
    # class 2: no positives -> excluded
    # mAP = (5/6 + 1/2) / 2 = 2/3
    assert mean_average_precision(scores, targets) == pytest.approx(2 / 3)


def test_map_edges():
    assert mean_average_precision(torch.rand(4, 2), torch.zeros(4, 2)) == 0.0
    assert mean_average_precision(torch.zeros(0, 2), torch.zeros(0, 2)) == 0.0
    perfect = torch.tensor([[0.9], [0.1]])
    assert mean_average_precision(perfect, torch.tensor([[1], [0]])) == 1.0
    # all scores tied: positive ranked last -> precision 1/2
    assert mean_average_precision(torch.zeros(2, 1), torch.tensor([[1], [0]])) == 0.5


def test_accuracy():
    assert accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0])) == pytest.approx(0.75)
    assert accuracy(torch.tensor([]), torch.tensor([])) == 0.0


def test_group_accuracies_hand():
    # Waterbirds-style 4 groups
    group = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    target = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0])
    # group 0: 2/2 = 1;  group 1: 1/3;  group 2: 1/2;  group 3: 0/1
    # overall: (2 + 1 + 1 + 0)/8 = 0.5;  worst: 0;  mean: (1 + 1/3 + 1/2 + 0)/4 = 11/24
    out = group_accuracies(pred, target, group)
    assert out == pytest.approx(
        {
            "overall_acc": 0.5,
            "worst_group_acc": 0.0,
            "mean_group_acc": 11 / 24,
            "group_acc/0": 1.0,
            "group_acc/1": 1 / 3,
            "group_acc/2": 0.5,
            "group_acc/3": 0.0,
        }
    )


def test_group_accuracies_only_present_groups():
    out = group_accuracies(torch.tensor([1, 0]), torch.tensor([1, 1]), torch.tensor([2, 5]))
    assert set(out) == {"overall_acc", "worst_group_acc", "mean_group_acc", "group_acc/2", "group_acc/5"}
    assert out["worst_group_acc"] == 0.0 and out["mean_group_acc"] == 0.5


def test_group_accuracies_empty():
    empty = torch.tensor([], dtype=torch.long)
    assert group_accuracies(empty, empty, empty) == {
        "overall_acc": 0.0,
        "worst_group_acc": 0.0,
        "mean_group_acc": 0.0,
    }


# --------------------------------------------------------------------------- properties

maps = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda shape: st.tuples(
        arrays("float32", shape, elements=st.floats(-1e6, 1e6, width=32)),
        arrays("bool", shape),
        arrays("bool", shape),
    )
)


def _in_unit_interval(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all() and (x >= 0).all() and (x <= 1).all())


@settings(deadline=None, max_examples=200)
@given(maps, st.floats(0.0, 1.0))
def test_localization_metrics_in_unit_interval(data, threshold):
    a, m1, m2 = data
    A_, M1, M2 = torch.from_numpy(a), torch.from_numpy(m1).float(), torch.from_numpy(m2).float()
    assert _in_unit_interval(epg(A_, M1))
    assert _in_unit_interval(iou(A_, M1, threshold))
    assert _in_unit_interval(attribution_focus(A_, M1))
    assert _in_unit_interval(x_seg_epg(A_, M1))
    assert _in_unit_interval(seg_epg(A_, M1, M2))

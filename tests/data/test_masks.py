"""Tests for mg_tune.data.masks with hand-computed expectations."""

import pytest
import torch

from mg_tune.data.masks import annotated_subset, box_mask, class_box_masks, crayon_relevance, dilate_box


def test_box_mask_union_exact_pixels():
    # (1,2,4,5): rows 2..4, cols 1..3 -> 9 px; (3,4,6,6): rows 4..5, cols 3..5 -> 6 px; overlap (4,3) -> 14 px.
    mask = box_mask([(1, 2, 4, 5), (3, 4, 6, 6)], height=8, width=7)
    expected = torch.zeros(8, 7)
    for y, x in [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3), (4, 4), (4, 5)]:
        expected[y, x] = 1
    for y, x in [(5, 3), (5, 4), (5, 5)]:
        expected[y, x] = 1
    assert mask.dtype == torch.float32 and mask.shape == (8, 7)
    assert torch.equal(mask, expected)
    assert mask.sum().item() == 14
    assert mask[2, 4] == 0 and mask[6, 3] == 0  # x1 / y1 are exclusive


def test_box_mask_full_image_and_empty():
    assert box_mask([(0, 0, 5, 4)], 4, 5).sum().item() == 20
    assert box_mask([], 4, 5).sum().item() == 0


@pytest.mark.parametrize("box", [(-1, 0, 2, 2), (0, 0, 6, 2), (2, 0, 2, 3), (0, 3, 2, 1), (0, 0, 1)])
def test_box_mask_rejects_boxes_outside_image(box):
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        box_mask([box], height=4, width=5)


def test_class_box_masks_union_per_class():
    boxes = [(0, 0, 2, 2), (4, 4, 6, 6), (1, 1, 3, 2)]
    masks = class_box_masks(boxes, [2, 0, 2], num_classes=3, height=6, width=6)
    assert masks.shape == (3, 6, 6)
    assert masks[0].sum().item() == 4 and masks[0, 4:6, 4:6].sum().item() == 4
    assert masks[1].sum().item() == 0
    # class 2: 2x2 at origin (4 px) + row 1 cols 1..2 (2 px) sharing (1,1) -> 5 px
    assert masks[2].sum().item() == 5 and masks[2, 1, 2] == 1 and masks[2, 0, 2] == 0
    with pytest.raises(ValueError, match="labels"):
        class_box_masks(boxes, [0, 1, 3], num_classes=3, height=6, width=6)


@pytest.mark.parametrize(
    ("box", "percent", "expected"),
    [
        # each side moves by floor(p * side length), as the authors' utils.enlarge_bb
        ((10, 10, 20, 30), 0, (10, 10, 20, 30)),
        ((10, 10, 20, 30), 10, (9, 8, 21, 32)),  # margins 1 (width 10) and 2 (height 20) px
        ((10, 10, 20, 30), 50, (5, 0, 25, 40)),  # margins 5 and 10: the top edge reaches row 0 exactly
        ((8, 8, 16, 16), 25, (6, 6, 18, 18)),  # 2 px per side: the side grows by 50 %
        ((10, 10, 17, 13), 25, (9, 10, 18, 13)),  # floor(1.75) = 1, floor(0.75) = 0
        ((0, 0, 10, 10), 50, (0, 0, 15, 15)),  # clipped at the top-left corner
        ((60, 58, 64, 64), 50, (58, 55, 64, 64)),  # clipped at the bottom-right corner (image size, not 223)
        ((5, 50, 40, 60), 50, (0, 45, 57, 64)),  # floor(17.5) = 17; clipped left and bottom
    ],
)
def test_dilate_box(box, percent, expected):
    assert dilate_box(box, percent, height=64, width=64) == expected


def test_dilate_box_validation():
    with pytest.raises(ValueError, match=r"percent=-5"):
        dilate_box((0, 0, 4, 4), -5, 8, 8)
    with pytest.raises(ValueError, match="box="):
        dilate_box((0, 0, 9, 4), 10, 8, 8)


@pytest.mark.parametrize(
    ("n", "fraction", "count"),
    [(100, 0.1, 10), (100, 0.01, 1), (100, 0.004, 1), (100, 0.0, 0), (100, 1.0, 100), (20, 0.125, 3), (0, 0.5, 0)],
)
def test_annotated_subset_counts(n, fraction, count):
    chosen = annotated_subset(n, fraction, seed=3)
    assert chosen.dtype == torch.bool and chosen.shape == (n,)
    assert chosen.sum().item() == count


def test_annotated_subset_deterministic_and_nested():
    a = annotated_subset(200, 0.1, seed=7)
    assert torch.equal(a, annotated_subset(200, 0.1, seed=7))
    assert not torch.equal(a, annotated_subset(200, 0.1, seed=8))
    small = annotated_subset(200, 0.01, seed=7)
    assert torch.all(a[small])  # 1 % subset inside the 10 % subset


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_annotated_subset_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=f"fraction={fraction}"):
        annotated_subset(10, fraction, seed=0)


def test_crayon_relevance_two_maps():
    mask = torch.zeros(4, 4)
    mask[:, :2] = 1  # left half is relevant
    saliency = torch.zeros(2, 4, 4)
    saliency[0, 0, 0], saliency[0, 0, 3] = 3.0, 1.0  # share 3/4 inside
    saliency[1, 1, 1], saliency[1, 2, 3], saliency[1, 0, 0] = 1.0, 3.0, -10.0  # share 1/4; negatives ignored
    assert crayon_relevance(saliency, mask).tolist() == [True, False]
    assert crayon_relevance(saliency, mask, threshold=0.8).tolist() == [False, False]
    assert crayon_relevance(saliency, mask, threshold=0.25).tolist() == [True, True]
    per_map = torch.stack([mask, 1 - mask])  # map 1 judged against the right half: share 3/4
    assert crayon_relevance(saliency, per_map).tolist() == [True, True]


def test_crayon_relevance_zero_map_is_irrelevant_and_shapes_checked():
    assert crayon_relevance(torch.zeros(1, 3, 3), torch.ones(3, 3)).tolist() == [False]
    with pytest.raises(ValueError, match="mask shape"):
        crayon_relevance(torch.zeros(2, 3, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="threshold=2"):
        crayon_relevance(torch.zeros(2, 3, 3), torch.ones(3, 3), threshold=2)

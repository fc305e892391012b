"""Tests for the SMERF-style TextBox datasets (mg_tune.data.textbox)."""

import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mg_tune.data.masks import annotated_subset, box_mask, class_box_masks, dilate_box
from mg_tune.data.textbox import TEXTBOX_VARIANTS, SpuriousTextBox, build_textbox

SIZE = 64
OBJECT_SIZES = {"A": (15, 21), "B": (15, 21), "Box1": (10, 10), "Box2": (4, 4)}  # (w, h)
TABLE_NAME = {"A": "T", "B": "T", "Box1": "B1", "Box2": "B2"}
STROKES_5X7 = {"A": 3 + 2 + 2 + 5 + 2 + 2 + 2, "B": 4 + 2 + 2 + 4 + 2 + 2 + 4}  # stroke pixels per 5x7 glyph row


def _sample_keys_and_types(sample, num_classes):
    assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["labels"].shape == (num_classes,) and sample["labels"].dtype == torch.float32
    assert sample["masks"].shape == (num_classes, SIZE, SIZE)
    assert sample["seg_masks"].shape == (num_classes, SIZE, SIZE)
    assert sample["has_mask"].dtype == torch.bool and sample["has_mask"].dim() == 0
    assert sample["group"].dtype == torch.long and sample["group"].dim() == 0
    assert sample["secondary_mask"].shape == (SIZE, SIZE)
    assert isinstance(sample["index"], int)


@pytest.mark.parametrize("variant", sorted(TEXTBOX_VARIANTS))
def test_sample_format_and_masks_match_boxes(variant):
    ds = build_textbox(variant, "val", 12, seed=1)
    k = ds.info.num_classes
    for i in range(len(ds)):
        sample = ds[i]
        _sample_keys_and_types(sample, k)
        assert sample["index"] == i
        boxes = ds.boxes(i)
        expected = class_box_masks([b[1:] for b in boxes], [b[0] for b in boxes], k, SIZE, SIZE)
        assert torch.equal(sample["masks"], expected)
        assert torch.all(sample["seg_masks"] <= sample["masks"])  # seg_masks within boxes
        for c, *box in boxes:
            assert sample["labels"][c] == 1
            assert sample["seg_masks"][c].sum() > 0
        if not ds.info.multilabel:
            assert sample["labels"].sum() == 1


@pytest.mark.parametrize("variant", ["multilabel", "spurious", "complex_cr3"])
def test_determinism(variant):
    a, b = build_textbox(variant, "train", 5, seed=3), build_textbox(variant, "train", 5, seed=3)
    other_seed, other_split = build_textbox(variant, "train", 5, seed=4), build_textbox(variant, "val", 5, seed=3)
    for i in range(5):
        sa, sb = a[i], b[i]
        for key in ("image", "labels", "masks", "seg_masks", "secondary_mask", "group"):
            assert torch.equal(sa[key], sb[key]), key
        assert torch.equal(sa["image"], a[i]["image"])  # repeated access
    assert not all(torch.equal(a[i]["image"], other_seed[i]["image"]) for i in range(5))
    assert not all(torch.equal(a[i]["image"], other_split[i]["image"]) for i in range(5))


def test_multilabel_objects():
    ds = build_textbox("multilabel", "train", 60, seed=0)
    assert ds.info.class_names == ("A", "B", "Box1", "Box2") and ds.info.multilabel
    seen = set()
    for i in range(len(ds)):
        sample, scene = ds[i], ds.scene(i)
        labels = sample["labels"]
        assert labels.sum() >= 1
        seen.add(tuple(labels.int().tolist()))
        assert sample["group"] == -1 and sample["secondary_mask"].sum() == 0
        assert [o.name for o in scene.objects] == [ds.info.class_names[c] for c in range(4) if labels[c]]
        for c, x0, y0, x1, y1 in ds.boxes(i):
            assert (x1 - x0, y1 - y0) == OBJECT_SIZES[ds.info.class_names[c]]
            assert sample["masks"][c].sum() == (x1 - x0) * (y1 - y0)
            seg = sample["seg_masks"][c].bool()
            name = ds.info.class_names[c]
            # letters: x3-scaled glyph strokes; boxes: filled
            strokes = STROKES_5X7[name] * 3**2 if name in STROKES_5X7 else (x1 - x0) * (y1 - y0)
            assert seg.sum() == strokes
            assert torch.all(sample["image"][:, seg] == 1.0)  # white strokes
        for c in range(4):
            assert (sample["masks"][c].sum() > 0) == bool(labels[c])
        boxes = [o.box for o in scene.objects]
        for j, a in enumerate(boxes):  # pairwise non-overlapping
            for b in boxes[j + 1 :]:
                assert box_mask([a], SIZE, SIZE).mul(box_mask([b], SIZE, SIZE)).sum() == 0
    assert len(seen) >= 10  # many of the 15 non-empty subsets occur
    letter = ds[next(i for i in range(len(ds)) if ds[i]["labels"][0])]
    assert letter["seg_masks"][0].sum() < letter["masks"][0].sum()  # strokes, not the full box


def test_dilation_applies_to_box_masks_only():
    plain = build_textbox("multilabel", "val", 6, seed=2)
    dilated = build_textbox("multilabel", "val", 6, seed=2, dilation=50)
    for i in range(6):
        boxes = dilated.boxes(i)
        grown = [dilate_box(b[1:], 50, SIZE, SIZE) for b in boxes]
        expected = class_box_masks(grown, [b[0] for b in boxes], 4, SIZE, SIZE)
        assert torch.equal(dilated[i]["masks"], expected)
        assert dilated[i]["masks"].sum() > plain[i]["masks"].sum()
        assert torch.equal(dilated[i]["seg_masks"], plain[i]["seg_masks"])


def test_has_mask_follows_annotation_fraction():
    train = build_textbox("multilabel", "train", 200, seed=5, annotation_fraction=0.1)
    flags = torch.stack([train[i]["has_mask"] for i in range(200)])
    assert flags.sum() == 20
    assert torch.equal(flags, annotated_subset(200, 0.1, seed=5))
    val = build_textbox("multilabel", "val", 20, seed=5, annotation_fraction=0.1)
    assert all(val[i]["has_mask"] for i in range(20))


def _measured_background(sample):
    """0 = land (greenish), 1 = water (bluish), from the mean colour outside the patch."""
    outside = 1.0 - sample["masks"].sum(0)
    green, blue = (sample["image"][1:] * outside).sum((1, 2))
    return int(blue > green)


@pytest.mark.parametrize(
    ("split", "spurious_rate", "expected", "tol"),
    [("train", 0.95, 0.95, 0.05), ("heldout", 0.8, 0.8, 0.06), ("test", 0.95, 0.5, 0.075)],
)
def test_spurious_cue_agreement(split, spurious_rate, expected, tol):
    ds = build_textbox("spurious", split, 400, seed=0, spurious_rate=spurious_rate)
    agree, labels = [], []
    for i in range(len(ds)):
        sample = ds[i]
        label = int(sample["labels"].argmax())
        background = _measured_background(sample)
        assert sample["group"] == 2 * label + background
        agree.append(background == label)
        labels.append(label)
    assert abs(np.mean(agree) - expected) <= tol
    assert abs(np.mean(labels) - 0.5) <= 0.075


def test_spurious_patch_hides_cue():
    ds = SpuriousTextBox("train", 30, seed=1)
    assert ds.info.group_names == ("A/land", "A/water", "B/land", "B/water")
    for i in range(len(ds)):
        sample = ds[i]
        label = int(sample["labels"].argmax())
        (c, x0, y0, x1, y1), = ds.boxes(i)
        assert c == label and (x1 - x0, y1 - y0) == (27, 27)  # 7*3 + 2*GAP + 2 for the x3 letter
        assert sample["masks"][label].sum() == 27 * 27 and sample["masks"][1 - label].sum() == 0
        inside = sample["image"][:, y0:y1, x0:x1]
        strokes = sample["seg_masks"][label, y0:y1, x0:x1].bool()
        assert strokes.sum() == STROKES_5X7[ds.info.class_names[label]] * 3**2  # glyph scaled x3
        assert torch.all(inside[:, strokes] == 1.0) and torch.all(inside[:, ~strokes] == 0.0)
        assert ds.scene(i).objects[0].name == ds.info.class_names[label]


def test_spurious_letter_colors_option_colours_b_yellow():
    ds = SpuriousTextBox("test", 20, seed=3, letter_colors=True, letter_scale=2)
    for i in range(len(ds)):
        sample = ds[i]
        label = int(sample["labels"].argmax())
        strokes = sample["seg_masks"][label].bool()
        expected = torch.tensor(SpuriousTextBox.LETTER_COLORS[label])
        assert torch.allclose(sample["image"][:, strokes], expected[:, None].expand(3, int(strokes.sum())))
        assert strokes.sum() == STROKES_5X7[ds.info.class_names[label]] * 2**2


# SMERF Table 1, transcribed cell by cell. Bucket contents follow SMERF Fig. 5:
# buckets 1-3 no box, 4-6 Box2 only, 7-9 Box1 only, 10-12 both; within each triple: no text, "A", "B".
BUCKET_CONTENTS = {
    1: (None, False, False), 2: ("A", False, False), 3: ("B", False, False),
    4: (None, False, True), 5: ("A", False, True), 6: ("B", False, True),
    7: (None, True, False), 8: ("A", True, False), 9: ("B", True, False),
    10: (None, True, True), 11: ("A", True, True), 12: ("B", True, True),
}  # fmt: skip
TABLE1 = {
    # setting: (labeled 0, labeled 1, objects to focus, objects to avoid)
    "simple_fr": (
        "1,2,3,4,5,6", "7,8,9,10,11,12",
        "1,2,3,4,5,6: N; 7,8,9,10,11,12: B1",
        "1,7: N; 2,3,8,9: T; 4,10: B2; 5,6,11,12: B2,T",  # bucket 7 is missing in the paper: nothing left to avoid
    ),
    "simple_nr": (
        "2,5,8,11", "3,6,9,12",
        "2,3,5,6,8,9,11,12: T",
        "2,3: N; 5,6: B2; 8,9: B1; 11,12: B1,B2",
    ),
    "complex_fr": (
        "1,2,3,4,5,6,7,8,9", "10,11,12",
        "1,2,3,4,5,6,7,8,9: N; 10,11,12: B1,B2",
        "1,4,7,10: N; 2,3,5,6,8,9,11,12: T",  # buckets 8, 9 are missing in the paper; read as T (reference code)
    ),
    "complex_cr1": (
        "2,4,5,6,8", "3,9,10,11,12",
        "2,3,8,9: T; 4,5,6: B2; 10,11,12: B1,B2",
        "2,3,4,10: N; 8,9: B1; 5,6,11,12: T",
    ),
    "complex_cr2": (
        "2,5,7,8,9", "3,6,10,11,12",
        "2,3,5,6: T; 7,8,9: B1; 10,11,12: B1,B2",
        "2,3,7,10: N; 5,6: B2; 8,9,11,12: T",
    ),
    "complex_cr3": (
        "1,2,3,5,11", "6,7,8,9,12",
        "1,2,3: N; 5,6,11,12: B2,T; 7,8,9: B1",
        "1,5,6,7: N; 2,3,8,9: T; 11,12: B1",
    ),
    "complex_cr4": (
        "1,2,3,8,11", "4,5,6,9,12",
        "1,2,3: N; 4,5,6: B2; 8,9,11,12: B1,T",
        "1,4,8,9: N; 2,3,5,6: T; 11,12: B2",
    ),
}


def _ids(cell):
    return {int(v) for v in cell.split(",")}


def _objects_by_bucket(cell):
    """'1,2: N; 3: B1,T' -> {1: set(), 2: set(), 3: {'B1', 'T'}}."""
    out = {}
    for part in cell.split(";"):
        ids, names = re.fullmatch(r"\s*([\d,]+):\s*([A-Z0-9,]+)\s*", part).groups()
        objects = set() if names == "N" else set(names.split(","))
        out.update({b: objects for b in _ids(ids)})
    return out


@pytest.mark.parametrize("setting", sorted(TABLE1))
def test_smerf_table1_rows(setting):
    zero, one, focus_cell, avoid_cell = TABLE1[setting]
    label_of = {**{b: 0 for b in _ids(zero)}, **{b: 1 for b in _ids(one)}}
    focus, avoid = _objects_by_bucket(focus_cell), _objects_by_bucket(avoid_cell)
    ds = build_textbox(setting, "val", 150, seed=0)
    seen = set()
    for i in range(len(ds)):
        sample, scene, bucket = ds[i], ds.scene(i), ds.bucket(i)
        assert bucket in label_of  # undefined buckets are never sampled
        seen.add(bucket)
        label = label_of[bucket]
        assert sample["labels"].tolist() == [float(label == 0), float(label == 1)]
        text, box1, box2 = BUCKET_CONTENTS[bucket]
        names = sorted(o.name for o in scene.objects)
        assert names == sorted([text] * (text is not None) + ["Box1"] * box1 + ["Box2"] * box2)
        boxes_of = {TABLE_NAME[o.name]: o.box for o in scene.objects}
        assert torch.equal(sample["masks"][label], box_mask([boxes_of[n] for n in focus.get(bucket, ())], SIZE, SIZE))
        assert sample["masks"][1 - label].sum() == 0
        assert torch.equal(sample["secondary_mask"], box_mask([boxes_of[n] for n in avoid[bucket]], SIZE, SIZE))
        assert sample["group"] == -1
    assert seen == set(label_of)  # every defined bucket occurs


def test_smerf_images_show_exactly_the_objects():
    ds = build_textbox("complex_fr", "val", 20, seed=9)
    for i in range(len(ds)):
        scene, image = ds.scene(i), ds[i]["image"]
        drawn = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        for obj in scene.objects:
            drawn |= torch.from_numpy(obj.seg_mask())
        assert torch.all(image[:, drawn] == 1.0) and torch.all(image[:, ~drawn] == 0.0)


def test_complex_fr_train_balances_positives():
    train = build_textbox("complex_fr", "train", 600, seed=0)
    test = build_textbox("complex_fr", "test", 600, seed=0)
    pos_train = np.mean([train.bucket(i) >= 10 for i in range(600)])
    pos_test = np.mean([test.bucket(i) >= 10 for i in range(600)])
    assert abs(pos_train - 0.5) <= 0.07  # Table 2: 6000 per positive bucket vs 2000 per negative one
    assert abs(pos_test - 0.25) <= 0.07  # uniform over 12 buckets


def test_dataloader_collates():
    batch = next(iter(DataLoader(build_textbox("spurious", "train", 8), batch_size=4)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["has_mask"].shape == (4,)
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_argument_validation():
    with pytest.raises(ValueError, match="variant='nope'"):
        build_textbox("nope", "train", 4)
    with pytest.raises(ValueError, match="split='dev'"):
        build_textbox("multilabel", "dev", 4)
    with pytest.raises(ValueError, match="fraction=2"):
        build_textbox("multilabel", "train", 4, annotation_fraction=2)
    with pytest.raises(ValueError, match="spurious_rate=1.5"):
        build_textbox("spurious", "train", 4, spurious_rate=1.5)
    with pytest.raises(ValueError, match="dilation=-1"):
        build_textbox("simple_nr", "train", 4, dilation=-1)
    with pytest.raises(IndexError):
        build_textbox("simple_nr", "train", 4)[4]


@pytest.mark.parametrize("variant", ["simple_fr", "multilabel", "spurious"])
def test_smerf_focus_levels_are_reported_on_smerf_settings_only(variant):
    """PAFL / SAFL (issue 20): measured on the SMERF settings, absent (never 0.0) on the other TextBox variants."""
    from mg_tune.split_eval import evaluate_split
    from mg_tune.models import build_model

    dataset = build_textbox(variant, "val", 16)
    torch.manual_seed(0)
    model = build_model("smerf_cnn", dataset.info.num_classes)
    metrics = evaluate_split(
        model, DataLoader(dataset, batch_size=8), "ixg", "input", dataset.info.multilabel, dataset.info.group_names, smerf=dataset.info.smerf
    ).metrics
    assert dataset.info.smerf == (variant == "simple_fr")
    assert {"pafl", "safl"} & set(metrics) == ({"pafl", "safl"} if variant == "simple_fr" else set())
    assert {"seg_epg", "x_seg_epg", "epg", "iou"} <= set(metrics)  # every TextBox object has its pixel mask

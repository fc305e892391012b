"""Real data sets (VOC 2007, COCO 2014, Waterbirds-100) on tiny fixtures written in their exact on-disk formats."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data import DatasetError, build_split, check_dataset
from mg_tune.data.masks import box_mask, dilate_box
from mg_tune.data.voc import VOC_CLASSES
from mg_tune.train import train

from helpers.data_formats import S, VOC_IMAGES, VOC_SETS, WATERBIRDS, coco_train_json, crowd_mask, voc_seg_class, voc_seg_object, write_coco, write_voc, write_waterbirds


@pytest.fixture
def voc_root(tmp_path) -> Path:
    return write_voc(tmp_path)


@pytest.fixture
def coco_root(tmp_path) -> Path:
    return write_coco(tmp_path)


@pytest.fixture
def waterbirds_root(tmp_path) -> Path:
    return write_waterbirds(tmp_path)


def _expected_mask(boxes, height=S, width=S) -> torch.Tensor:
    return box_mask(boxes, height, width).to(torch.uint8)


def _by_image(dataset) -> dict[str, int]:
    return {Path(r.image).stem: i for i, r in enumerate(dataset.records)}


# ----------------------------------------------------------------------------------------------
# VOC


def test_voc_splits_labels_boxes_and_masks_match_the_files(voc_root):
    data = DataConfig(name="voc", root=str(voc_root), image_size=S)
    train, val, heldout, test = (build_split(data, s) for s in ("train", "val", "heldout", "test"))
    assert train.info.class_names == VOC_CLASSES and train.info.multilabel
    assert [Path(r.image).stem for r in train.records] == VOC_SETS["train"]
    assert len(val) + len(heldout) == 3 and len(heldout) == 1
    assert sorted(Path(r.image).stem for r in [*val.records, *heldout.records]) == VOC_SETS["val"]
    assert [Path(r.image).stem for r in test.records] == VOC_SETS["test"]
    for dataset in (train, val, heldout, test):
        for i, record in enumerate(dataset.records):
            image_id = Path(record.image).stem
            w, h, objects = VOC_IMAGES[image_id]
            expected = [(VOC_CLASSES.index(n), x0 - 1, y0 - 1, x1, y1) for n, x0, y0, x1, y1, _ in objects]
            assert dataset.boxes(i) == expected  # 1-based inclusive -> 0-based, x1/y1 exclusive
            sample = dataset[i]
            assert sample["image"].shape == (3, S, S) and sample["image"].dtype == torch.float32
            assert 0 <= sample["image"].min() and sample["image"].max() <= 1
            assert sample["masks"].shape == sample["seg_masks"].shape == (20, S, S) and sample["masks"].dtype == torch.uint8
            assert sample["labels"].tolist() == [float(k in {b[0] for b in expected}) for k in range(20)]
            assert sample["group"].item() == -1 and sample["secondary_mask"].shape == (S, S) and not sample["secondary_mask"].any()
            assert sample["index"] == i and sample["has_mask"].item()
            for k in range(20):
                full = _expected_mask([b[1:] for b in expected if b[0] == k], h, w)
                want = full if (w, h) == (S, S) else TF.resize(full[None], [S, S], interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]  # pixel centres
                assert torch.equal(sample["masks"][k], want), (image_id, k)


def test_voc_segmentation_masks_pixel_for_pixel(voc_root):
    train = build_split(DataConfig(name="voc", root=str(voc_root), image_size=S), "train")
    index = _by_image(train)
    one = train[index["000001"]]  # SegmentationClass
    seg = torch.from_numpy(voc_seg_class())
    assert one["has_seg"].item()
    for k in range(20):
        assert torch.equal(one["seg_masks"][k], (seg == k + 1).to(torch.uint8)), k
    assert one["seg_masks"].sum(0).max() == 1 and not one["seg_masks"][:, 24, 14:36].any()  # void belongs to no class
    two = train[index["000002"]]  # SegmentationObject only: objects 1, 2 are both cats
    obj = torch.from_numpy(voc_seg_object())
    cat = VOC_CLASSES.index("cat")
    assert torch.equal(two["seg_masks"][cat], ((obj == 1) | (obj == 2)).to(torch.uint8))
    assert two["seg_masks"].sum() == two["seg_masks"][cat].sum()
    three = train[index["000003"]]
    assert not three["has_seg"].item() and not three["seg_masks"].any()


def test_voc_options_dilation_difficult_random_split_and_annotation_fraction(voc_root):
    dilated = build_split(DataConfig(name="voc", root=str(voc_root), image_size=S, dilation=50), "train")
    i = _by_image(dilated)["000001"]
    dog = VOC_CLASSES.index("dog")
    assert torch.equal(dilated[i]["masks"][dog], _expected_mask([dilate_box((10, 20, 40, 50), 50, S, S)]))
    no_difficult = build_split(DataConfig(name="voc", root=str(voc_root), image_size=S, options={"difficult": False}), "train")
    assert no_difficult.boxes(_by_image(no_difficult)["000002"]) == [(VOC_CLASSES.index("cat"), 4, 4, 20, 20)]
    random = DataConfig(name="voc", root=str(voc_root), image_size=S, options={"val_split": "random", "val_fraction": 0.5, "heldout_fraction": 0.0})
    parts = [build_split(random, s) for s in ("train", "val")]
    ids = [sorted(Path(r.image).stem for r in d.records) for d in parts]
    assert sorted(ids[0] + ids[1]) == sorted(VOC_SETS["train"] + VOC_SETS["val"]) and len(ids[0]) == len(ids[1]) == 3
    assert ids == [sorted(Path(r.image).stem for r in build_split(random, s).records) for s in ("train", "val")]  # fixed seed
    some = build_split(DataConfig(name="voc", root=str(voc_root), image_size=S, annotation_fraction=0.34), "train")
    assert [some[i]["has_mask"].item() for i in range(3)].count(True) == 1
    assert all(build_split(DataConfig(name="voc", root=str(voc_root), image_size=S, annotation_fraction=0.0), "val")[i]["has_mask"] for i in range(2))
    assert len(build_split(DataConfig(name="voc", root=str(voc_root), max_samples=2), "train")) == 2


def test_augmentation_keeps_masks_aligned_with_the_image(voc_root):
    data = DataConfig(name="voc", root=str(voc_root), image_size=48, augment=True)
    train = build_split(data, "train")
    i = _by_image(train)["000001"]  # the dog's box is painted white in the image
    dog = VOC_CLASSES.index("dog")
    torch.manual_seed(0)
    shapes = set()
    for _ in range(12):
        sample = train[i]
        bright = sample["image"].min(0).values
        mask = sample["masks"][dog].bool()
        # the mask covers the white pixels: every clearly white pixel is in it, no clearly dark one is
        assert mask[bright > 0.85].all() and not mask[bright < 0.25].any()
        assert (mask == (bright > 0.5)).float().mean() > 0.97
        ys, xs = torch.nonzero(mask, as_tuple=True)
        shapes.add((int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else None)
        seg = sample["seg_masks"][dog].bool()
        assert not (seg & ~mask).any() or not mask.any()  # the dog's pixels lie inside its box, also after the crop
    assert len(shapes) > 3  # crops differ between calls
    val = build_split(data, "val")
    assert not val.augment  # only the training split is augmented


# ----------------------------------------------------------------------------------------------
# COCO


def test_coco_labels_boxes_polygon_and_rle_masks(coco_root):
    data = DataConfig(name="coco", root=str(coco_root), image_size=S, options={"val_fraction": 0.3})
    parts = {s: build_split(data, s) for s in ("train", "val", "heldout", "test")}
    assert parts["train"].info.class_names == ("person", "car", "dog")  # category ids 1, 3, 18 -> 0, 1, 2
    assert sum(len(parts[s]) for s in ("train", "val", "heldout")) == 10 and len(parts["heldout"]) == 1
    assert len(parts["test"]) == 2
    records = {int(Path(r.image).stem.split("_")[-1]): (d, i) for d in (parts["train"], parts["val"], parts["heldout"]) for i, r in enumerate(d.records)}
    d, i = records[1]
    assert d.boxes(i) == [(0, 10, 10, 30, 40), (1, 40, 2, 61, 18)]  # xywh -> covering xyxy
    sample = d[i]
    assert sample["labels"].tolist() == [1.0, 1.0, 0.0]
    assert torch.equal(sample["masks"][0], _expected_mask([(10, 10, 30, 40)]))
    assert torch.equal(sample["seg_masks"][0], _expected_mask([(10, 10, 30, 40)]))  # the rectangle polygon
    assert torch.equal(sample["seg_masks"][1], _expected_mask([(41, 3, 60, 17)]))
    d, i = records[2]  # crowd (default "label"): label only, no box, no mask
    assert d.boxes(i) == [(2, 30, 5, 40, 15)]
    sample = d[i]
    assert sample["labels"].tolist() == [0.0, 0.0, 1.0]
    assert torch.equal(sample["seg_masks"][2], _expected_mask([(30, 5, 40, 15)]))
    d, i = records[3]  # only a crowd annotation: labelled, empty masks
    assert d[i]["labels"].tolist() == [1.0, 0.0, 0.0] and not d[i]["masks"].any()
    d, i = records[4]  # no annotations: an all-negative sample
    assert d[i]["labels"].sum() == 0 and not d[i]["masks"].any()
    test = parts["test"][0]
    assert test["labels"].tolist() == [0.0, 0.0, 1.0] and torch.equal(test["masks"][2], _expected_mask([(1, 1, 11, 11)]))


def test_coco_crowd_and_empty_image_options(coco_root):
    def split_of(options):
        data = DataConfig(name="coco", root=str(coco_root), image_size=S, options={"val_fraction": 0.3, **options})
        return {int(Path(r.image).stem.split("_")[-1]): (d, i) for d in (build_split(data, s) for s in ("train", "val", "heldout")) for i, r in enumerate(d.records)}

    include = split_of({"crowd": "include"})
    d, i = include[2]
    assert d.boxes(i) == [(2, 5, 40, 30, 60), (2, 30, 5, 40, 15)]
    assert torch.equal(d[i]["seg_masks"][2], torch.from_numpy(crowd_mask()) | _expected_mask([(30, 5, 40, 15)]))
    ignore = split_of({"crowd": "ignore"})
    assert ignore[3][0][ignore[3][1]]["labels"].sum() == 0  # its only annotation is a crowd
    skip = split_of({"crowd": "ignore", "empty_images": "skip"})
    assert 3 not in skip and 4 not in skip and len(skip) == 8


# ----------------------------------------------------------------------------------------------
# Waterbirds


def test_waterbirds_conventional_and_reversed(waterbirds_root):
    data = DataConfig(name="waterbirds", root=str(waterbirds_root), image_size=S)
    train = build_split(data, "train")
    assert train.info.class_names == ("landbird", "waterbird") and not train.info.multilabel
    assert train.info.group_names == ("landbird/land", "landbird/water", "waterbird/land", "waterbird/water")
    assert len(train) == 4
    for i, (img_id, path, y, place, split, size, (x, yy, w, h)) in enumerate(WATERBIRDS[:4]):
        box = (math.floor(x), math.floor(yy), math.ceil(x + w), math.ceil(yy + h))
        assert train.boxes(i) == [(y, *box)]
        sample = train[i]
        assert sample["labels"].tolist() == [float(y == 0), float(y == 1)]
        assert sample["group"].item() == 2 * y + place
        assert torch.equal(sample["masks"][y], _expected_mask([box])) and not sample["masks"][1 - y].any()
        assert not sample["seg_masks"].any() and not sample["has_seg"].item()
    val, heldout = build_split(data, "val"), build_split(data, "heldout")
    assert len(val) + len(heldout) == 3  # the minority-group image 6 is removed from val
    assert all(r.group in (0, 3) for r in [*val.records, *heldout.records])
    assert len(build_split(data.model_copy(update={"options": {"val_groups": "all"}}), "val")) + 1 == 4
    test = build_split(data, "test")
    assert [r.group for r in test.records] == [2, 1]
    reversed_ = build_split(DataConfig(name="waterbirds", variant="reversed", root=str(waterbirds_root), image_size=S), "train")
    assert reversed_.info.class_names == ("land", "water")
    for i, (_, _, y, place, _, _, (x, yy, w, h)) in enumerate(WATERBIRDS[:4]):
        box = (math.floor(x), math.floor(yy), math.ceil(x + w), math.ceil(yy + h))
        sample = reversed_[i]
        assert sample["labels"].tolist() == [float(place == 0), float(place == 1)]
        assert sample["group"].item() == 2 * y + place
        assert torch.equal(sample["masks"][place], 1 - _expected_mask([box]))  # everything outside the bird


def test_waterbirds_one_percent_annotations_and_boxes_csv(waterbirds_root, tmp_path):
    data = DataConfig(name="waterbirds", root=str(waterbirds_root), image_size=S, annotation_fraction=0.01)
    train = build_split(data, "train")
    assert sum(train[i]["has_mask"].item() for i in range(len(train))) == 1  # at least one image when fraction > 0
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("img_filename,x,y,w,h\n" + "".join(f"{p},{b[0]},{b[1]},{b[2]},{b[3]}\n" for _, p, *_, b in WATERBIRDS))
    via_csv = build_split(data.model_copy(update={"options": {"boxes": str(boxes)}}), "train")
    assert [via_csv.boxes(i) for i in range(4)] == [train.boxes(i) for i in range(4)]


# ----------------------------------------------------------------------------------------------
# validation errors: one line naming the file


def _one_line_error(data: DataConfig, split: str = "train", name: str | Path | None = None) -> str:
    with pytest.raises(DatasetError) as info:
        build_split(data, split)
        check_dataset(data)
    message = str(info.value)
    assert "\n" not in message
    if name is not None:
        assert str(name) in message, message
    return message


def test_missing_root_and_directories(tmp_path, voc_root, coco_root):
    missing = tmp_path / "nowhere"
    assert "data root directory is missing" in _one_line_error(DataConfig(name="voc", root=str(missing)), name=missing)
    assert "no VOC2007 directory here" in _one_line_error(DataConfig(name="voc", root=str(coco_root)), name=coco_root)
    (voc_root / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    _one_line_error(DataConfig(name="voc", root=str(voc_root)), "test", name=voc_root / "VOC2007" / "ImageSets" / "Main" / "test.txt")
    images = coco_root / "val2014"
    for f in images.iterdir():
        f.unlink()
    images.rmdir()
    _one_line_error(DataConfig(name="coco", root=str(coco_root)), "test", name=images)
    with pytest.raises(ValueError, match="root is required"):
        DataConfig(name="voc")


@pytest.mark.parametrize(
    "edit,problem",
    [
        (lambda xml: xml.replace("</annotation>", ""), "corrupt XML"),
        (lambda xml: xml.replace("<xmax>40</xmax>", "<xmax>65</xmax>"), "lies outside the 64x64 image"),
        (lambda xml: xml.replace("<xmax>40</xmax>", "<xmax>10</xmax>"), "zero-area box"),
        (lambda xml: xml.replace("<name>dog</name>", "<name>dgo</name>"), "unknown class name 'dgo'"),
    ],
    ids=["corrupt", "outside", "zero-area", "unknown-class"],
)
def test_voc_annotation_errors_name_the_file(voc_root, edit, problem):
    xml = voc_root / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(edit(xml.read_text()))
    message = _one_line_error(DataConfig(name="voc", root=str(voc_root)), name=xml)
    assert problem in message


def test_voc_id_without_files_names_the_image_set_line_and_the_missing_file(voc_root):
    """An id of ImageSets/Main/*.txt whose XML or JPEG is gone: the one line names both files and the list's line."""
    base = voc_root / "VOC2007"
    listing = base / "ImageSets" / "Main" / "val.txt"
    listing.write_text("000004\n\n000005 \n000009\n000006\n")  # line 2 blank (skipped), 000009 on line 4 has no files
    message = _one_line_error(DataConfig(name="voc", root=str(voc_root)), "val")
    assert message == f"{base / 'Annotations' / '000009.xml'}: annotation file is missing (image id '000009' listed in {listing} line 4)"
    listing.write_text("000004\n000005\n000006\n")
    (base / "JPEGImages" / "000005.jpg").unlink()
    message = _one_line_error(DataConfig(name="voc", root=str(voc_root)), "val")
    assert message == (
        f"{base / 'JPEGImages' / '000005.jpg'}: image file is missing "
        f"(named by {base / 'Annotations' / '000005.xml'}; image id '000005' listed in {listing} line 2)"
    )
    random = DataConfig(name="voc", root=str(voc_root), options={"val_split": "random"})  # reads trainval.txt instead
    assert _one_line_error(random, "train").endswith(f"image id '000005' listed in {base / 'ImageSets' / 'Main' / 'trainval.txt'} line 5)")


def test_missing_images_name_the_file(voc_root, waterbirds_root, coco_root):
    jpeg = voc_root / "VOC2007" / "JPEGImages" / "000002.jpg"
    jpeg.unlink()
    assert "image file is missing" in _one_line_error(DataConfig(name="voc", root=str(voc_root)), name=jpeg)
    bird = waterbirds_root / WATERBIRDS[0][1]
    bird.unlink()
    _one_line_error(DataConfig(name="waterbirds", root=str(waterbirds_root)), name=bird)
    coco_image = coco_root / "train2014" / "COCO_train2014_000000000005.jpg"
    coco_image.unlink()
    _one_line_error(DataConfig(name="coco", root=str(coco_root)), name=coco_image)


def test_coco_json_errors_name_the_file(coco_root):
    path = coco_root / "annotations" / "instances_train2014.json"
    path.write_text(path.read_text()[:-20])
    assert "corrupt JSON (line 1" in _one_line_error(DataConfig(name="coco", root=str(coco_root)), name=path)
    for mutate, problem in (
        (lambda d: d["annotations"][0].update(bbox=[10, 10, 0, 30]), "annotation 101 (image 1): zero-area box"),
        (lambda d: d["annotations"][0].update(bbox=[50, 10, 20, 30]), "lies outside the 64x64 image"),
        (lambda d: d["annotations"][0].update(category_id=99), "unknown category_id 99"),
        (lambda d: d.pop("categories"), "no 'categories' list"),
    ):
        data = coco_train_json()
        mutate(data)
        path.write_text(json.dumps(data))
        from mg_tune.data import coco

        coco.LOADER.cache_clear()
        assert problem in _one_line_error(DataConfig(name="coco", root=str(coco_root)), name=path)


def test_waterbirds_errors_name_the_file(waterbirds_root):
    metadata = waterbirds_root / "metadata.csv"
    text = metadata.read_text()
    metadata.write_text(text.replace(",1,0,1,/b/", ",1,9,1,/b/", 1))  # y, split, place of the first row
    assert "line 2: split=9 must be one of 0, 1, 2" in _one_line_error(DataConfig(name="waterbirds", root=str(waterbirds_root)), name=metadata)
    metadata.write_text(text)
    boxes = waterbirds_root.parent / "CUB_200_2011" / "bounding_boxes.txt"
    boxes.write_text(boxes.read_text().replace("1 10.0 12.0 30.0 20.0", "1 50.0 12.0 30.0 20.0"))
    from mg_tune.data import waterbirds

    waterbirds._index.cache_clear()
    assert "lies outside the 64x64 image" in _one_line_error(DataConfig(name="waterbirds", root=str(waterbirds_root)), name=boxes)


def test_on_bad_sample_skip_counts_and_warns_once(voc_root):
    for image_id, edit in (("000001", ("<name>dog</name>", "<name>dgo</name>")), ("000002", ("<xmax>20</xmax>", "<xmax>99</xmax>"))):
        xml = voc_root / "VOC2007" / "Annotations" / f"{image_id}.xml"
        xml.write_text(xml.read_text().replace(*edit))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = build_split(DataConfig(name="voc", root=str(voc_root), on_bad_sample="skip"), "train")
    assert [Path(r.image).stem for r in train.records] == ["000003"]
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(messages) == 1 and "skipped 2 bad sample(s)" in messages[0] and "000001.xml" in messages[0]


def test_config_validates_variant_and_options_without_touching_the_files(tmp_path):
    config = DataConfig(name="coco", root=str(tmp_path / "absent"), options={"crowd": "include"})
    assert config.variant == "2014" and DataConfig(name="waterbirds", root="x").variant == "conventional"
    assert DataConfig().variant == "spurious"
    with pytest.raises(ValueError, match="options.crowd"):
        DataConfig(name="coco", root="x", options={"crowd": "maybe"})
    with pytest.raises(ValueError, match=re.escape("options.setting: unknown option")):
        DataConfig(name="waterbirds", root="x", options={"setting": "reversed"})
    with pytest.raises(ValueError, match="variant='upside_down'"):
        DataConfig(name="waterbirds", root="x", variant="upside_down")


# ----------------------------------------------------------------------------------------------
# CLI and trainer


def test_data_check_cli_prints_counts_and_fails_with_one_line(voc_root, waterbirds_root):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "check", "voc", "--root", str(voc_root)])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "test" in result.output and "dog" in result.output
    result = runner.invoke(app, ["data", "check", "waterbirds", "--root", str(waterbirds_root), "--variant", "reversed"])
    assert result.exit_code == 0, result.output
    assert "waterbird/land" in result.output
    as_json = runner.invoke(app, ["data", "check", "voc", "--root", str(voc_root), "--output", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)  # one row per split; the "ok" line went to stderr
    assert [r["split"] for r in rows] == ["train", "val", "heldout", "test"]
    assert [rows[0][k] for k in ("images", "boxes", "with_segmentation", "class:dog", "class:cat", "class:person", "class:bus")] == [3, 5, 2, 1, 1, 1, 0]
    assert [rows[3][k] for k in ("images", "boxes", "with_segmentation", "class:sheep", "class:horse")] == [2, 2, 0, 1, 1]
    assert rows[1]["images"] + rows[2]["images"] == 3 and len(rows[0]) == 8 + 20  # val.txt = val + heldout; 8 counts, 20 classes
    xml = voc_root / "VOC2007" / "Annotations" / "000007.xml"
    xml.write_text("<annotation>")
    result = runner.invoke(app, ["data", "check", "voc", "--root", str(voc_root)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "000007.xml" in lines[0] and "corrupt XML" in lines[0]
    result = runner.invoke(app, ["data", "check", "coco", "--root", str(voc_root / "nope")])
    assert result.exit_code == 2 and "data root directory is missing" in result.output


def _check_spec(tmp_path: Path, data: str, *args: str):
    """``mg-tune data check SPEC.yaml --output json`` on a spec holding ``data``; returns (result, rows by split)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"data: {data}\n")
    result = CliRunner().invoke(app, ["data", "check", str(spec), "--output", "json", *args])
    return result, ({r["split"]: r for r in json.loads(result.stdout)} if result.exit_code == 0 else None)


def _train2014(rows: dict, key: str) -> int:
    """A count summed over the three splits carved out of COCO's train2014 (train / val / heldout)."""
    return sum(rows[s][key] for s in ("train", "val", "heldout"))


def test_data_check_of_a_spec_counts_what_the_search_loads_voc(voc_root, tmp_path):
    """VOC train: 000001 (dog, person), 000002 (cat, difficult cat), 000003 (car); test: 000007 (sheep), 000008 (horse)."""
    result, rows = _check_spec(tmp_path, f"{{name: voc, root: {voc_root}, options: {{difficult: false}}}}")
    assert result.exit_code == 0, result.output
    train, test = rows["train"], rows["test"]
    assert (train["images"], train["boxes"], train["difficult"], train["crowd"], train["unlabeled"], train["with_segmentation"]) == (3, 4, 1, 0, 0, 2)
    assert train["classes_without_boxes"] == 20 - 4 and train["class:cat"] == 1  # the difficult cat is dropped, its image keeps the other
    assert (test["images"], test["boxes"], test["difficult"], test["classes_without_boxes"]) == (2, 2, 0, 18)
    assert rows["val"]["images"] + rows["heldout"]["images"] == 3 and rows["val"]["boxes"] + rows["heldout"]["boxes"] == 4
    result, rows = _check_spec(tmp_path, f"{{name: voc, root: {voc_root}}}")  # difficult objects kept (the default)
    assert (rows["train"]["boxes"], rows["train"]["difficult"]) == (5, 1)
    table = CliRunner().invoke(app, ["data", "check", str(tmp_path / "spec.yaml")])
    assert table.exit_code == 0 and f"ok: every annotation of data of {tmp_path / 'spec.yaml'} is valid" in table.output
    assert "test: no box of aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, diningtable, dog, motorbike, person, pottedplant, sofa, train, tvmonitor" in table.output


def test_data_check_of_a_spec_counts_what_the_search_loads_coco(coco_root, tmp_path):
    """COCO train2014: image 2 holds a dog crowd and a dog, image 3 only a person crowd, image 4 nothing."""
    result, rows = _check_spec(tmp_path, f"{{name: coco, root: {coco_root}, options: {{val_fraction: 0.3}}}}")
    assert result.exit_code == 0, result.output
    counts = {k: _train2014(rows, k) for k in ("images", "boxes", "crowd", "unlabeled", "with_segmentation", "class:person")}
    assert counts == {"images": 10, "boxes": 9, "crowd": 2, "unlabeled": 1, "with_segmentation": 8, "class:person": 2}  # crowd: label only
    test = rows["test"]  # val2014 keeps every image: 7 (a dog), 8 (nothing)
    assert (test["images"], test["boxes"], test["crowd"], test["unlabeled"], test["classes_without_boxes"]) == (2, 1, 0, 1, 2)
    result, rows = _check_spec(tmp_path, f"{{name: coco, root: {coco_root}, options: {{val_fraction: 0.3, crowd: ignore, empty_images: skip}}}}")
    counts = {k: _train2014(rows, k) for k in ("images", "boxes", "crowd", "unlabeled", "class:person")}
    assert counts == {"images": 8, "boxes": 9, "crowd": 1, "unlabeled": 0, "class:person": 1}  # images 3 and 4 left without labels: skipped
    assert rows["test"]["images"] == 2


def test_data_check_of_a_spec_refuses_flags_and_generated_data(voc_root, tmp_path):
    result, _ = _check_spec(tmp_path, f"{{name: voc, root: {voc_root}}}", "--root", str(voc_root))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: --root cannot be given with a spec ({tmp_path / 'spec.yaml'}): its data block decides; edit data: in the spec"]
    result, _ = _check_spec(tmp_path, "{variant: multilabel}")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'spec.yaml'}: data.name: 'textbox' is generated, not read from disk; data check reads voc, coco, waterbirds"]
    result, _ = _check_spec(tmp_path, f"{{name: voc, root: {tmp_path / 'nowhere'}}}")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: data root directory is missing"]


def test_segmentation_objective_without_segmented_val_images_is_refused_before_anything_is_written(voc_root, tmp_path):
    """The fixture's SegmentationClass/Object files belong to train images only: the val split has none."""
    spec = tmp_path / "voc.yaml"
    spec.write_text(f"data: {{name: voc, root: {voc_root}}}\nobjectives: [f1, epg, seg_epg]\n")
    store = tmp_path / "mlflow.db"
    result = CliRunner().invoke(app, ["search", str(spec), "--tracking-uri", f"sqlite:///{store}"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {spec}: objectives.2.name: 'seg_epg' needs segmentation masks, but no image of the val split of voc at {voc_root} has one"
    ]
    assert not store.exists()


@pytest.mark.parametrize(
    "name,extra",
    [
        ("voc", {"mask_kind": "segmentation"}),
        ("coco", {"options": {"val_fraction": 0.3}, "augment": True}),
        ("waterbirds", {"variant": "reversed", "annotation_fraction": 0.5}),
    ],
)
def test_trainer_runs_end_to_end_on_each_fixture(name, extra, request, tmp_path):
    root = request.getfixturevalue(f"{name}_root")
    config = TrainConfig(
        data=DataConfig(name=name, root=str(root), image_size=S, **extra),
        model="smerf_cnn", attribution="ixg", layer="input", loss="energy", lam=1.0, epochs=1, batch_size=4, overlay_images=2,
    )
    result = train(config, checkpoint_dir=tmp_path / "run")
    metrics = result.final_metrics
    assert metrics["train_loc_loss"] != 0.0
    for key in ("f1", "map", "epg", "iou", "train_loss"):
        assert math.isfinite(metrics[key]), key
    # what the data set cannot measure is absent, not 0.0: the VOC fixture's val images have no
    # SegmentationClass/Object file, Waterbirds has no masks; PAFL/SAFL belong to SMERF's settings
    absent = {"voc": {"seg_epg", "x_seg_epg", "pafl", "safl", "accuracy"}, "coco": {"pafl", "safl", "accuracy"}, "waterbirds": {"seg_epg", "x_seg_epg", "pafl", "safl"}}
    present = {"voc": set(), "coco": {"seg_epg", "x_seg_epg"}, "waterbirds": {"accuracy", "worst_group_acc", "mean_group_acc"}}
    assert not absent[name] & set(metrics) and present[name] <= set(metrics), sorted(metrics)
    batch = next(iter(DataLoader(build_split(config.data, "val"), batch_size=2)))
    assert batch["masks"].dtype == torch.uint8 and batch["image"].shape[-1] == S


# ----------------------------------------------------------------------------------------------
# s3:// roots: mirrored into a node-local cache (mg_tune.data.remote)


def _upload_tree(endpoint: str, bucket: str, local: Path, prefix: str) -> int:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    files = [p for p in sorted(local.rglob("*")) if p.is_file()]
    for p in files:
        client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local).as_posix()}")
    return len(files)


def _cache_state(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every cached file: a download replaces the file, so both change."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _sample_key(dataset, i):
    sample = dataset[i]
    return Path(dataset.records[i].image).stem, {k: v for k, v in sample.items() if k != "index"}


def test_s3_root_is_mirrored_once_and_loads_like_the_local_copy(voc_root, s3_endpoint, s3_bucket, tmp_path, monkeypatch):
    from mg_tune.data import remote

    monkeypatch.setenv("MG_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    remote.forget_synced()
    n = _upload_tree(s3_endpoint, s3_bucket, voc_root, "voc/VOCdevkit")
    uri = f"s3://{s3_bucket}/voc/VOCdevkit"
    local, remote_data = (DataConfig(name="voc", root=root, image_size=S) for root in (str(voc_root), uri))
    for split in ("train", "val", "heldout", "test"):
        a, b = build_split(local, split), build_split(remote_data, split)
        assert len(a) == len(b)
        for i in range(len(a)):
            (id_a, sa), (id_b, sb) = _sample_key(a, i), _sample_key(b, i)
            assert id_a == id_b and sa.keys() == sb.keys()
            assert all(torch.equal(sa[k], sb[k]) for k in sa), (split, id_a)
    cache = tmp_path / "cache" / "datasets" / s3_bucket / "voc" / "VOCdevkit"
    assert all(Path(r.image).is_relative_to(cache) for r in b.records)
    before = _cache_state(cache)
    assert len(before) == n
    remote.forget_synced()  # a new process on the same node: lists the bucket, downloads nothing
    assert remote.local_root(uri) == cache
    assert _cache_state(cache) == before
    assert remote.sync_s3(uri, cache, s3_endpoint) == remote.SyncStats(listed=n, downloaded=0, bytes=0)
    # an object that changed in S3 is fetched again, only that one
    changed = voc_root / "VOC2007" / "ImageSets" / "Main" / "dog_train.txt"
    changed.write_text("000001  1\n000002 -1\n")
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(str(changed), s3_bucket, "voc/VOCdevkit/VOC2007/ImageSets/Main/dog_train.txt")
    stats = remote.sync_s3(uri, cache, s3_endpoint)
    assert stats.downloaded == 1 and (cache / "VOC2007/ImageSets/Main/dog_train.txt").read_text() == changed.read_text()
    remote.forget_synced()


def test_concurrent_syncs_on_one_node_download_each_object_once(voc_root, s3_endpoint, s3_bucket, tmp_path):
    import threading

    from mg_tune.data import remote

    n = _upload_tree(s3_endpoint, s3_bucket, voc_root, "devkit")
    results: list[remote.SyncStats] = []
    threads = [threading.Thread(target=lambda: results.append(remote.sync_s3(f"s3://{s3_bucket}/devkit", tmp_path / "mirror", s3_endpoint))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.downloaded for r in results) == [0, 0, n]  # the lock file serialises them
    assert not list((tmp_path / "mirror").rglob(".*.part"))


def test_s3_root_errors_are_one_line_naming_the_uri(s3_endpoint, s3_bucket, tmp_path, monkeypatch):
    from mg_tune.data import remote

    monkeypatch.setenv("MG_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    remote.forget_synced()
    missing = f"s3://{s3_bucket}-absent/voc"
    assert "no such bucket" in _one_line_error(DataConfig(name="voc", root=missing), name=missing)
    empty = f"s3://{s3_bucket}/nothing/here"
    assert "no objects" in _one_line_error(DataConfig(name="voc", root=empty), name=empty)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = f"s3://{s3_bucket}/voc"
    assert "no AWS credentials" in _one_line_error(DataConfig(name="voc", root=uri), name=uri)
    remote.forget_synced()

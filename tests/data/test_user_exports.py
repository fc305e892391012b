"""Real data as users bring it: per-split COCO exports, labelling tools' VOC and COCO quirks, Windows text files,
truncated images, duplicates and leaks between splits, degenerate groups. Fixtures in the official formats
(``tests/helpers/data_formats.py``); every expected label, box and count below is worked out by hand from them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from mg_tune.cli import app
from mg_tune.config import DataConfig
from mg_tune.data import DatasetError, REAL_LOADERS, build_split, check_dataset
from mg_tune.data.card import check_classes, dataset_card
from mg_tune.data.masks import box_mask
from mg_tune.search.split_sizes import small_splits

from helpers.data_formats import S, VOC_SETS, _image, coco_train_json, coco_val_json, coco_val_json_renumbered, truncate_jpeg, voc_xml, windows_text, write_coco, write_voc, write_waterbirds


@pytest.fixture(autouse=True)
def _fresh_indexes():
    """Every test writes its own files: forget the indexes parsed by the one before."""
    for loader in REAL_LOADERS.values():
        loader.cache_clear()


def _error(data: DataConfig, split: str = "train") -> str:
    with pytest.raises(DatasetError) as info:
        build_split(data, split)
    message = str(info.value)
    assert "\n" not in message
    return message


def _check(*args: str):
    """``mg-tune data check ... --output json``: (result, rows by split, warning lines)."""
    result = CliRunner().invoke(app, ["data", "check", *args, "--output", "json"])
    rows = {r["split"]: r for r in json.loads(result.stdout)} if result.exit_code == 0 else None
    warned = [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.startswith("warning:")]
    return result, rows, [w for w in warned if "label no image of any split" not in w]  # the VOC fixture uses 9 of the 20 classes


# ----------------------------------------------------------------------------------------------
# 1. COCO classes are matched by name across the split files


def test_a_val_file_numbering_categories_by_first_appearance_keeps_each_class_index(tmp_path):
    """Train numbers person 1, car 3, dog 18; val numbers dog 1, person 2, car 3. Classes (person, car, dog) in both."""
    root = write_coco(tmp_path, val=coco_val_json_renumbered())
    data = DataConfig(name="coco", root=str(root), image_size=S)
    train, test = build_split(data, "train"), build_split(data, "test")
    assert train.info.class_names == test.info.class_names == ("person", "car", "dog")
    assert test.boxes(0) == [(2, 1, 1, 11, 11), (0, 20, 20, 30, 30)]  # image 7: the dog, the person
    assert test.boxes(1) == [(1, 5, 5, 13, 13)]  # image 8: the car
    seven, eight = test[0], test[1]
    assert seven["labels"].tolist() == [1.0, 0.0, 1.0] and eight["labels"].tolist() == [0.0, 1.0, 0.0]
    assert torch.equal(seven["masks"][2], box_mask([(1, 1, 11, 11)], S, S).to(torch.uint8))
    assert torch.equal(seven["masks"][0], box_mask([(20, 20, 30, 30)], S, S).to(torch.uint8))
    assert not seven["masks"][1].any() and torch.equal(eight["masks"][1], box_mask([(5, 5, 13, 13)], S, S).to(torch.uint8))
    assert torch.equal(seven["seg_masks"][2], box_mask([(1, 1, 11, 11)], S, S).to(torch.uint8))  # the dog's polygon
    result, rows, _ = _check("coco", "--root", str(root), "-o", "val_fraction=0.3")
    assert result.exit_code == 0, result.output
    assert [rows["test"][f"class:{name}"] for name in ("person", "car", "dog")] == [1, 1, 1]


def test_a_name_only_the_val_file_lists_is_appended_and_one_it_annotates_is_refused(tmp_path):
    val = coco_val_json()
    val["categories"] = [*val["categories"], {"id": 90, "name": "zebra"}]
    root = write_coco(tmp_path, val=val)
    data = DataConfig(name="coco", root=str(root), image_size=S)
    assert build_split(data, "train").info.class_names == build_split(data, "test").info.class_names == ("person", "car", "dog", "zebra")
    val["annotations"].append({"id": 2, "image_id": 8, "category_id": 90, "bbox": [1, 1, 5, 5]})
    root = write_coco(tmp_path / "annotated", val=val)
    val_file = root / "annotations" / "instances_val2014.json"
    assert _error(DataConfig(name="coco", root=str(root))) == (
        f"{val_file}: category 'zebra' (id 90) is annotated in the test split, but {root / 'annotations' / 'instances_train2014.json'} "
        "does not list it: a model trained on train2014 has no output for it"
    )


@pytest.mark.parametrize(
    "categories,problem",
    [
        ([{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 4, "name": "car"}, {"id": 18, "name": "dog"}], "categories[2]: category 'car' has two ids (3 and 4); classes are matched by name"),
        ([{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 3, "name": "truck"}, {"id": 18, "name": "dog"}], "categories[2]: category id 3 is named both 'car' and 'truck'"),
    ],
    ids=["name-with-two-ids", "id-with-two-names"],
)
def test_categories_that_cannot_be_told_apart_are_refused(tmp_path, categories, problem):
    train = coco_train_json()
    train["categories"] = categories
    root = write_coco(tmp_path, train=train)
    assert _error(DataConfig(name="coco", root=str(root))) == f"{root / 'annotations' / 'instances_train2014.json'}: {problem}"


def test_coco_image_ids_of_mixed_types_and_a_repeated_id(tmp_path):
    """Ids 7 (a number) and "img-8" (a string): numbers first, then strings; an id listed twice is refused."""
    val = coco_val_json()
    val["images"][1]["id"] = "img-8"
    val["annotations"].append({"id": 2, "image_id": "img-8", "category_id": 3, "bbox": [2, 2, 4, 4]})
    root = write_coco(tmp_path, val=val)
    test = build_split(DataConfig(name="coco", root=str(root)), "test")
    assert [Path(r.image).name for r in test.records] == ["COCO_val2014_000000000007.jpg", "COCO_val2014_000000000008.jpg"]
    assert test.boxes(1) == [(1, 2, 2, 6, 6)]
    val["images"][1]["id"] = 7
    root = write_coco(tmp_path / "twice", val=val)
    assert _error(DataConfig(name="coco", root=str(root)), "test").endswith("instances_val2014.json: images[1]: image id 7 is listed twice (annotations could not tell the two apart)")


def test_a_placeholder_category_no_image_has_is_warned_about(tmp_path):
    """Roboflow's COCO exports list their supercategory as category 0, which no annotation uses: an output nothing trains."""
    train = coco_train_json()
    train["categories"] = [{"id": 0, "name": "animals-and-cars", "supercategory": "none"}, *train["categories"]]
    root = write_coco(tmp_path, train=train)
    result = CliRunner().invoke(app, ["data", "check", "coco", "--root", str(root), "-o", "val_fraction=0.3"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: COCO at {root}: class(es) 'animals-and-cars' label no image of any split: the model gets an output for each that nothing trains or tests (a placeholder category of an export?)"
    ]


def test_a_box_only_export_has_no_segmentation_and_partial_masks_are_not_used(tmp_path):
    """Label Studio / Roboflow style: no iscrowd, area or supercategory, "segmentation": []. Image 1 keeps one polygon and one []."""
    train = coco_train_json()
    for ann in train["annotations"]:
        for key in ("iscrowd", "area"):
            ann.pop(key, None)
        if ann["image_id"] != 1:
            ann["segmentation"] = []
    train["annotations"][1]["segmentation"] = []  # image 1's car: box only, its person keeps a polygon
    for cat in train["categories"]:
        cat.pop("supercategory")
    root = write_coco(tmp_path, train=train)
    data = DataConfig(name="coco", root=str(root), image_size=S, options={"val_fraction": 0.3})
    records = [r for s in ("train", "val", "heldout") for r in build_split(data, s).records]
    assert all(r.seg is None for r in records)  # masks for the person only would score the car against nothing
    one = next(r for r in records if r.image.endswith("000000000001.jpg"))
    assert one.boxes == ((0, 10, 10, 30, 40), (1, 40, 2, 61, 18))
    two = next(r for r in records if r.image.endswith("000000000002.jpg"))  # its dog crowd has no iscrowd now: a box
    assert two.boxes == ((2, 5, 40, 30, 60), (2, 30, 5, 40, 15)) and two.crowd == 0


# ----------------------------------------------------------------------------------------------
# 4. unreadable images


def test_a_truncated_jpeg_is_found_by_data_check_and_skipped_and_counted_with_skip(tmp_path):
    root = write_voc(tmp_path)
    jpeg = root / "VOC2007" / "JPEGImages" / "000002.jpg"
    truncate_jpeg(jpeg)
    result = CliRunner().invoke(app, ["data", "check", "voc", "--root", str(root)])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: {jpeg}: not a readable image (image file is truncated")
    assert len(result.output.strip().splitlines()) == 1
    result, rows, warned = _check("voc", "--root", str(root), "--on-bad-sample", "skip")
    assert result.exit_code == 0, result.output
    assert rows["train"]["images"] == 2 and rows["train"]["class:cat"] == 0  # 000002 (two cats) skipped
    assert len(warned) == 1 and warned[0].startswith(f"VOC train images: skipped 1 bad sample(s) (on_bad_sample='skip'); first: {jpeg}: not a readable image")
    assert "2 warnings above" in result.stderr  # and the VOC fixture's unused classes
    skip = DataConfig(name="voc", root=str(root), image_size=S, on_bad_sample="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = build_split(skip, "train")
    assert [Path(r.image).stem for r in train.records] == ["000001", "000003"]
    assert [str(w.message) for w in caught if "skipped" in str(w.message)][0].startswith("VOC train images: skipped 1 bad sample(s)")
    batches = list(DataLoader(train, batch_size=2, num_workers=1))  # every kept sample decodes, in a worker process too
    assert len(batches) == 1 and batches[0]["labels"][:, 14].tolist() == [1.0, 0.0]  # person in 000001 only
    error = build_split(DataConfig(name="voc", root=str(root), image_size=S), "train")  # default: decoded when needed
    assert len(error) == 3
    with pytest.raises(DatasetError, match="image file is truncated"):
        error[1]


# ----------------------------------------------------------------------------------------------
# 6. ids and files as users have them


def test_voc_roots_in_torchvisions_layout_and_ids_with_spaces_from_windows_files(tmp_path):
    """root may hold VOCdevkit/ (torchvision), be VOCdevkit, or be VOC2007; ImageSets written by Notepad (CRLF + BOM, UTF-16) load."""
    devkit = write_voc(tmp_path)
    base = devkit / "VOC2007"
    spaced = "2008 beach photo"
    (base / "Annotations" / f"{spaced}.xml").write_text(voc_xml(spaced, S, S, [("boat", 3, 4, 30, 20, 0)]).replace(f"{spaced}.jpg", f"{spaced}.jpg"))
    _image(base / "JPEGImages" / f"{spaced}.jpg", S, S)
    main = base / "ImageSets" / "Main"
    (main / "train.txt").write_bytes(windows_text("".join(f"{i}\n" for i in [*VOC_SETS["train"], spaced])))
    (main / "test.txt").write_bytes(windows_text("".join(f"{i}\n" for i in VOC_SETS["test"]), "utf-16"))
    for root in (tmp_path, devkit, base):
        data = DataConfig(name="voc", root=str(root), image_size=S)
        train = build_split(data, "train")
        assert [Path(r.image).name for r in train.records] == ["000001.jpg", "000002.jpg", "000003.jpg", f"{spaced}.jpg"]
        assert train.boxes(3) == [(3, 2, 3, 30, 20)]  # boat, 1-based inclusive -> 0-based exclusive
        assert [Path(r.image).stem for r in build_split(data, "test").records] == VOC_SETS["test"]


def test_voc_xml_as_labelling_tools_write_it(tmp_path):
    """CVAT: real-valued coordinates; 0-based tools: xmin 0; LabelMe converters: no <size> (read from the image)."""
    root = write_voc(tmp_path)
    annotations = root / "VOC2007" / "Annotations"
    (annotations / "000001.xml").write_text(voc_xml("000001", S, S, [("dog", 10.6, 20.2, 40.5, 50.0, 0), ("person", 0, 0, 64, 20, 0)]))
    (annotations / "000003.xml").write_text(voc_xml("000003", S, S, [("car", 1, 1, 64.4, 64, 0)]).replace("<size><width>64</width><height>64</height><depth>3</depth></size>", ""))
    (annotations / "000002.xml").write_text(voc_xml("000002", 0, 0, [("cat", 5, 5, 20, 20, 0)]))  # <width>0</width>
    train = build_split(DataConfig(name="voc", root=str(root), image_size=S), "train")
    assert train.boxes(0) == [(11, 9, 19, 41, 50), (14, 0, 0, 64, 20)]  # floor(10.6)-1, floor(20.2)-1, ceil(40.5), 50; xmin 0 -> pixel 0
    assert (train.records[1].width, train.records[1].height) == (S, S) and train.boxes(1) == [(7, 4, 4, 20, 20)]
    assert (train.records[2].width, train.records[2].height) == (S, S) and train.boxes(2) == [(6, 0, 0, 64, 64)]  # 64.4 clipped
    (annotations / "000003.xml").write_text(voc_xml("000003", S, S, [("car", 1, 1, 65, 64, 0)]))
    REAL_LOADERS["voc"].cache_clear()
    assert "box (xmin=1, ymin=1, xmax=65, ymax=64, 1-based) lies outside the 64x64 image" in _error(DataConfig(name="voc", root=str(root)))


def test_duplicates_and_ids_shared_between_train_and_test_are_warned_about(tmp_path):
    root = write_voc(tmp_path)
    main = root / "VOC2007" / "ImageSets" / "Main"
    (main / "train.txt").write_text("000001\n000002\n000003\n000002\n")
    (main / "test.txt").write_text("000007\n000008\n000001\n")
    jpegs = root.resolve() / "VOC2007" / "JPEGImages"
    result, rows, warned = _check("voc", "--root", str(root))
    assert result.exit_code == 0, result.output
    assert rows["train"]["images"] == 4 and rows["test"]["images"] == 3
    assert warned == [
        f"VOC at {root}: the train split lists 1 image(s) more than once (first: {jpegs / '000002.jpg'}); each copy counts as a sample",
        f"LEAK: VOC at {root}: 1 image(s) of the test split are also in the train split (first: {jpegs / '000001.jpg'}); test metrics are measured partly on train images",
    ]


def test_waterbirds_metadata_saved_by_excel_and_notepad(tmp_path):
    """metadata.csv as Excel's "CSV UTF-8" (BOM + CRLF) and as Notepad's "Unicode" (UTF-16): the same records."""
    root = write_waterbirds(tmp_path)
    data = DataConfig(name="waterbirds", root=str(root), image_size=S)
    expected = [(r.image, r.labels, r.boxes, r.group) for r in build_split(data, "train").records]
    metadata = root / "metadata.csv"
    text = metadata.read_text()
    header, rest = text.split("\n", 1)
    columns = header.split(",")  # img_filename first: a BOM left in its name would hide the column
    order = [columns.index(c) for c in ("img_filename", "img_id", "y", "split", "place", "place_filename")]
    reordered = "\n".join(",".join(line.split(",")[i] for i in order) for line in text.strip().split("\n")) + "\n"
    for encoding in ("utf-8-sig", "utf-16"):
        metadata.write_bytes(windows_text(reordered, encoding))
        REAL_LOADERS["waterbirds"].cache_clear()
        assert [(r.image, r.labels, r.boxes, r.group) for r in build_split(data, "train").records] == expected
    assert rest  # the fixture has rows


# ----------------------------------------------------------------------------------------------
# 8. degenerate groups


def test_a_waterbirds_validation_split_of_one_group_cannot_measure_worst_group_accuracy(tmp_path):
    """Val rows 5 (landbird/land), 6 (landbird/water, dropped: minority), 7 and 8 made landbird/land: val holds one group."""
    root = write_waterbirds(tmp_path)
    metadata = root / "metadata.csv"
    lines = metadata.read_text().splitlines()
    for n in (7, 8):  # rows img_id,img_filename,y,split,place,place_filename
        cells = lines[n].split(",")
        cells[2], cells[4] = "0", "0"
        lines[n] = ",".join(cells)
    metadata.write_text("\n".join(lines) + "\n")
    data = DataConfig(name="waterbirds", root=str(root), image_size=S)
    val = build_split(data, "val")
    assert val.group_counts() == {0: 2}
    message = f"waterbirds at {root}: the val split holds only landbird/land (2 images): it cannot measure worst-group accuracy (the minimum over one group is that group's accuracy)"
    assert message in [s.message for s in small_splits(data)]
    result, rows, warned = _check("waterbirds", "--root", str(root))
    assert result.exit_code == 0, result.output
    assert f"Waterbirds at {root}: the val split holds only landbird/land (2 images): it cannot measure worst-group accuracy (the minimum over one group is that group's accuracy)" in warned
    (tmp_path / "fixture").mkdir()
    untouched = write_waterbirds(tmp_path / "fixture")
    REAL_LOADERS["waterbirds"].cache_clear()
    assert not [s for s in small_splits(DataConfig(name="waterbirds", root=str(untouched))) if "worst-group" in s.message]  # val keeps both majority groups
    one_scene = [s.message for s in small_splits(DataConfig(variant="spurious", val_size=1)) if "worst-group" in s.message]  # TextBox draws B/water
    assert one_scene == ["textbox/spurious: the val split holds only B/water (1 image): it cannot measure worst-group accuracy (the minimum over one group is that group's accuracy)"]


def test_check_dataset_returns_the_class_list_that_every_split_uses(tmp_path):
    root = write_coco(tmp_path, val=coco_val_json_renumbered())
    warned: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean data set warns about nothing
        info, reports = check_dataset(DataConfig(name="coco", root=str(root), options={"val_fraction": 0.3}), warn=warned.append)
    assert warned == []
    assert info.class_names == ("person", "car", "dog")
    assert [r.split for r in reports] == ["train", "val", "heldout", "test"]
    assert reports[3].box_counts == [1, 1, 1]


def test_a_model_whose_card_names_other_classes_than_the_files_is_refused(tmp_path):
    """A checkpoint's card records its outputs' classes; files edited since (a category added) would shift them: refused."""
    root = write_coco(tmp_path)
    data = DataConfig(name="coco", root=str(root), options={"val_fraction": 0.3})
    info = build_split(data, "train").info
    card = dataset_card(info, data).to_json()
    check_classes(card, build_split(data, "test").info, "ckpt.pt")  # the same files: nothing to say
    check_classes(None, info, "ckpt.pt")  # a checkpoint without a card: nothing to compare
    val = coco_val_json()
    val["categories"].insert(0, {"id": 90, "name": "zebra"})
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(val))
    REAL_LOADERS["coco"].cache_clear()
    with pytest.raises(DatasetError) as refused:
        check_classes(card, build_split(data, "test").info, "ckpt.pt")
    assert str(refused.value) == (
        "ckpt.pt: the model's classes (3) are not the data set's (4): output 3 is 'absent' in the model's card but 'zebra' "
        "in the data set (were its files changed since training?)"
    )


def test_a_per_class_list_given_as_an_image_set_is_named_as_such(tmp_path):
    """``aeroplane_train.txt`` lines are ``<id> <flag>``: copied over train.txt, the id with its flag names no file."""
    root = write_voc(tmp_path)
    main = root / "VOC2007" / "ImageSets" / "Main"
    (main / "train.txt").write_text("000001  1\n000002 -1\n")
    assert _error(DataConfig(name="voc", root=str(root))) == (
        f"{root / 'VOC2007' / 'Annotations' / '000001  1.xml'}: annotation file is missing (image id '000001  1' listed in {main / 'train.txt'} line 1; "
        "the line looks like one of a per-class list (<id> <1|0|-1>), but ImageSets/Main/{train,val,trainval,test}.txt hold one id per line)"
    )


def test_a_phone_photo_annotated_turned_is_named_with_its_exif_orientation(tmp_path):
    """Stored 80x48 with EXIF orientation 6 (turn 90 degrees): a tool showed it 48x80 and the XML says 48x80."""
    root = write_voc(tmp_path)
    base = root / "VOC2007"
    jpeg = base / "JPEGImages" / "000004.jpg"  # val: stored 80x48
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(jpeg).save(jpeg, exif=exif)
    (base / "Annotations" / "000004.xml").write_text(voc_xml("000004", 48, 80, [("bus", 4, 8, 40, 70, 0)]))
    result = CliRunner().invoke(app, ["data", "check", "voc", "--root", str(root)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {jpeg}: image is 80x48 but {base / 'Annotations' / '000004.xml'} says 48x80; its EXIF orientation turns it by 90 degrees "
        "and the annotation was drawn on the turned image: save the images turned (PIL.ImageOps.exif_transpose)"
    )


def test_an_empty_carved_split_names_the_options_that_size_it(tmp_path):
    """A held-out split carved to nothing says which options carve it (raising one of them is the fix), not just 'empty'."""
    root = write_coco(tmp_path)
    config = DataConfig(name="coco", root=str(root), options={"heldout_fraction": 0.0})
    with pytest.raises(DatasetError, match=r"the 'heldout' split of coco is empty \(it is carved out of the training images by val_fraction=0\.1 and heldout_fraction=0\.0: raise them"):
        build_split(config, "heldout")

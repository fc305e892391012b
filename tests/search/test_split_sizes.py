"""Held-out and validation splits too small for their use: one warning per search, on the console and on
the parent run. Fixture data sets in VOC's and COCO's own formats (writers in ``tests/helpers/data_formats.py``)."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from mg_tune.config import DataConfig
from mg_tune.search.split_sizes import MIN_SPLIT_IMAGES, SMALL_SPLITS_TAG, small_splits, warn_small_splits
from mg_tune.tracking import start_search
from helpers.data_formats import COCO_CATEGORIES, S, _image, coco_train_json, voc_xml, write_coco, write_voc

HELDOUT_USE = "choosing the IoU threshold"
VAL_USE = "measuring the objectives that select the Pareto front"


def test_the_minimum_is_documented_as_twenty():
    assert MIN_SPLIT_IMAGES == 20


def test_the_voc_fixtures_splits_are_too_small_for_its_20_classes(tmp_path):
    """val.txt lists 3 images: the held-out split gets 1 (heldout_fraction 0.1, at least one), val keeps 2."""
    root = write_voc(tmp_path)
    found = small_splits(DataConfig(name="voc", root=str(root)))
    assert [s.message for s in found] == [
        f"voc at {root}: the heldout split has 1 image, fewer than the 20 (max(20, 20 classes)) wanted for {HELDOUT_USE}; expect noisy choices",
        f"voc at {root}: the val split has 2 images, fewer than the 20 (max(20, 20 classes)) wanted for {VAL_USE}; expect noisy choices",
    ]


def write_voc_val(tmp_path: Path, images: int) -> Path:
    """The VOC fixture whose val.txt lists ``images`` images (one dog each)."""
    root = write_voc(tmp_path)
    base = root / "VOC2007"
    ids = [f"1{i:05d}" for i in range(images)]
    for image_id in ids:
        (base / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, S, S, [("dog", 2, 2, 20, 20, 0)]))
        _image(base / "JPEGImages" / f"{image_id}.jpg", S, S)
    (base / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_splits_of_the_minimum_size_do_not_warn_one_image_less_does(tmp_path):
    """heldout_fraction 0.5 of val.txt: 40 images give 20 + 20, 39 give a held-out split of round(19.5) = 20 and a val split of 19."""
    enough = write_voc_val(tmp_path / "40", 40)
    assert small_splits(DataConfig(name="voc", root=str(enough), options={"heldout_fraction": 0.5})) == []
    short = write_voc_val(tmp_path / "39", 39)
    assert [s.message for s in small_splits(DataConfig(name="voc", root=str(short), options={"heldout_fraction": 0.5}))] == [
        f"voc at {short}: the val split has 19 images, fewer than the 20 (max(20, 20 classes)) wanted for {VAL_USE}; expect noisy choices",
    ]
    assert small_splits(DataConfig(variant="multilabel")) == []  # TextBox: 300 val, 100 held-out images by default


def test_max_samples_counts_as_in_the_trials(tmp_path):
    """A quick run's max_samples shrinks every split the trials build: the warning says so."""
    root = write_voc_val(tmp_path, 40)
    found = small_splits(DataConfig(name="voc", root=str(root), options={"heldout_fraction": 0.5}, max_samples=5))
    assert [(s.split, s.images) for s in found] == [("heldout", 5), ("val", 5)]


def test_with_more_classes_than_twenty_the_minimum_is_the_number_of_classes(tmp_path):
    """COCO train2014 of 100 images and 30 categories: val_fraction 0.5 gives 50, heldout_fraction 0.5 of them 25 + 25."""
    root = write_coco(tmp_path)
    train = coco_train_json()
    train["categories"] = COCO_CATEGORIES + [{"id": 100 + k, "name": f"extra{k}", "supercategory": "x"} for k in range(27)]
    for i in range(11, 101):
        train["images"].append({"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": S, "height": S})
        _image(root / "train2014" / f"COCO_train2014_{i:012d}.jpg", S, S)
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(train))
    found = small_splits(DataConfig(name="coco", root=str(root), options={"val_fraction": 0.5, "heldout_fraction": 0.5}))
    assert [s.message for s in found] == [
        f"coco at {root}: the heldout split has 25 images, fewer than the 30 (max(20, 30 classes)) wanted for {HELDOUT_USE}; expect noisy choices",
        f"coco at {root}: the val split has 25 images, fewer than the 30 (max(20, 30 classes)) wanted for {VAL_USE}; expect noisy choices",
    ]


def test_a_search_warns_once_on_the_console_and_tags_its_parent_run(tmp_path, new_mlflow_store, capsys):
    root = write_voc(tmp_path)
    uri = new_mlflow_store()
    search = start_search("voc-small", {"trials": 1}, "trials: 1\n", uri, resume=False)
    found = warn_small_splits(DataConfig(name="voc", root=str(root)), search)
    assert len(found) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"warning: {s.message}" for s in found]
    tags = MlflowClient(uri).get_run(search.run_id).data.tags
    assert tags[SMALL_SPLITS_TAG] == "\n".join(s.message for s in found)

    quiet = start_search("textbox-large", {"trials": 1}, "trials: 1\n", uri, resume=False)
    assert warn_small_splits(DataConfig(variant="multilabel"), quiet) == []
    assert capsys.readouterr().err == ""
    assert SMALL_SPLITS_TAG not in MlflowClient(uri).get_run(quiet.run_id).data.tags

"""Images without objects (background images, hard negatives) are legal in every split and every batch.

Per-box metrics average over the maps that exist; a split with no box at all has no EPG or IoU (absent
with a warning, never 0.0), and a held-out split without a box chooses no IoU threshold (a warning,
then the documented fallback). Training, the overlay and the search run on a VOC copy whose val split
starts with background images (VOC's own format: an annotation without ``<object>``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data import build_split
from mg_tune.guidance import metrics as M
from mg_tune.guidance.attribution import attribute
from mg_tune.models import build_model
from mg_tune.split_eval import FALLBACK_IOU_THRESHOLD, SplitEvaluation, choose_iou_threshold, evaluate_split, pooled_iou_threshold
from mg_tune.train import train

from helpers.data_formats import S, VOC_BACKGROUNDS as BACKGROUNDS, VOC_SETS, write_voc_backgrounds

TEXTBOX = DataConfig(variant="multilabel", train_size=8, val_size=8, heldout_size=8, test_size=8)


def batches(with_boxes: bool, first: int, n: int) -> dict:
    """One batch of ``n`` TextBox val images; without boxes: no class, no mask (what a background image gives)."""
    batch = next(iter(DataLoader(Subset(build_split(TEXTBOX, "val"), range(first, first + n)), batch_size=n)))
    if not with_boxes:
        for key in ("labels", "masks", "seg_masks", "secondary_mask", "has_mask"):
            batch[key] = torch.zeros_like(batch[key])
    return batch


def evaluate(model, loader, **kwargs):
    return evaluate_split(model, loader, "ixg", "mid2", multilabel=True, **kwargs)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("smerf_cnn", build_split(TEXTBOX, "val").info.num_classes).eval()


def test_a_leading_batch_without_boxes_leaves_the_per_box_metrics_of_the_rest(model):
    background, rest = batches(False, 0, 4), batches(True, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rest has boxes: nothing to warn about
        both = evaluate(model, [background, rest], iou_threshold=0.3).metrics
    alone = evaluate(model, [rest], iou_threshold=0.3).metrics
    assert both["epg"] == alone["epg"] and both["iou"] == alone["iou"] and both["iou_threshold"] == 0.3
    # by hand: the mean of EPG / IoU over one map per (image, ground-truth class) of the rest
    rows, classes = rest["labels"].nonzero(as_tuple=True)
    maps = attribute(model, rest["image"][rows], classes, "ixg", "mid2", size=(rest["masks"].shape[-2:]), target="logit").maps.detach()
    masks = rest["masks"][rows, classes].float()
    assert both["epg"] == pytest.approx(M.epg(maps, masks).mean().item(), abs=1e-6)
    assert both["iou"] == pytest.approx(M.iou(maps, masks, 0.3).mean().item(), abs=1e-6)
    assert both["f1"] != alone["f1"]  # the background images still count for classification


def test_a_split_without_any_box_has_no_epg_or_iou_and_says_why(model):
    loader = [batches(False, 0, 4), batches(False, 4, 4)]
    with pytest.warns(UserWarning) as caught:
        metrics = evaluate(model, loader, iou_threshold=0.3, name="the val split").metrics
    assert [str(w.message) for w in caught] == [
        "the val split has no image with a box of its class (8 images): EPG and IoU are not measured on it (absent, not 0)",
        "the val split has no positive label (8 images): mAP is not measured on it (absent, not 0)",
    ]
    assert not {"epg", "iou", "iou_threshold", "map"} & set(metrics) and 0.0 <= metrics["f1"] <= 1.0
    heldout = evaluate(model, loader)  # choosing a threshold: nothing to choose on
    assert heldout.best_iou_threshold() is None and heldout.iou_maps == 0
    with pytest.warns(UserWarning, match="the held-out split has no image with a box of its class: no IoU threshold can be chosen"):
        assert choose_iou_threshold(None, lambda: heldout) == FALLBACK_IOU_THRESHOLD == 0.5
    with pytest.warns(UserWarning, match="the pooled held-out split has no image with a box"):
        assert pooled_iou_threshold([heldout, SplitEvaluation({}, heldout.thresholds, heldout.iou_sums, 0)]) == 0.5
    assert choose_iou_threshold(0.3, lambda: heldout) == 0.3  # a fixed threshold needs no held-out box


def voc_config(root: Path, **fixed) -> TrainConfig:
    data = DataConfig(name="voc", root=str(root), image_size=S, options={"heldout_fraction": 0.34, "split_seed": 0})
    return TrainConfig(data=data, model="smerf_cnn", loss="energy", lam=1.0, epochs=1, batch_size=2, device="cpu", **fixed)


def test_training_with_leading_background_images_finishes_with_its_overlay(tmp_path):
    root = write_voc_backgrounds(tmp_path, BACKGROUNDS + VOC_SETS["val"])
    config = voc_config(root, overlay_images=4)
    val = build_split(config.data, "val")
    assert [len(val[i]["labels"].nonzero()) for i in range(2)] == [0, 0]  # the val split starts with background images
    result = train(config, checkpoint_dir=tmp_path / "run")
    (epoch,) = result.history
    assert {"f1", "epg", "iou", "iou_threshold"} <= set(epoch.metrics)
    picture = np.asarray(Image.open(epoch.overlay))
    assert picture.shape == (4 * S * 2, 2 * S * 2, 3)  # one row of two panels per image, backgrounds included


def test_training_on_a_val_split_of_background_images_only_logs_no_epg_or_iou(tmp_path):
    root = write_voc_backgrounds(tmp_path, BACKGROUNDS)
    config = voc_config(root, overlay_images=2)
    with pytest.warns(UserWarning) as caught:
        (epoch,) = train(config, checkpoint_dir=tmp_path / "run").history
    said = [str(w.message) for w in caught]
    assert any(m.startswith("the held-out split has no image with a box of its class: no IoU threshold can be chosen") for m in said)
    assert any(m.startswith("the val split has no image with a box of its class") for m in said)
    assert not {"epg", "iou", "iou_threshold"} & set(epoch.metrics) and "f1" in epoch.metrics
    assert epoch.overlay is not None and epoch.overlay.is_file()

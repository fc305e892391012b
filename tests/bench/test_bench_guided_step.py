"""bench/guided_step.py's baseline (the authors' training step, issue 22 item 3) computes what mg-tune computes."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import guided_step  # noqa: E402
from mg_tune.guidance.attribution import attribute  # noqa: E402


def _args(**kw):
    return argparse.Namespace(**({"batch_size": 4, "device": "cpu", "seed": 0, "lam": 1.0} | kw))


@pytest.mark.parametrize("method", ["ixg", "gradcam"])
@pytest.mark.parametrize("layer", ["input", "mid2"])
def test_authors_maps_equal_mg_tune_maps(method, layer):
    base = guided_step.AuthorsStep("smerf_cnn", method, layer, 1.0, 2, False, _args())
    batch = guided_step.make_batch(2, 4, seed=0)
    classes = batch["labels"].argmax(1)
    logits, maps = base.attributions(batch["image"].clone().requires_grad_(True), classes)
    ours = attribute(base.model, batch["image"], classes, method, layer, size=(64, 64), target="logit")
    torch.testing.assert_close(logits, ours.logits)
    torch.testing.assert_close(maps, ours.maps, rtol=1e-4, atol=1e-6)


def test_batch_boxes_match_masks_and_annotated_share():
    batch = guided_step.make_batch(3, 8, seed=1, annotated=0.5, image_size=32)
    assert batch["image"].shape == (8, 3, 32, 32)
    assert batch["has_mask"].tolist() == [True] * 4 + [False] * 4
    for n, boxes in enumerate(batch["boxes"]):
        if n >= 4:
            assert boxes is None
            continue
        ((k, x0, y0, x1, y1),) = boxes
        assert batch["labels"][n, k] == 1
        assert batch["masks"][n, k].sum() == (x1 - x0) * (y1 - y0) == batch["masks"][n, k, y0:y1, x0:x1].sum()


def test_baseline_and_levers_step():
    args = _args(steps=1, repeats=2, warmup=0, annotated=1.0, baseline=True, levers=["none", "bf16"])
    steppers, trainer = guided_step.build_steppers("smerf", "ixg", "input", args, {})
    assert set(steppers) == {"guided[none]", "plain[none]", "guided[bf16]", "plain[bf16]", "baseline"}
    rounds = guided_step.time_interleaved(steppers, trainer.device, args)
    row = guided_step.summarise(rounds, "bf16")
    assert row["vs_baseline"] > 0 and row["baseline_ms"] > 0 and row["ratio"] > 0

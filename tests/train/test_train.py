"""The training core: determinism, checkpoints, resume, divergence, annotation fraction."""

import math

import pytest
import torch

from mg_tune.checkpoint import load_checkpoint
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.train import DivergedError, choose_target_classes, train

TINY = DataConfig(variant="multilabel", train_size=48, val_size=24, heldout_size=16, test_size=16)


def _config(**overrides):
    base = dict(data=TINY, model="smerf_cnn", attribution="ixg", layer="mid2", loss="energy", lam=1.0, epochs=2, batch_size=16, overlay_images=3)
    base.update(overrides)
    return TrainConfig(**base)


def test_same_seed_gives_identical_metrics_and_weights(tmp_path):
    a = train(_config(), checkpoint_dir=tmp_path / "a")
    b = train(_config(), checkpoint_dir=tmp_path / "b")
    assert [e.metrics for e in a.history] == [e.metrics for e in b.history]
    wa, wb = load_checkpoint(a.history[-1].checkpoint)["model"], load_checkpoint(b.history[-1].checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(_config(seed=1), checkpoint_dir=tmp_path / "c")
    assert c.history[-1].metrics != a.history[-1].metrics


def test_every_epoch_has_checkpoint_overlay_and_all_metrics(tmp_path):
    seen = []
    result = train(_config(), callback=seen.append, checkpoint_dir=tmp_path)
    assert [e.epoch for e in seen] == [1, 2] == [e.epoch for e in result.history]
    for e in seen:
        assert e.checkpoint == tmp_path / f"epoch={e.epoch:03d}" / "checkpoint.pt"
        state = load_checkpoint(e.checkpoint)
        assert state["epoch"] == e.epoch and state["metrics"] == e.metrics
        assert state["config"]["lam"] == 1.0 and state["config"]["data"]["variant"] == "multilabel"
        assert set(state) == {"model", "optimizer", "epoch", "metrics", "config", "dataset"}
        assert state["dataset"]["classes"] == ["A", "B", "Box1", "Box2"] and state["dataset"]["image_size"] == 64
        assert e.overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for key in ("f1", "map", "epg", "iou", "iou_threshold", "train_loss", "train_loc_loss"):
            assert math.isfinite(e.metrics[key])
        assert 0 <= e.metrics["epg"] <= 1 and 0 <= e.metrics["f1"] <= 1
        assert e.metrics["iou_threshold"] in [round(0.05 * i, 2) for i in range(1, 20)]


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    full = train(_config(epochs=3), checkpoint_dir=tmp_path / "full")
    first = train(_config(epochs=1), checkpoint_dir=tmp_path / "part")
    rest = train(_config(epochs=3), checkpoint_dir=tmp_path / "part", resume_from=first.history[-1].checkpoint)
    assert [e.epoch for e in rest.history] == [2, 3]
    assert rest.history[-1].metrics == full.history[-1].metrics


def test_absurd_learning_rate_diverges_with_a_clear_error(tmp_path):
    with pytest.raises(DivergedError, match="non-finite loss"):
        train(_config(lr=1e30, lam=1e30, epochs=2), checkpoint_dir=tmp_path)


def test_no_annotations_means_no_localization_loss(tmp_path):
    data = TINY.model_copy(update={"annotation_fraction": 0.0})
    result = train(_config(data=data, epochs=1), checkpoint_dir=tmp_path)
    assert result.history[0].metrics["train_loc_loss"] == 0.0
    unguided = train(_config(lam=0.0, epochs=1), checkpoint_dir=tmp_path / "u")
    # λ>0 without any mask trains exactly like λ=0
    assert result.history[0].metrics == unguided.history[0].metrics


def test_target_classes_are_ground_truth_and_cover_all_positives():
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([choose_target_classes(labels, gen) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {0, 2}
    assert set(draws[:, 1].tolist()) == {1}
    assert 60 < (draws[:, 0] == 0).sum() < 140  # uniform among the positives


def test_unknown_names_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="loss='enrgy' is not one of energy"):
        _config(loss="enrgy")
    with pytest.raises(ValueError, match="layer='mid4'"):
        _config(layer="mid4")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        TrainConfig(lamda=1.0)


def test_mixed_precision_trains_with_finite_metrics(tmp_path):
    result = train(_config(amp=True, epochs=1), checkpoint_dir=tmp_path)
    metrics = result.history[0].metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["train_loc_loss"] < 0  # the energy loss (−EPG) was applied under autocast

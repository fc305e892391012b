"""CRAYON-Pruning: hand-computed neuron ranking, exact zero contributions, last-layer-only fine-tuning, trainer runs."""

import pytest
import torch
from torch import nn

from mg_tune.checkpoint import load_checkpoint
from mg_tune.config import DataConfig, TrainConfig
from mg_tune.split_eval import evaluate_checkpoint
from mg_tune.export import load_model
from mg_tune.guidance.pruning import load_state, neuron_irrelevance, neuron_irrelevant_shares, neurons_to_prune, penultimate, rank_and_prune
from mg_tune.models import StagedModel, build_model
from mg_tune.train import train

# (inside, outside) value of channel c on image n; the left half of each 4x4 image is the relevant box
UV = {
    0: [(2, 0), (1, 0), (0, 0), (0, 0.6)],
    1: [(0, 2), (0, 1), (3, 0), (0, 0)],
    2: [(1, 1), (0, 4), (1, 2), (0, 0)],
}


def _tiny():
    """features = the image itself; penultimate z_c = mean of channel c; logits = W z + b."""
    return StagedModel(nn.Identity(), [nn.Identity()] * 4, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)), "standard")


def _images_and_masks():
    images = torch.zeros(4, 3, 4, 4)
    for c, values in UV.items():
        for n, (u, v) in enumerate(values):
            images[n, c, :, :2] = u
            images[n, c, :, 2:] = v
    masks = torch.zeros(4, 4, 4)
    masks[:, :, :2] = 1
    return images, masks


def test_neuron_ranking_matches_hand_computation():
    # z_nc = (u + v) / 2, IxG map of z_c = F_c / 16, share outside the box = v / (u + v)
    # c0: top-2 images n0 (z=1, s=0), n1 (z=.5, s=0)           -> r = 0
    # c1: top-2 images n2 (z=1.5, s=0), n0 (z=1, s=1)          -> r = 1/2
    # c2: top-2 images n1 (z=2, s=1), n2 (z=1.5, s=2/3)        -> r = 5/6
    images, masks = _images_and_masks()
    model = _tiny()
    body, _ = penultimate(model)
    z, shares = neuron_irrelevant_shares(body, images, masks, chunk=2)
    assert torch.allclose(z[:, 2], torch.tensor([1.0, 2.0, 1.5, 0.0]))
    assert torch.allclose(shares[:, 2], torch.tensor([0.5, 1.0, 2 / 3, 0.0]))
    irrelevance = neuron_irrelevance(z, shares, top_k=2)
    assert torch.allclose(irrelevance, torch.tensor([0.0, 0.5, 5 / 6]))
    assert neurons_to_prune(irrelevance, 1 / 3).tolist() == [2]
    assert neurons_to_prune(irrelevance, 2 / 3).tolist() == [1, 2]
    assert neurons_to_prune(irrelevance, 0.0).tolist() == []
    pruned = rank_and_prune(model, [(images, masks)], 2 / 3, top_k=2)
    assert pruned.tolist() == [1, 2]
    linear = model.head[-1]
    with torch.no_grad():
        logits = model(images)
        z_changed = z.clone()
        z_changed[:, [1, 2]] = 123.0  # whatever the pruned neurons do, the logits do not move
        assert torch.equal(linear(z_changed), logits)
        assert torch.equal(linear.weight[:, [1, 2]], torch.zeros(2, 2))


def test_pruned_state_loads_into_a_fresh_model():
    images, masks = _images_and_masks()
    model = _tiny()
    rank_and_prune(model, [(images, masks)], 1 / 3, top_k=2)
    state = model.state_dict()
    assert set(state) == {"head.2.weight_orig", "head.2.weight_mask", "head.2.bias"}
    fresh = _tiny()
    load_state(fresh, state)
    assert torch.equal(fresh(images), model(images))


def test_models_without_a_linear_head_are_refused():
    with pytest.raises(ValueError, match="head ends in nn.Linear"):
        penultimate(build_model("bcos_cnn", 2))
    with pytest.raises(ValueError, match="set init_checkpoint"):
        TrainConfig(prune_fraction=0.1)
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig(model="bcos_cnn", attribution="bcos", prune_finetune_epochs=1)
    with pytest.raises(ValueError, match="exceeds epochs"):
        TrainConfig(prune_finetune_epochs=3, epochs=2)


DATA = DataConfig(variant="spurious", train_size=128, val_size=32, heldout_size=16, test_size=16, annotation_fraction=0.1)


def _config(**overrides):
    base = dict(data=DATA, model="smerf_cnn", attribution="ixg", layer="input", epochs=2, batch_size=32, overlay_images=0)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """The 'Original' model CRAYON refines: unguided training on the spurious data."""
    result = train(_config(), checkpoint_dir=tmp_path_factory.mktemp("original"))
    return str(result.history[-1].checkpoint)


def test_pruning_then_last_layer_then_crayon_attention(original, tmp_path):
    # CRAYON-Pruning (2 last-layer epochs) combined with CRAYON-Attention (epoch 3, whole model)
    config = _config(
        init_checkpoint=original, prune_fraction=0.25, prune_finetune_epochs=2, epochs=3,
        loss="crayon_attention", lam=1.0, loss_params={"alpha": 1.0, "beta": 1.0},
    )
    result = train(config, checkpoint_dir=tmp_path / "run")
    metrics = [e.metrics for e in result.history]
    assert [m["pruned_neurons"] for m in metrics] == [50.0] * 3  # round(0.25 * 200 hidden units)
    assert metrics[0]["train_loc_loss"] == metrics[1]["train_loc_loss"] == 0.0
    assert metrics[2]["train_loc_loss"] != 0.0

    before = load_checkpoint(original)["model"]
    states = [load_checkpoint(e.checkpoint)["model"] for e in result.history]
    mask = states[0]["head.4.weight_mask"]
    pruned = (mask[0] == 0).nonzero().squeeze(1)
    assert len(pruned) == 50 and torch.equal(mask, mask[:1].expand_as(mask))
    for epoch, state in enumerate(states, start=1):
        assert torch.equal(state["head.4.weight_mask"], mask)
        assert torch.equal((state["head.4.weight_orig"] * mask)[:, pruned], torch.zeros(2, 50))
        unchanged = [k for k in before if k in state and torch.equal(before[k], state[k])]
        if epoch <= 2:  # only the last layer moved
            assert set(unchanged) == set(before) - {"head.4.weight", "head.4.bias"}
            assert not torch.equal(state["head.4.weight_orig"], before["head.4.weight"])
        else:  # CRAYON-Attention trains the whole pruned model
            assert "stages.0.0.weight" not in unchanged

    # the checkpoint reproduces its validation metrics and the pruned neurons contribute nothing
    again = evaluate_checkpoint(str(result.history[-1].checkpoint), split="val")
    assert again["accuracy"] == metrics[-1]["accuracy"] and again["epg"] == pytest.approx(metrics[-1]["epg"], abs=1e-6)
    model = load_model(result.history[-1].checkpoint)
    _, linear = penultimate(model)
    z = torch.rand(5, 200)
    z_changed = z.clone()
    z_changed[:, pruned] = torch.randn(5, 50) * 100
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))  # the pruning hook recomputes the effective weight
        assert torch.equal(linear(z_changed), linear(z))


def test_resume_across_the_pruning_phases_continues_exactly(original, tmp_path):
    config = _config(init_checkpoint=original, prune_fraction=0.1, prune_finetune_epochs=2, epochs=3, loss="energy", lam=1.0)
    full = train(config, checkpoint_dir=tmp_path / "full")
    for stop in (1, 2):  # inside the last-layer phase, and at the switch to guided training
        part = train(config.model_copy(update={"epochs": stop}), checkpoint_dir=tmp_path / f"part{stop}")
        rest = train(config, checkpoint_dir=tmp_path / f"part{stop}", resume_from=part.history[-1].checkpoint)
        assert [e.epoch for e in rest.history] == list(range(stop + 1, 4))
        assert rest.history[-1].metrics == full.history[-1].metrics

"""The model registry: what it records of each model is what building the model gives."""

import pytest
import torch
from torch import nn

from mg_tune.guidance.pruning import penultimate
from mg_tune.models import MODEL_NAMES, MODELS, PRUNABLE_MODELS, ModelEntry, build_model, register_model
from mg_tune.models.staged import StagedModel


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_recorded_family_and_prunability_are_the_built_models(name):
    entry = MODELS[name]
    model = build_model(name, 3)
    assert isinstance(entry, ModelEntry) and entry.name == name
    assert model.family == entry.family
    head_ends_in_linear = isinstance(model.head, nn.Sequential) and isinstance(model.head[-1], nn.Linear)
    assert entry.prunable == head_ends_in_linear == (name in PRUNABLE_MODELS)
    if entry.prunable:
        assert penultimate(model)[1] is model.head[-1]
    else:
        with pytest.raises(ValueError, match="head ends in nn.Linear"):
            penultimate(model)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_only_models_that_take_weights_load_them(name, tmp_path):
    weights = tmp_path / "w.pt"
    conv1 = torch.rand(64, 3, 7, 7)
    torch.save({"conv1.weight": conv1}, weights)  # torchvision's ResNet format: their stem's first convolution
    if MODELS[name].takes_weights:
        assert torch.equal(build_model(name, 3, weights=weights).stages[0][0].weight, conv1)
    else:
        with pytest.raises(ValueError, match=f"model '{name}' takes no weights file"):
            build_model(name, 3, weights=weights)


def test_entries_are_frozen_and_names_unique():
    entry = MODELS["smerf_cnn"]
    with pytest.raises(AttributeError):
        entry.family = "bcos"  # type: ignore[misc]
    with pytest.raises(ValueError, match="already registered"):
        register_model("smerf_cnn", family="standard")(lambda k: entry.builder(k))
    with pytest.raises(ValueError, match="family must be one of"):
        register_model("new_model", family="vit")


def test_a_registered_model_is_buildable_by_name(monkeypatch):
    monkeypatch.setattr("mg_tune.models.registry.MODELS", dict(MODELS))

    @register_model("tiny_test_model", family="standard", prunable=True)
    def tiny(num_classes: int) -> StagedModel:
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))
        return StagedModel(nn.Identity(), [nn.Identity()] * 4, head, "standard")

    from mg_tune.models import registry

    assert "tiny_test_model" in registry.MODEL_NAMES and "tiny_test_model" in registry.PRUNABLE_MODELS
    assert build_model("tiny_test_model", 5)(torch.rand(2, 3, 8, 8)).shape == (2, 5)
    assert "tiny_test_model" not in MODELS


def test_a_model_pickled_before_it_carried_its_classes_still_loads_and_says_what_is_missing(tmp_path):
    """MLflow's pytorch flavor pickles the StagedModel: one registered before ``describe`` existed has no classes in its instance dict."""
    old = build_model("smerf_cnn", 4)
    torch.save(old, tmp_path / "model.pth")
    loaded = torch.load(tmp_path / "model.pth", weights_only=False)
    assert type(loaded) is StagedModel and loaded.classes == () and loaded.image_size is None
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded.eval()(x), old.eval()(x))  # logits, as before
    with pytest.raises(ValueError, match="this model carries no input size .* load it with mg_tune.load_model"):
        loaded.probabilities(x)
    described = build_model("smerf_cnn", 2).describe(["cat", "dog"], multilabel=False, image_size=32).eval()
    torch.save(described, tmp_path / "described.pth")
    again = torch.load(tmp_path / "described.pth", weights_only=False)
    assert again.classes == ("cat", "dog") and again.image_size == 32
    p = again.probabilities(torch.rand(3, 3, 50, 70))  # resized to 32x32, softmax over the 2 classes
    assert p.shape == (3, 2) and torch.allclose(p.sum(dim=1), torch.ones(3))

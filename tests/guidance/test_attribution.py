"""Attribution identities from the papers, checked numerically."""

import pytest
import torch

from mg_tune.guidance.attribution import (
    ATTRIBUTIONS,
    METHODS,
    AttributionMethod,
    BcosContribution,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    attribute,
    check_method,
    register_attribution,
)
from mg_tune.models import LAYERS, build_model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _images(n=3):
    return torch.rand(n, 3, 64, 64)


def test_ixg_equals_input_times_gradient_at_input():
    model = build_model("smerf_cnn", 4).eval()
    x = _images().requires_grad_(True)
    targets = torch.tensor([0, 2, 3])
    maps = attribute(model, x, targets, "ixg", "input").maps
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    expected = (x * grad).sum(1)
    torch.testing.assert_close(maps, expected)


def test_ixg_at_mid_layer_matches_manual_split():
    model = build_model("resnet18", 3).eval()
    x = _images(2)
    targets = torch.tensor([1, 2])
    maps = attribute(model, x, targets, "ixg", "mid2").maps
    h = model.stages[0](model.prepare(x)).detach().requires_grad_(True)
    u = model.stages[1](h)
    out = model.head(model.stages[3](model.stages[2](u)))
    (g,) = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), u)
    torch.testing.assert_close(maps, (u * g).sum(1))


def test_gradcam_is_relu_of_pooled_gradient_weighted_activations():
    model = build_model("smerf_cnn", 2).eval()
    x = _images(2)
    targets = torch.tensor([0, 1])
    maps = attribute(model, x, targets, "gradcam", "final").maps
    feature, logits = model.features_and_logits(x, "final")
    (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), feature)
    expected = torch.relu((g.mean((2, 3), keepdim=True) * feature).sum(1))
    torch.testing.assert_close(maps, expected)
    assert maps.shape == (2, 4, 4) and (maps >= 0).all()


@pytest.mark.parametrize("name", ["bcos_cnn", "bcos_resnet18"])
def test_bcos_contributions_sum_to_logit(name):
    model = build_model(name, 3).eval()
    x = _images(2)
    targets = torch.tensor([2, 0])
    out = attribute(model, x, targets, "bcos", "input")
    logit = out.logits.gather(1, targets[:, None]).squeeze(1) - model.logit_offset
    torch.testing.assert_close(out.maps.sum((1, 2)), logit, rtol=1e-4, atol=1e-4)


def _riemann_intgrad(model, x, targets, steps=32):
    total = torch.zeros_like(x)
    for alpha in (torch.arange(steps, dtype=torch.float32) + 0.5) / steps:
        xa = (alpha * x).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xa).gather(1, targets[:, None]).sum(), xa)
        total += g
    return (x * total / steps).sum(1)


@pytest.mark.parametrize("name", ["x_smerf_cnn", "x_resnet18"])
def test_xdnn_intgrad_equals_numerical_integrated_gradients(name):
    model = build_model(name, 3)
    model.train()
    model(_images(8))  # populate running statistics
    model.eval()
    x = _images(2)
    targets = torch.tensor([1, 2])
    exact = attribute(model, x, targets, "intgrad", "input").maps
    numeric = _riemann_intgrad(model, x, targets)
    torch.testing.assert_close(exact, numeric, rtol=1e-3, atol=1e-5)


def test_intgrad_refuses_models_with_biases():
    with pytest.raises(ValueError, match="intgrad.*x_dnn"):
        attribute(build_model("smerf_cnn", 2), _images(1), torch.tensor([0]), "intgrad", "input")


@pytest.mark.parametrize(
    "name,method",
    [("resnet18", "ixg"), ("resnet18", "gradcam"), ("x_resnet18", "intgrad"), ("bcos_resnet18", "bcos")],
)
@pytest.mark.parametrize("layer", ["input", "mid2"])
def test_batch_maps_equal_one_image_at_a_time_in_eval(name, method, layer):
    # float64: float32 convolutions pick batch-size-dependent kernels whose rounding differs
    model = build_model(name, 3).double()
    model.train()
    model(_images(8).double())  # non-trivial batch-norm statistics
    model.eval()
    x = _images(4).double()
    targets = torch.tensor([0, 1, 2, 1])
    batch = attribute(model, x, targets, method, layer, size=(64, 64)).maps
    single = torch.cat([attribute(model, x[i : i + 1], targets[i : i + 1], method, layer, size=(64, 64)).maps for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layer", LAYERS)
def test_maps_are_resized_to_mask_size_and_differentiable(layer):
    model = build_model("smerf_cnn", 2)
    out = attribute(model, _images(2), torch.tensor([0, 1]), "ixg", layer, create_graph=True, size=(64, 64))
    assert out.maps.shape == (2, 64, 64)
    grads = torch.autograd.grad(out.maps.pow(2).sum(), list(model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_method_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="valid methods: " + ", ".join(METHODS)):
        attribute(build_model("smerf_cnn", 2), _images(1), torch.tensor([0]), "lrp", "input")


def test_log_odds_target_is_the_difference_of_logit_maps_for_two_classes():
    model = build_model("smerf_cnn", 2).eval()
    x = _images(2)
    a, b = torch.tensor([0, 1]), torch.tensor([1, 0])
    log_odds = attribute(model, x, a, "ixg", "mid1", target="log_odds").maps
    difference = attribute(model, x, a, "ixg", "mid1").maps - attribute(model, x, b, "ixg", "mid1").maps
    torch.testing.assert_close(log_odds, difference)


def test_log_odds_target_with_many_classes_is_logit_minus_logsumexp_of_the_others():
    model = build_model("smerf_cnn", 4).eval()
    x = _images(1).requires_grad_(True)
    maps = attribute(model, x, torch.tensor([2]), "ixg", "input", target="log_odds").maps
    logits = model(x)[0]
    score = logits[2] - torch.logsumexp(logits[[0, 1, 3]], dim=0)
    (grad,) = torch.autograd.grad(score, x)
    torch.testing.assert_close(maps, (x * grad).sum(1))


def test_the_registry_names_every_method_and_the_family_it_needs():
    assert METHODS == tuple(ATTRIBUTIONS) == ("ixg", "gradcam", "intgrad", "bcos")
    assert [ATTRIBUTIONS[m] for m in METHODS] == [InputXGradient, LayerGradCam, IntegratedGradients, BcosContribution]
    assert {m: ATTRIBUTIONS[m].required_family for m in METHODS} == {"ixg": None, "gradcam": None, "intgrad": "x_dnn", "bcos": "bcos"}
    assert [m for m in METHODS if not ATTRIBUTIONS[m].logits_trainable] == ["bcos"]
    with pytest.raises(ValueError, match="already registered"):
        register_attribution(type("Again", (AttributionMethod,), {"name": "ixg"}))


@pytest.mark.parametrize(
    "name,method",
    [("smerf_cnn", "ixg"), ("smerf_cnn", "gradcam"), ("x_smerf_cnn", "intgrad"), ("bcos_cnn", "bcos")],
)
@pytest.mark.parametrize("target_kind", ["logit", "log_odds"])
def test_the_objects_give_what_the_function_gives(name, method, target_kind):
    model = build_model(name, 4).eval()
    x, targets = _images(2), torch.tensor([1, 3])
    ours = ATTRIBUTIONS[method](model, "mid1").attribute(x, targets, size=(64, 64), target_kind=target_kind)
    theirs = attribute(model, x, targets, method, "mid1", size=(64, 64), target=target_kind)
    assert torch.equal(ours.maps, theirs.maps) and torch.equal(ours.logits, theirs.logits)


def test_a_method_refuses_a_model_of_another_family_when_built():
    message = "attribution 'bcos' needs a bcos model \\(family of this model: 'standard'\\)"
    with pytest.raises(ValueError, match=message):
        BcosContribution(build_model("smerf_cnn", 2), "input")
    with pytest.raises(ValueError, match=message):
        check_method("bcos", build_model("smerf_cnn", 2))
    with pytest.raises(ValueError, match="unknown attribution target 'probability'"):
        InputXGradient(build_model("smerf_cnn", 2), "input").attribute(_images(1), torch.tensor([0]), target_kind="probability")

"""The paper's protocol, compared with the authors' code (sukrutrao/Model-Guidance) and hand-computed values.

The reference functions below transcribe the authors' formulas (losses.py,
attribution_methods.py ``apply_post_processing``, metrics.py
``BoundingBoxIoUMultiple``, train.py's training step) in a few lines each.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data.textbox import MultiLabelTextBox
from mg_tune.data.textures import TEXTURE_RANGE, texture
from mg_tune.guidance.attribution import attribute
from mg_tune.guidance.losses import energy, l1, layer_loss, ppce, rrr
from mg_tune.guidance.metrics import epg, iou, normalize_abs, normalize_positive
from mg_tune.models import build_model
from mg_tune.train import GuidedTrainer, choose_target_classes


# -- the authors' formulas -------------------------------------------------------------
def authors_post_processing(attr, only_positive, binarize, size):
    """attribution_methods.py: clamp(min=0) if only_positive, / max|A| if binarize, then bilinear resize."""
    attr = attr.unsqueeze(1)
    if only_positive:
        attr = attr.clamp(min=0)
    if binarize:
        peak = attr.abs().amax(dim=(1, 2, 3), keepdim=True)
        attr = torch.where(peak == 0, attr, attr / peak)
    if tuple(attr.shape[-2:]) != tuple(size):
        attr = F.interpolate(attr, size=size, mode="bilinear", align_corners=False)
    return attr.squeeze(1)


def authors_energy(a, m):
    pos = a.clamp(min=0)
    return 1 - (pos * m).sum() / pos.sum()


AUTHORS = {  # loss -> (only_positive, binarize, loss of one post-processed map)
    "energy": (False, False, authors_energy),
    "l1": (True, True, lambda a, m: (a - m).abs().mean()),
    "rrr": (False, True, lambda a, m: a[m == 0].square().sum()),
    "ppce": (True, True, lambda a, m: F.binary_cross_entropy(a[m == 1], torch.ones_like(a[m == 1]))),
}


def authors_iou(a, m, t):
    """metrics.BoundingBoxIoUMultiple: min-max normalised A+, pixel on where > t."""
    pos = a.clamp(min=0)
    hi, lo = pos.max(), pos.min()
    if hi != 0:
        pos = pos / hi if (hi - lo).abs() < 1e-7 else (pos - lo) / (hi - lo)
    on, gt = pos > t, m == 1
    inter = (on & gt).sum().item()
    union = on.sum().item() + gt.sum().item() - inter
    return inter / union if union else 0.0


# -- 1. λ in the paper's units ---------------------------------------------------------
TINY = DataConfig(variant="multilabel", train_size=6, val_size=4, heldout_size=4, test_size=4)


def _trainer_and_batch(loss, layer, lam, reduction):
    config = TrainConfig(data=TINY, model="smerf_cnn", attribution="ixg", layer=layer, loss=loss, lam=lam, lam_reduction=reduction, batch_size=6, device="cpu", overlay_images=0)
    trainer = GuidedTrainer(config)
    return trainer, default_collate([trainer.train_set[i] for i in range(6)])


@pytest.mark.parametrize(("loss", "layer"), [("energy", "input"), ("energy", "mid2"), ("l1", "mid2"), ("rrr", "mid1"), ("ppce", "mid2")])
def test_parameter_gradient_at_the_papers_lambda_equals_the_authors_sum_over_images(loss, layer):
    lam = 5e-3  # a value of the paper's grids
    trainer, batch = _trainer_and_batch(loss, layer, lam, "sum")
    model, params = trainer.model, trainer.params
    total, _, _ = trainer.losses(batch, torch.Generator().manual_seed(3))
    ours = torch.autograd.grad(total, params)

    # train.py: BCEWithLogits + λ · Σ_images loss_loc(post-processed map, boxes of the drawn class)
    targets = choose_target_classes(batch["labels"], torch.Generator().manual_seed(3))
    feature, logits = model.features_and_logits(batch["image"], layer)
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), feature, create_graph=True)
    only_positive, binarize, loss_fn = AUTHORS[loss]
    maps = authors_post_processing((grad * feature).sum(1), only_positive, binarize, (64, 64))
    masks = batch["masks"][torch.arange(6), targets]
    assert (masks.sum((1, 2)) > 0).all()  # every drawn class of multilabel TextBox has its box
    localization = sum(loss_fn(maps[n], masks[n]) for n in range(6))
    reference = F.binary_cross_entropy_with_logits(logits, batch["labels"]) + lam * localization
    theirs = torch.autograd.grad(reference, params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert max(g.abs().max().item() for g in ours) > 0


def test_mean_reduction_at_lambda_times_n_gives_the_sum_reductions_step():
    trainer_sum, batch = _trainer_and_batch("energy", "input", 1e-2, "sum")
    trainer_mean, _ = _trainer_and_batch("energy", "input", 6e-2, "mean")  # 6 annotated images per batch
    sums = torch.autograd.grad(trainer_sum.losses(batch, torch.Generator().manual_seed(0))[0], trainer_sum.params)
    total, _, loc = trainer_mean.losses(batch, torch.Generator().manual_seed(0))
    means = torch.autograd.grad(total, trainer_mean.params)
    for a, b in zip(sums, means):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    _, _, loc_sum = trainer_sum.losses(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loc_sum, 6 * loc)


# -- 2. normalise, then resize -----------------------------------------------------------
def test_l1_normalises_before_resizing_by_hand():
    A = torch.tensor([[[2.0, -1.0], [0.0, 4.0]]])  # a 2x2 layer map, resized 2x to the 4x4 mask
    M = torch.zeros(1, 4, 4)
    M[0, 2:, 2:] = 1
    # ReLU and /max: [[0.5, 0], [0, 1]]; bilinear (align_corners=False) samples rows/columns at
    # source coordinates 0, 0.25, 0.75, 1 (clamped), so pixel (r, s) = 0.5(1-r)(1-s) + r·s:
    expected_map = torch.tensor([
        [0.5, 0.375, 0.125, 0.0],
        [0.375, 0.34375, 0.28125, 0.25],
        [0.125, 0.28125, 0.59375, 0.75],
        [0.0, 0.25, 0.75, 1.0],
    ])
    torch.testing.assert_close(authors_post_processing(A, True, True, (4, 4))[0], expected_map)
    # outside the box: 1.0 + 1.25 + 0.40625 + 0.25; inside: 0.40625 + 0.25 + 0.25 + 0 -> 3.8125 / 16
    assert layer_loss("l1", A, M).item() == pytest.approx(0.23828125)
    # resizing first mixes the negative pixel in: pixel (0, 1) becomes relu(1.25) / 4 = 0.3125, not 0.375
    assert l1(F.interpolate(A[:, None], size=(4, 4), mode="bilinear")[:, 0], M).item() != pytest.approx(0.23828125)
    # RRR normalises by max|A| before resizing: Σ over the 12 outside pixels of (A/4 resized)²
    outside = authors_post_processing(A, False, True, (4, 4))[0][M[0] == 0]
    assert layer_loss("rrr", A, M).item() == pytest.approx(outside.square().sum().item())


def test_layer_loss_at_the_masks_resolution_is_the_plain_loss():
    torch.manual_seed(0)
    A, M = torch.randn(3, 8, 8), (torch.rand(3, 8, 8) > 0.5).float()
    for name, fn in (("energy", energy), ("l1", l1), ("ppce", ppce), ("rrr", rrr)):
        torch.testing.assert_close(layer_loss(name, A, M), fn(A, M))


# -- 3. tiny maps --------------------------------------------------------------------------
def test_tiny_maps_are_divided_by_their_true_maximum():
    torch.manual_seed(1)
    A, M = torch.randn(2, 6, 6), (torch.rand(2, 6, 6) > 0.5).float()
    for scale in (1e-13, 1e-20):  # max A+ and Σ A+ below the former 1e-12 floor
        torch.testing.assert_close(normalize_positive(scale * A), normalize_positive(A))
        torch.testing.assert_close(normalize_abs(scale * A), normalize_abs(A))
        for fn in (l1, ppce, rrr, epg):
            torch.testing.assert_close(fn(scale * A, M), fn(A, M), rtol=1e-5, atol=1e-6)
    assert normalize_positive(scale * A).max().item() == pytest.approx(1.0)
    zero = torch.zeros(1, 6, 6, requires_grad=True)
    assert normalize_positive(zero).abs().sum() == 0 and epg(zero, M[:1]).item() == 0.0
    (g,) = torch.autograd.grad(l1(zero, M[:1]).sum() + rrr(zero, M[:1]).sum(), zero)
    assert torch.isfinite(g).all()


# -- 4. IntGrad of multi-class log-odds ------------------------------------------------
def _riemann_intgrad_log_odds(model, images, targets, layer, steps=2000):
    """Σ_c U_c · (1/S) Σ_i ∇g(α_i U), α_i = (i + ½)/S: midpoint rule of the IG integral."""
    from mg_tune.models.staged import layer_index

    depth = layer_index(layer)
    with torch.no_grad():
        U = model.features_and_logits(images, layer)[0]
    total = torch.zeros_like(U)
    for chunk in torch.arange(steps).split(500):
        alpha = ((chunk + 0.5) / steps).view(-1, 1, 1, 1, 1)
        h = (alpha * U).flatten(0, 1).requires_grad_(True)  # [S·N, C, H, W]
        out = h
        for stage in model.stages[depth:]:
            out = stage(out)
        logits = model.head(out)
        t = targets.repeat(len(chunk))
        others = logits.masked_fill(F.one_hot(t, logits.shape[1]).bool(), float("-inf"))
        g = logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(others, 1)
        (grad,) = torch.autograd.grad(g.sum(), h)
        total += grad.view(len(chunk), *U.shape).sum(0)
    return (U * total / steps).sum(1)


@pytest.mark.parametrize("layer", ["input", "mid2"])
def test_intgrad_of_multiclass_log_odds_is_the_integral(layer):
    torch.manual_seed(0)
    model = build_model("x_smerf_cnn", 4).eval()
    images, targets = torch.rand(2, 3, 64, 64), torch.tensor([1, 3])
    with torch.no_grad():  # logits of a few units, so the softmax weights vary along the path
        model.head[-1].weight.mul_(4 / model(images).abs().max())
    ours = attribute(model, images, targets, "intgrad", layer, target="log_odds").maps.detach()
    reference = _riemann_intgrad_log_odds(model, images, targets, layer)
    scale = reference.abs().max()
    assert (ours - reference).abs().max() < 1e-3 * scale
    ixg = attribute(model, images, targets, "ixg", layer, target="log_odds").maps.detach()
    assert (ixg - reference).abs().max() > 0.05 * scale  # the shortcut the issue found is really off
    two = build_model("x_smerf_cnn", 2).eval()  # 2 classes: log-odds y_k - y_j is homogeneous, IG = IxG
    torch.testing.assert_close(
        attribute(two, images, targets % 2, "intgrad", layer, target="log_odds").maps,
        attribute(two, images, targets % 2, "ixg", layer, target="log_odds").maps,
    )


# -- 5. IoU convention ------------------------------------------------------------------------
def test_iou_agrees_with_the_authors_except_on_all_positive_maps_and_ties():
    torch.manual_seed(2)
    A, M = torch.randn(20, 16, 16), torch.zeros(20, 16, 16)
    M[:, 4:12, 3:10] = 1
    for t in (0.1, 0.3, 0.5, 0.8):
        ours = iou(A, M, t)
        for n in range(20):  # maps with negative pixels, no exact ties: identical
            assert ours[n].item() == pytest.approx(authors_iou(A[n], M[n], t))
    positive = torch.full((1, 4, 4), 0.5)
    positive[0, 0, 0], positive[0, 3, 3] = 0.25, 1.0  # weakest pixel 0.25: min-max maps it to 0
    box = torch.zeros(1, 4, 4)
    box[0, 0, 0] = 1
    assert iou(positive, box, 0.2).item() == pytest.approx(1 / 16)  # every pixel >= 0.2 of the max
    assert authors_iou(positive[0], box[0], 0.2) == 0.0  # (0.25-0.25)/0.75 = 0 is off
    tie = torch.tensor([[[1.0, 0.5], [0.0, -1.0]]])
    corner = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert iou(tie, corner, 0.5).item() == 1.0 and authors_iou(tie[0], corner[0], 0.5) == 0.5


# -- 6. textured TextBox -----------------------------------------------------------------------
def test_textured_background_is_bright_structured_and_reproducible():
    rng = np.random.default_rng(0)
    t = texture(rng, 64)
    assert t.shape == (3, 64, 64) and t.dtype == np.float32
    assert t.min() == pytest.approx(TEXTURE_RANGE[0]) and t.max() == pytest.approx(TEXTURE_RANGE[1])
    assert t.std() > 0.05 and np.abs(np.diff(t, axis=2)).mean() > 0.005  # not flat
    np.testing.assert_array_equal(texture(np.random.default_rng(0), 64), t)
    plain = MultiLabelTextBox("train", 4)[0]
    textured = MultiLabelTextBox("train", 4, background="texture")[0]
    torch.testing.assert_close(textured["masks"], plain["masks"])  # same objects and boxes
    inside = textured["masks"].amax(0) > 0
    assert textured["image"].mean(0)[~inside].mean() > 0.3 > plain["image"].mean(0)[~inside].mean()
    with pytest.raises(ValueError, match="background must be"):
        MultiLabelTextBox("train", 4, background="wood")


def test_input_x_gradient_is_not_zero_around_objects_on_textures():
    torch.manual_seed(0)
    model = build_model("smerf_cnn", 4).eval()
    ratio = {}  # mean |IxG| per background pixel / per object-box pixel
    for background in ("noise", "texture"):
        item = MultiLabelTextBox("train", 8, background=background)
        batch = default_collate([item[i] for i in range(8)])
        k = batch["labels"].argmax(1)
        maps = attribute(model, batch["image"], k, "ixg", "input").maps.detach().abs()
        objects = batch["masks"].amax(1) > 0  # any object's box
        ratio[background] = (maps[~objects].mean() / maps[objects].mean()).item()
    assert ratio["noise"] < 0.15 and ratio["texture"] > 0.4  # measured: 0.09 and 0.55


# -- 7. specs: the paper grid and default ranges are in the papers' units ----------------------
def test_mean_reduction_needs_explicit_lambda_ranges_and_no_paper_grid():
    from mg_tune.search.spec import SearchSpec

    base = {"fixed": {"lam_reduction": "mean"}, "space": {"loss": {"choice": ["energy", "l1"]}}}
    with pytest.raises(ValueError, match="missing: l1"):
        SearchSpec.model_validate({**base, "space": {**base["space"], "lam": {"loguniform_by_loss": {"energy": [0.1, 1.0]}}}})
    with pytest.raises(ValueError, match="for a grid, lam_grid"):
        SearchSpec.model_validate({**base, "sampler": "grid", "space": {**base["space"], "lam": {"loguniform_by_loss": {"energy": [0.1, 1.0], "l1": [0.1, 1.0]}}}})
    spec = SearchSpec.model_validate({**base, "space": {**base["space"], "lam": {"loguniform_by_loss": {"energy": [0.1, 1.0], "l1": [0.2, 2.0]}}}})
    assert spec.lambda_range("l1") == (0.2, 2.0) and spec.train_config({"lam": 0.5}).lam_reduction == "mean"


def test_lam_grid_replaces_the_paper_grid_within_the_range():
    from mg_tune.search.spec import PAPER_LAMBDA_GRID, SearchSpec

    space = {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [1e-4, 1.0]}}}
    spec = SearchSpec.model_validate({"space": space, "sampler": "grid", "lam_grid": {"energy": [1e-3, 1e-1]}})
    points = {(p["loss"], p["lam"]) for p in spec.grid_points()}
    assert points == {("energy", 1e-3), ("energy", 1e-1)} | {("l1", lam) for lam in PAPER_LAMBDA_GRID["l1"]}
    with pytest.raises(ValueError, match="lam_grid: λ=10 of loss energy lies outside"):
        SearchSpec.model_validate({"space": space, "sampler": "grid", "lam_grid": {"energy": [10.0]}})

"""Validation/test metrics of one model on one split, streamed batch by batch.

Classification (main paper Sec. 3.3): micro F1 and mAP for multi-label data,
accuracy plus worst-group / mean-group accuracy where the data has groups
(Sec. 5.5, CRAYON). Localization, over one attribution map per (image,
ground-truth class) whose mask is non-empty: EPG, IoU (threshold chosen on a
held-out split), SegEPG and X-SegEPG where segmentation masks exist, and the
SMERF attribution focus levels PAFL (primary mask) / SAFL (secondary mask) on the
SMERF reasoning settings.

The IoU threshold (:func:`choose_iou_threshold`): by default the candidate of
:data:`IOU_THRESHOLDS` with the best mean IoU on the model's held-out split (the
paper's protocol, per epoch during training, per checkpoint in ``mg-tune evaluate``);
a ``TrainConfig.iou_threshold`` fixes one for the whole search instead, and
:func:`pooled_iou_threshold` chooses one for many checkpoints at once on their
pooled held-out evaluations (``mg-tune evaluate --iou-threshold pooled``).

Images without objects (background images, hard negatives) are legal anywhere, in any
batch: they count for classification and give no map. EPG, IoU and every other per-map
metric average over the maps of the split; a split with no map at all (no image with a box
of its class) has none of them: they are absent with one warning saying why, never 0.0;
so is mAP on a split without a positive label (no class to average over).
Likewise a held-out split without a box chooses no IoU threshold: a warning says so and IoU
is measured at :data:`FALLBACK_IOU_THRESHOLD`.

A metric the split cannot support is absent from the result, never 0.0: SegEPG and
X-SegEPG when no map of the split has a segmentation mask (VOC without
``SegmentationClass``, Waterbirds), PAFL / SAFL outside the SMERF settings (or without
a single map to average), accuracy outside single-label data, group accuracies
without groups. :func:`mg_tune.data.unsupported_metrics` says the same before a search.

Nothing is kept per image except the scores needed for mAP, so memory does
not grow with the resolution of the data set.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from mg_tune.checkpoint import load_checkpoint
from mg_tune.config import TrainConfig
from mg_tune.data import build_split
from mg_tune.data.card import check_classes
from mg_tune.guidance import metrics as M
from mg_tune.guidance.attribution import attribute
from mg_tune.guidance.pruning import load_state
from mg_tune.models import build_model
from mg_tune.models.staged import StagedModel

IOU_THRESHOLDS: tuple[float, ...] = M.DEFAULT_IOU_THRESHOLDS
FALLBACK_IOU_THRESHOLD = 0.5
"""The IoU threshold when none can be chosen (the held-out split has no box): the middle of
:data:`IOU_THRESHOLDS`, with a warning. ``fixed: {iou_threshold: ...}`` in a spec avoids it."""


@dataclass
class _Mean:
    """Running mean of per-map scores."""

    total: float = 0.0
    count: int = 0

    def add(self, values: Tensor) -> None:
        self.total += float(values.sum())
        self.count += values.numel()

    @property
    def value(self) -> float | None:
        """The mean, or None over zero maps (absent, never 0)."""
        return self.total / self.count if self.count else None


@dataclass
class SplitEvaluation:
    """Metrics of a split and the IoU summed over its maps at every threshold evaluated.

    ``iou_sums[i]`` is the sum over the split's ``iou_maps`` maps of the IoU at
    ``thresholds[i]`` (:data:`IOU_THRESHOLDS` when the split chooses the
    threshold, the one threshold given otherwise).
    """

    metrics: dict[str, float]
    thresholds: tuple[float, ...]
    iou_sums: Tensor = field(repr=False)
    iou_maps: int = 0

    @property
    def iou_curve(self) -> Tensor:
        """Mean IoU at every threshold (0 without a single map)."""
        return self.iou_sums / max(self.iou_maps, 1)

    def best_iou_threshold(self) -> float | None:
        """The threshold with the highest mean IoU (ties: the smallest); None without a single map: nothing to choose on."""
        if self.iou_maps == 0:
            return None
        return float(self.thresholds[int(torch.argmax(self.iou_curve))])


def _fallback(where: str) -> float:
    """:data:`FALLBACK_IOU_THRESHOLD`, with the warning that no threshold was chosen."""
    warnings.warn(
        f"{where} has no image with a box of its class: no IoU threshold can be chosen on it; "
        f"IoU is measured at the fallback {FALLBACK_IOU_THRESHOLD} (fix one with fixed: {{iou_threshold: ...}} in the spec)",
        stacklevel=3,
    )
    return FALLBACK_IOU_THRESHOLD


def pooled_iou_threshold(evaluations: Sequence[SplitEvaluation]) -> float:
    """One threshold for many models: the best of the mean IoU curve over all their (model, map) pairs.

    The per-threshold IoU sums and map counts of the held-out ``evaluations``
    (one per checkpoint) are added up, so every map weighs the same whichever
    checkpoint it comes from; ties go to the smallest threshold.

    Raises:
        ValueError: no evaluation, or evaluations over different thresholds.
    """
    if not evaluations:
        raise ValueError("pooling the IoU threshold needs at least one held-out evaluation")
    thresholds = evaluations[0].thresholds
    if any(e.thresholds != thresholds for e in evaluations):
        raise ValueError("held-out evaluations over different IoU thresholds cannot be pooled")
    pooled = SplitEvaluation({}, thresholds, sum(e.iou_sums for e in evaluations), sum(e.iou_maps for e in evaluations))
    chosen = pooled.best_iou_threshold()
    return chosen if chosen is not None else _fallback("the pooled held-out split")


def choose_iou_threshold(fixed: float | None, heldout: Callable[[], SplitEvaluation]) -> float:
    """The threshold of a model's reported IoU: ``fixed`` (``TrainConfig.iou_threshold``) if set, else the best on ``heldout()``.

    ``heldout`` evaluates the model on its held-out split; it is called only when needed.
    A held-out split without a box chooses nothing: :data:`FALLBACK_IOU_THRESHOLD`, with a warning.
    """
    if fixed is not None:
        return fixed
    chosen = heldout().best_iou_threshold()
    return chosen if chosen is not None else _fallback("the held-out split")


def ground_truth_pairs(labels: Tensor, multilabel: bool) -> tuple[Tensor, Tensor]:
    """(image index, class) of every ground-truth class (the label for single-label data)."""
    if multilabel:
        rows, classes = labels.nonzero(as_tuple=True)
        return rows, classes
    return torch.arange(labels.shape[0]), labels.argmax(dim=1)


def attribution_target(multilabel: bool) -> str:
    """Attribute the logit for multi-label (BCE) data, the class log-odds for single-label (softmax) data."""
    return "logit" if multilabel else "log_odds"


@torch.no_grad()
def _scores(model: StagedModel, images: Tensor, multilabel: bool) -> Tensor:
    logits = model(images).float()
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def evaluate_split(
    model: StagedModel,
    loader: DataLoader,
    method: str,
    layer: str,
    multilabel: bool,
    group_names: tuple[str, ...] = (),
    iou_threshold: float | None = None,
    device: torch.device | str = "cpu",
    smerf: bool = False,
    name: str = "the split",
) -> SplitEvaluation:
    """Evaluate ``model`` (switched to eval mode) on every batch of ``loader``.

    ``iou_threshold`` is the threshold chosen on a held-out split or fixed (any
    value in (0, 1)); when None (evaluating the held-out split itself), every
    threshold of :data:`IOU_THRESHOLDS` is tried, ``iou`` is reported at the best
    one of this split and ``iou_threshold`` says which it was. ``smerf``
    (``DatasetInfo.smerf``): report PAFL / SAFL. Unsupported metrics are absent (module doc),
    and so are EPG, IoU and the threshold when no image of the split has a box of its class
    (one warning naming ``name``, e.g. ``"the val split"``).
    """
    model.eval()
    scores, targets, groups = [], [], []
    epg, seg_epg, x_seg_epg, pafl, safl = (_Mean() for _ in range(5))
    thresholds = IOU_THRESHOLDS if iou_threshold is None else (float(iou_threshold),)
    iou_sums = torch.zeros(len(thresholds), dtype=torch.float64)
    iou_count = 0
    for batch in loader:
        images = batch["image"].to(device)
        labels = batch["labels"]
        scores.append(_scores(model, images, multilabel).cpu())
        targets.append(labels)
        groups.append(batch["group"])
        rows, classes = ground_truth_pairs(labels, multilabel)
        box = batch["masks"][rows, classes]
        secondary = batch["secondary_mask"][rows]
        keep = (box.sum((1, 2)) > 0) | (secondary.sum((1, 2)) > 0)
        if not keep.any():
            continue
        rows, classes, box, secondary = rows[keep], classes[keep], box[keep], secondary[keep]
        seg = batch["seg_masks"][rows, classes]
        with torch.enable_grad():
            maps = attribute(
                model, images[rows.to(device)], classes.to(device), method, layer, size=tuple(box.shape[-2:]), target=attribution_target(multilabel)
            )
        maps = maps.maps.detach().float().cpu()
        on_box = box.sum((1, 2)) > 0
        if on_box.any():
            a, m = maps[on_box], box[on_box]
            epg.add(M.epg(a, m))
            pafl.add(M.attribution_focus(a, m))
            iou_sums += torch.stack([M.iou(a, m, t).double().sum() for t in thresholds])
            iou_count += int(on_box.sum())
            with_seg = seg[on_box].sum((1, 2)) > 0
            if with_seg.any():
                seg_epg.add(M.seg_epg(a[with_seg], seg[on_box][with_seg], m[with_seg]))
                x_seg_epg.add(M.x_seg_epg(a[with_seg], seg[on_box][with_seg]))
        on_secondary = secondary.sum((1, 2)) > 0
        if on_secondary.any():
            safl.add(M.attribution_focus(maps[on_secondary], secondary[on_secondary]))
    result = SplitEvaluation({}, thresholds, iou_sums, iou_count)
    metrics: dict[str, float] = {}
    threshold = result.best_iou_threshold()
    if threshold is not None:
        metrics.update(epg=epg.value, iou=float(result.iou_curve[thresholds.index(threshold)]), iou_threshold=threshold)
    elif iou_threshold is not None:  # no box to measure on (when choosing a threshold, None, the caller warns that none was chosen)
        images = sum(len(t) for t in targets)
        warnings.warn(f"{name} has no image with a box of its class ({images} images): EPG and IoU are not measured on it (absent, not 0)", stacklevel=2)
    optional = {"seg_epg": seg_epg, "x_seg_epg": x_seg_epg, **({"pafl": pafl, "safl": safl} if smerf else {})}
    metrics.update({key: mean.value for key, mean in optional.items() if mean.count})
    metrics.update(_classification(torch.cat(scores), torch.cat(targets), torch.cat(groups), multilabel, group_names, name))
    result.metrics = metrics
    return result


def _classification(
    scores: Tensor, targets: Tensor, groups: Tensor, multilabel: bool, group_names: tuple[str, ...], name: str
) -> dict[str, float]:
    """F1, mAP (and accuracies); mAP is absent, with a warning, on a split without a positive label (no class to average over)."""
    if multilabel:
        out = {"f1": M.f1_score(scores, targets)}
        if (targets >= 0.5).any():
            out["map"] = M.mean_average_precision(scores, targets)
        else:
            warnings.warn(f"{name} has no positive label ({len(targets)} images): mAP is not measured on it (absent, not 0)", stacklevel=3)
        return out
    pred, true = scores.argmax(1), targets.argmax(1)
    one_hot_pred = torch.nn.functional.one_hot(pred, scores.shape[1]).float()
    out = {
        "f1": M.f1_score(one_hot_pred, targets),
        "map": M.mean_average_precision(scores, targets),
        "accuracy": M.accuracy(pred, true),
    }
    if group_names:
        accs = M.group_accuracies(pred, true, groups)
        out["worst_group_acc"] = accs["worst_group_acc"]
        out["mean_group_acc"] = accs["mean_group_acc"]
        for g, name in enumerate(group_names):
            if f"group_acc/{g}" in accs:
                out[f"group_acc/{name}"] = accs[f"group_acc/{g}"]
    return out


class CheckpointEvaluator:
    """A saved checkpoint (``checkpoint.pt``), loaded once, evaluated on any split of its data set."""

    def __init__(self, checkpoint: str, device: str = "cpu") -> None:
        state = load_checkpoint(checkpoint)
        self.config = TrainConfig.model_validate(state["config"])
        self.device = device
        self._weights = state["model"]
        self._card = state.get("dataset")
        self.checkpoint = checkpoint
        self._model: StagedModel | None = None

    def split(self, split: str, iou_threshold: float | None = None) -> SplitEvaluation:
        """The :class:`SplitEvaluation` of ``split`` (``iou_threshold`` as in :func:`evaluate_split`)."""
        dataset = build_split(self.config.data, split)
        check_classes(self._card, dataset.info, self.checkpoint)
        if self._model is None:
            self._model = build_model(self.config.model, dataset.info.num_classes).to(self.device)
            load_state(self._model, self._weights)
        return evaluate_split(
            model=self._model,
            loader=DataLoader(dataset, batch_size=self.config.eval_batch_size),
            method=self.config.attribution,
            layer=self.config.layer,
            multilabel=dataset.info.multilabel,
            group_names=dataset.info.group_names,
            iou_threshold=iou_threshold,
            device=self.device,
            smerf=dataset.info.smerf,
            name=f"the {split} split",
        )

    def iou_threshold(self) -> float:
        """The threshold training used: the config's fixed ``iou_threshold``, else the best on the held-out split."""
        return choose_iou_threshold(self.config.iou_threshold, lambda: self.split("heldout"))


def evaluate_checkpoint(checkpoint: str, split: str = "test", device: str = "cpu", iou_threshold: float | None = None) -> dict[str, float]:
    """Metrics of a saved checkpoint on ``split`` (the main paper's test protocol).

    The IoU threshold is ``iou_threshold`` when given (e.g. a
    :func:`pooled_iou_threshold`), else the one training used
    (:meth:`CheckpointEvaluator.iou_threshold`): the config's fixed one or the
    best on the held-out split.
    """
    evaluator = CheckpointEvaluator(checkpoint, device)
    threshold = iou_threshold if iou_threshold is not None else evaluator.iou_threshold()
    return evaluator.split(split, threshold).metrics

"""Guided training of one configuration — the core every search trial runs.

Each step minimises (main paper eq. overall)

    L = L_class + λ · Σ_{n ∈ annotated} L_loc(A_{k_n}(x_n), M_{k_n}(x_n))     (lam_reduction: sum)
    L = L_class + λ · mean_{n ∈ annotated} L_loc(...)                          (lam_reduction: mean)

with L_class binary cross-entropy averaged over the batch's (image, class)
pairs (multi-label) or cross-entropy averaged over images (single-label), and
k_n **one ground-truth class drawn at random per image and batch** (Sec. 3.5).
Only images that keep their annotation (``annotation_fraction``) and have a
non-empty mask for k_n enter L_loc. The sum is the authors' train.py (their λ
multiplies ``localization_loss`` accumulated image by image), so the papers'
λ grids keep their meaning; the mean keeps λ independent of the batch size.
L_loc of one image is :func:`mg_tune.guidance.losses.layer_loss`: the map at
the guided layer is normalised, then resized to the mask, as the authors do.

After every epoch the model is evaluated on the validation split (the IoU
threshold is chosen on the held-out split, or fixed by ``iou_threshold``), a checkpoint and an attribution
overlay are written, and ``callback(EpochResult)`` is called: the search
layer reports from there. No Ray or MLflow here: a notebook calls
:func:`train` directly.

CRAYON-Pruning (``prune_fraction``, crayon.md Sec. III-C): before the first
epoch the penultimate neurons most active outside the annotated boxes are
pruned (:mod:`mg_tune.guidance.pruning`); epochs 1..``prune_finetune_epochs``
then train only the last layer with L_class (the rest of the model in eval
mode, frozen), later epochs the whole pruned model with guidance.

Determinism: model init uses ``seed``; epoch e shuffles and draws classes
with a generator seeded by ``(seed, e)``, so a run resumed from the
checkpoint of epoch e continues exactly as the uninterrupted run (on CPU).
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from mg_tune.checkpoint import CHECKPOINT_FILE, epoch_dir, load_checkpoint, load_resumable, save_checkpoint
from mg_tune.data.card import dataset_card
from mg_tune.config import TrainConfig
from mg_tune.data import build_split
from mg_tune.data.masks import crayon_relevance
from mg_tune.split_eval import attribution_target, choose_iou_threshold, evaluate_split, ground_truth_pairs
from mg_tune.guidance.attribution import ATTRIBUTIONS, attribute, check_method
from mg_tune.guidance.losses import get_loss, layer_loss
from mg_tune.guidance.metrics import resize_maps
from mg_tune.guidance.pruning import load_state, penultimate, rank_and_prune
from mg_tune.models import StagedModel, build_model
from mg_tune.overlay import save_overlay

OVERLAY_FILE = "overlay.png"


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the trial must be reported as failed."""


@dataclass
class EpochResult:
    """What one finished epoch hands to the callback."""

    epoch: int
    metrics: dict[str, float]
    checkpoint: Path
    overlay: Path | None


@dataclass
class TrainResult:
    history: list[EpochResult] = field(default_factory=list)

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.history[-1].metrics if self.history else {}


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first visible CUDA device (``cuda:0``) when CUDA is available, else CPU.

    CUDA numbers only the GPUs in ``CUDA_VISIBLE_DEVICES``, and Ray sets that variable in a trial's
    process to the GPU ids it assigned the trial (``ray.get_gpu_ids()``, one id for ``gpu: 1`` or a
    fraction): ``cuda:0`` is then Ray's first assigned GPU (:func:`physical_gpu`), never one held
    by another trial.
    """
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def physical_gpu(device: torch.device, visible_devices: str | None) -> str | None:
    """The machine's id of the GPU ``device`` is, or None on CPU.

    CUDA index ``i`` is the ``i``-th entry of ``CUDA_VISIBLE_DEVICES`` (``visible_devices``), or GPU
    ``i`` itself where the variable is unset; ``cuda`` without an index is index 0 (the current
    device of a process that never changed it).
    """
    if device.type != "cuda":
        return None
    index = device.index or 0
    if visible_devices is None:
        return str(index)
    return [entry.strip() for entry in visible_devices.split(",")][index]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_target_classes(labels: Tensor, generator: torch.Generator) -> Tensor:
    """One ground-truth class per image, uniformly among its positives (Sec. 3.5).

    Images without any positive class get class 0 (their mask is empty, so they
    never enter the localization loss).
    """
    weights = labels.float() + 1e-12 * (labels.sum(1, keepdim=True) == 0)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


class GuidedTrainer:
    """Holds the model, optimiser and data of one run; :func:`train` drives it."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.train_set = build_split(config.data, "train")
        self.val_set = build_split(config.data, "val")
        self.heldout_set = build_split(config.data, "heldout")
        self.info = self.train_set.info
        self.target = attribution_target(self.info.multilabel)
        self.model: StagedModel = build_model(config.model, self.info.num_classes, config.weights).to(self.device)
        check_method(config.attribution, self.model)
        self.loss_fn = get_loss(config.loss)
        self.mask_key = "masks" if config.data.mask_kind == "box" else "seg_masks"
        if config.init_checkpoint:
            load_state(self.model, load_checkpoint(config.init_checkpoint)["model"])
        # CRAYON-Attention compares with the original model's saliency, taken before any pruning
        self.reference = self._frozen_copy() if config.loss == "crayon_attention" else None
        self.pruned = self._prune() if config.prune_fraction > 0 else None
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.last_layer_only: bool | None = None
        self.set_phase(last_layer_only=config.prune_finetune_epochs > 0)
        self.amp_dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        self.scaler = torch.amp.GradScaler(enabled=config.amp and self.device.type == "cuda")

    def _frozen_copy(self) -> StagedModel:
        reference = copy.deepcopy(self.model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        return reference

    def _prune(self) -> Tensor:
        """CRAYON-Pruning on the annotated training images; the relevant region is the union of their classes' masks."""

        def annotated_batches():
            for batch in self.loader(self.train_set, shuffle=False):
                relevant = (batch[self.mask_key] * batch["labels"][:, :, None, None]).amax(1)
                use = batch["has_mask"] & (relevant.sum((1, 2)) > 0)
                if use.any():
                    yield batch["image"][use].to(self.device), relevant[use].to(self.device)

        return rank_and_prune(self.model, annotated_batches(), self.config.prune_fraction)

    def set_phase(self, last_layer_only: bool) -> None:
        """Train only the last linear layer (L_class, CRAYON-Pruning) or the whole model; a new optimiser on a change."""
        if last_layer_only == self.last_layer_only:
            return
        self.params = list(penultimate(self.model)[1].parameters()) if last_layer_only else self.trainable
        chosen = {id(p) for p in self.params}
        for p in self.trainable:
            p.requires_grad_(id(p) in chosen)
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.last_layer_only = last_layer_only

    def loader(self, dataset, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
        size = self.config.batch_size if shuffle else self.config.eval_batch_size
        return DataLoader(dataset, batch_size=size, shuffle=shuffle, generator=generator, num_workers=self.config.num_workers)

    def restore(self, checkpoint: str | Path) -> int:
        """Load model and optimiser from a checkpoint; return the epoch it ended."""
        state = load_resumable(checkpoint)
        epoch = int(state["epoch"])
        load_state(self.model, state["model"])
        finetune = self.config.prune_finetune_epochs
        self.set_phase(epoch + 1 <= finetune)
        if (epoch <= finetune) == (epoch + 1 <= finetune):  # else the next epoch starts a new optimiser
            self.optimizer.load_state_dict(state["optimizer"])
        return epoch

    # -- one step -----------------------------------------------------------------
    def losses(self, batch: dict, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(total, classification, localization) loss of one batch."""
        cfg = self.config
        images = batch["image"].to(self.device)
        labels = batch["labels"].to(self.device)
        targets = choose_target_classes(batch["labels"], generator).to(self.device)
        masks = batch[self.mask_key][torch.arange(len(targets)), targets.cpu()].to(self.device)
        use = (batch["has_mask"].to(self.device)) & (masks.sum((1, 2)) > 0)
        lam = 0.0 if self.last_layer_only else cfg.lam
        guided = lam > 0 and bool(use.any())
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=cfg.amp):
            if guided:
                att = attribute(self.model, images, targets, cfg.attribution, cfg.layer, create_graph=True, target=self.target)
                logits = att.logits if ATTRIBUTIONS[cfg.attribution].logits_trainable else self.model(images)
                per_image = self._localization(att.maps[use].float(), masks[use], images[use], targets[use])
                loc = per_image.sum() if cfg.lam_reduction == "sum" else per_image.mean()
            else:
                logits = self.model(images)
                loc = torch.zeros((), device=self.device)
            cls = self._classification(logits.float(), labels)
        return cls + lam * loc, cls, loc

    def _classification(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.info.multilabel:
            return F.binary_cross_entropy_with_logits(logits, labels)
        return F.cross_entropy(logits, labels.argmax(1))

    def _localization(self, maps: Tensor, masks: Tensor, images: Tensor, targets: Tensor) -> Tensor:
        """Per-image L_loc ``[N]`` of the layer's maps against the masks."""
        params = dict(self.config.loss_params)
        if self.reference is None:
            return layer_loss(self.config.loss, maps, masks, **params)
        # CRAYON-Attention: the original model's saliency, judged yes/no against the mask.
        size = tuple(masks.shape[-2:])
        with torch.enable_grad():
            ref = attribute(self.reference, images, targets, self.config.attribution, self.config.layer, size=size, target=self.target)
        ref_maps = ref.maps.detach().float()
        relevant = crayon_relevance(ref_maps, masks)
        return self.loss_fn(resize_maps(maps, size), ref_maps, relevant, **params)

    def step(self, batch: dict, generator: torch.Generator) -> tuple[float, float, float]:
        self.optimizer.zero_grad(set_to_none=True)
        total, cls, loc = self.losses(batch, generator)
        if not torch.isfinite(total):
            raise DivergedError(
                f"non-finite loss {total.item()} (class {cls.item()}, localization {loc.item()}) "
                f"with lam={self.config.lam}, lr={self.config.lr}"
            )
        # gradients of the parameters only: at the input layer the image also requires grad
        self.scaler.scale(total).backward(inputs=self.params)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total.item(), cls.item(), loc.item()

    # -- one epoch ----------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        self.set_phase(epoch <= self.config.prune_finetune_epochs)
        self.model.train(not self.last_layer_only)
        sums = np.zeros(3)
        batches = 0
        for batch in self.loader(self.train_set, shuffle=True, generator=generator):
            sums += self.step(batch, generator)
            batches += 1
        mean = sums / max(batches, 1)
        metrics = {"train_loss": mean[0], "train_class_loss": mean[1], "train_loc_loss": mean[2]}
        if self.pruned is not None:
            metrics["pruned_neurons"] = float(len(self.pruned))
        return metrics

    def validate(self) -> dict[str, float]:
        """Validation metrics; the IoU threshold is the config's fixed one, else chosen on the held-out split."""
        common = dict(
            model=self.model,
            method=self.config.attribution,
            layer=self.config.layer,
            multilabel=self.info.multilabel,
            group_names=self.info.group_names,
            device=self.device,
            smerf=self.info.smerf,
        )
        threshold = choose_iou_threshold(self.config.iou_threshold, lambda: evaluate_split(loader=self.loader(self.heldout_set, shuffle=False), name="the heldout split", **common))
        return evaluate_split(loader=self.loader(self.val_set, shuffle=False), iou_threshold=threshold, name="the val split", **common).metrics

    def write_overlay(self, path: Path) -> Path | None:
        """Attribution overlay of the first ``overlay_images`` validation images.

        Each image shows the map of its first ground-truth class and that class's mask; an
        image without objects (a background image) shows the map of its highest-scoring class
        and no mask, so where the model looks on hard negatives is visible too.
        """
        n = min(self.config.overlay_images, len(self.val_set))
        if n == 0:
            return None
        batch = next(iter(DataLoader(torch.utils.data.Subset(self.val_set, range(n)), batch_size=n)))
        self.model.eval()
        images = batch["image"].to(self.device)
        rows, classes = ground_truth_pairs(batch["labels"], self.info.multilabel)
        with torch.no_grad():
            shown = self.model(images).argmax(1).cpu()  # background images: the class the model would say
        first_of_image = torch.ones_like(rows, dtype=torch.bool)
        first_of_image[1:] = rows[1:] != rows[:-1]  # pairs come sorted by image: its first class
        shown[rows[first_of_image]] = classes[first_of_image]
        has_object = torch.zeros(n, dtype=torch.bool)
        has_object[rows] = True
        masks = batch[self.mask_key][torch.arange(n), shown] * has_object[:, None, None]
        size = (images.shape[-2], images.shape[-1])
        maps = attribute(self.model, images, shown.to(self.device), self.config.attribution, self.config.layer, size=size, target=self.target).maps
        return save_overlay(path, images.cpu(), maps.detach().cpu(), masks)


def train(
    config: TrainConfig,
    callback: Callable[[EpochResult], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    checkpoint_dtype: str = "float32",
) -> TrainResult:
    """Train ``config`` for ``config.epochs`` epochs; see the module docstring.

    Args:
        callback: called after every epoch with its :class:`EpochResult`.
        checkpoint_dir: where ``epoch=NNN/checkpoint.pt`` (weights in
            ``checkpoint_dtype``), ``resume.pt`` (optimizer state) and
            ``overlay.png`` go (a temporary directory when None).
        resume_from: a checkpoint to continue from (epochs after it are run;
            its ``resume.pt`` beside it).

    Raises:
        DivergedError: when the loss becomes NaN or infinite.
    """
    trainer = GuidedTrainer(config)
    start = trainer.restore(resume_from) + 1 if resume_from else 1
    result = TrainResult()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        for epoch in range(start, config.epochs + 1):
            metrics = trainer.train_epoch(epoch)
            metrics.update(trainer.validate())
            metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
            folder = epoch_dir(root, epoch)
            checkpoint = save_checkpoint(
                folder / CHECKPOINT_FILE, trainer.model, trainer.optimizer, epoch, metrics, config.model_dump(mode="json"), dataset_card(trainer.info, config.data).to_json(),
                dtype=checkpoint_dtype,
            )
            overlay = trainer.write_overlay(folder / OVERLAY_FILE)
            epoch_result = EpochResult(epoch, metrics, checkpoint, overlay)
            result.history.append(epoch_result)
            if callback is not None:
                callback(epoch_result)
    return result

"""SMERF-style TextBox datasets (SMERF, Sec. 3.1-3.2 and App. A.1), generated lazily.

Every sample is a pure function of ``(seed, split, index)``: it is drawn from
``numpy.random.default_rng([seed, SPLITS[split], index])`` when requested, so nothing is
held in memory and the same triple always yields bit-identical tensors.

Images are 64x64 RGB floats in [0, 1]. Objects (SMERF Fig. 4) are white on a dark
background and never overlap (at least ``GAP`` pixels apart):

* Text: a letter of the embedded 5x7 bitmap font ``GLYPHS_5X7``, scaled x3 (15x21 px);
  its segmentation mask is the stroke pixels, its box the tight 15x21 rectangle.
* Box1: a filled 10x10 box; Box2: a filled 4x4 box (segmentation mask = box).

Boxes follow ``mg_tune.data.masks`` conventions: ``(x0, y0, x1, y1)``, x = column, y = row,
x1/y1 exclusive.

Scenes (objects, placement, rendering) are :mod:`mg_tune.data.textbox_scene`; the SMERF
reasoning table is :mod:`mg_tune.data.smerf_rules`.

Variants (``TEXTBOX_VARIANTS``): ``"multilabel"`` (4 classes A, B, Box1, Box2),
``"spurious"`` (Waterbirds-like colour shortcut) and the seven reasoning settings of
SMERF Table 1 (``"simple_fr"``, ``"simple_nr"``, ``"complex_fr"``, ``"complex_cr1"``..``"complex_cr4"``).
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from mg_tune.data.base import DatasetInfo
from mg_tune.data.masks import annotated_subset, box_mask, class_box_masks, dilate_box
from mg_tune.data.smerf_rules import BOX1, BOX2, SMERF_RULES, TEXT, Reasoning, bucket_contents, smerf_reasoning
from mg_tune.data.textbox_scene import (
    BLACK,
    GAP,
    GLYPHS_5X7,
    IMAGE_SIZE,
    OBJECT_PIXELS,
    WHITE,
    Color,
    Scene,
    SceneObject,
    glyph,
    scatter,
)
from mg_tune.data.textures import texture

SPLITS: dict[str, int] = {"train": 0, "val": 1, "heldout": 2, "test": 3}

__all__ = [  # the scene and SMERF names are re-exported: mg_tune.data.textbox is where users import them from
    "BLACK", "BOX1", "BOX2", "GAP", "GLYPHS_5X7", "IMAGE_SIZE", "OBJECT_PIXELS", "SMERF_RULES", "SPLITS", "TEXT",
    "TEXTBOX_VARIANTS", "WHITE", "Color", "Reasoning", "Scene", "SceneObject", "TextBoxDataset", "MultiLabelTextBox",
    "SpuriousTextBox", "SmerfTextBox", "bucket_contents", "build_textbox", "glyph", "scatter", "smerf_reasoning",
]


def _one_hot(label: int, num_classes: int) -> tuple[int, ...]:
    return tuple(int(k == label) for k in range(num_classes))


class TextBoxDataset(Dataset):
    """Base class: lazy deterministic sample generation and the common sample dict.

    ``__getitem__(i)`` returns:

    * ``image``: FloatTensor ``[3, 64, 64]`` in [0, 1];
    * ``labels``: FloatTensor ``[K]``, multi-hot (``info.multilabel``) or one-hot;
    * ``masks``: FloatTensor ``[K, 64, 64]``, ``M_k`` = union of class k's boxes after
      ``dilate_box(box, dilation)`` (model guidance paper, Sec. 3); zeros for absent classes;
    * ``seg_masks``: FloatTensor ``[K, 64, 64]``, pixel masks of the same objects (undilated);
    * ``has_mask``: BoolTensor scalar; on ``train`` True only for the ``annotated_subset``
      (``annotation_fraction``), always True on other splits. Masks are returned for every
      sample (for evaluation); guidance losses must use only samples with ``has_mask``;
    * ``group``: LongTensor scalar (-1 without groups);
    * ``secondary_mask``: FloatTensor ``[64, 64]``, union of the (undilated) boxes of
      SMERF "objects to avoid" (zeros for non-SMERF variants);
    * ``index``: int.

    A variant adds its own options, keyword-only, and passes ``**common``
    (``annotation_fraction``, ``dilation``) on to this constructor.
    """

    info: ClassVar[DatasetInfo]

    def __init__(self, split: str, size: int, seed: int = 0, annotation_fraction: float = 1.0, dilation: float = 0.0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got split={split!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, got size={size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got seed={seed}")
        if not dilation >= 0:
            raise ValueError(f"dilation must be >= 0 (percent), got dilation={dilation}")
        self.split = split
        self.size = size
        self.seed = seed
        self.dilation = dilation
        self.annotation_fraction = annotation_fraction
        annotated = annotated_subset(size, annotation_fraction, seed)
        self._has_mask = annotated if split == "train" else torch.ones(size, dtype=torch.bool)

    def __len__(self) -> int:
        return self.size

    def _make_scene(self, rng: np.random.Generator) -> Scene:
        raise NotImplementedError

    def scene(self, i: int) -> Scene:
        """The unrendered sample ``i``, drawn from ``default_rng([seed, split_id, i])``."""
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for dataset of size {self.size}")
        return self._make_scene(np.random.default_rng([self.seed, SPLITS[self.split], int(i)]))

    def group_counts(self) -> dict[int, int]:
        """Number of samples per group present (empty without groups)."""
        return dict(sorted(Counter(g for g in (self.scene(i).group for i in range(self.size)) if g >= 0).items()))

    def boxes(self, i: int) -> list[tuple[int, int, int, int, int]]:
        """``(class_index, x0, y0, x1, y1)`` of every box forming ``masks`` for sample ``i``, before dilation."""
        scene = self.scene(i)
        return [(k, *scene.objects[j].box) for k, j in scene.class_objects]

    def __getitem__(self, i: int) -> dict[str, Any]:
        scene = self.scene(i)
        num_classes = self.info.num_classes
        classes = [k for k, _ in scene.class_objects]
        boxes = [
            dilate_box(scene.objects[j].box, self.dilation, IMAGE_SIZE, IMAGE_SIZE) for _, j in scene.class_objects
        ]
        seg = np.zeros((num_classes, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        for k, j in scene.class_objects:
            seg[k] |= scene.objects[j].seg_mask()
        return {
            "image": torch.from_numpy(scene.render()),
            "labels": torch.tensor(scene.labels, dtype=torch.float32),
            "masks": class_box_masks(boxes, classes, num_classes, IMAGE_SIZE, IMAGE_SIZE),
            "seg_masks": torch.from_numpy(seg).float(),
            "has_mask": self._has_mask[i].clone(),
            "group": torch.tensor(scene.group, dtype=torch.long),
            "secondary_mask": box_mask([scene.objects[j].box for j in scene.avoid], IMAGE_SIZE, IMAGE_SIZE),
            "index": int(i),
        }


class MultiLabelTextBox(TextBoxDataset):
    """(a) Multi-label TextBox: K=4 classes ``("A", "B", "Box1", "Box2")``.

    Each image holds a uniformly random non-empty subset of the classes (a 4-bit mask
    drawn from 1..15), one object per present class, white on a background of uniform
    noise in ``[0, noise)`` per pixel and channel, or with ``background="texture"``
    on a procedural texture in [0.1, 0.7] (:mod:`mg_tune.data.textures`), where
    Input×Gradient is not ≈ 0 around the objects. Setting for F1 / mAP / EPG / IoU.
    """

    info = DatasetInfo("textbox_multilabel", ("A", "B", "Box1", "Box2"), multilabel=True)

    def __init__(self, split: str, size: int, seed: int = 0, *, noise: float = 0.1, background: str = "noise", **common: Any) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must lie in [0, 1], got noise={noise}")
        if background not in ("noise", "texture"):
            raise ValueError(f"background must be 'noise' or 'texture', got background={background!r}")
        super().__init__(split, size, seed, **common)
        self.noise = noise
        self.background = background

    def _make_scene(self, rng: np.random.Generator) -> Scene:
        subset = int(rng.integers(1, 16))
        present = [k for k in range(4) if subset >> k & 1]
        objects = scatter(rng, [self.info.class_names[k] for k in present])
        if self.background == "texture":
            background = texture(rng, IMAGE_SIZE)
        else:
            background = rng.uniform(0.0, self.noise, (3, IMAGE_SIZE, IMAGE_SIZE))
        labels = tuple(int(k in present) for k in range(4))
        return Scene(background, objects, labels, tuple((k, j) for j, k in enumerate(present)))


class SpuriousTextBox(TextBoxDataset):
    """(b) Waterbirds-like TextBox with a background-colour shortcut (CRAYON, Sec. IV-A; Waterbirds).

    Foreground: letter "A" (label 0) or "B" (label 1), uniformly, drawn x``letter_scale``
    (default 3: 15x21 px) at a random offset inside a black square patch (at least
    ``PATCH`` px, large enough for the letter) at a random position; with
    ``letter_colors`` A is white and B yellow, else both white (shape only). The box
    mask of the label class is the patch; its segmentation mask is the letter strokes.
    Background outside the patch: land (greenish) or water (bluish) colour plus Gaussian
    noise (std ``BG_NOISE``); it equals the label (A-land, B-water) with probability
    ``spurious_rate`` on train/val/heldout and 0.5 on test. The black patch hides the cue
    inside the box. Group id = 2 * letter + background (0 = land, 1 = water).

    ``reversed`` mirrors Waterbirds' reversed setting (main paper Sec. 5.5, after
    Petryk et al. 2022): the label is the background (land 0 / water 1), the
    letter is the shortcut (equal to the label with probability
    ``spurious_rate``), and the label class's mask is everything *outside* the
    (dilated) patch box; groups stay 2 * letter + background.
    """

    info = DatasetInfo(
        "textbox_spurious", ("A", "B"), multilabel=False, group_names=("A/land", "A/water", "B/land", "B/water")
    )
    REVERSED_INFO = DatasetInfo(
        "textbox_spurious_reversed", ("land", "water"), multilabel=False, group_names=("A/land", "A/water", "B/land", "B/water")
    )
    PATCH = 20
    LETTER_COLORS: tuple[Color, Color] = ((1.0, 1.0, 1.0), (1.0, 0.8, 0.2))
    """With ``letter_colors``: A white, B yellow (the object itself differs in colour, as birds do)."""
    BACKGROUNDS: tuple[Color, Color] = ((0.35, 0.60, 0.20), (0.15, 0.35, 0.75))
    BG_NOISE = 0.05
    TEST_RATE = 0.5

    def __init__(
        self, split: str, size: int, seed: int = 0, *, spurious_rate: float = 0.95, letter_scale: int = 3, letter_colors: bool = False, reversed: bool = False, **common: Any
    ) -> None:
        if not 0.0 <= spurious_rate <= 1.0:
            raise ValueError(f"spurious_rate must lie in [0, 1], got spurious_rate={spurious_rate}")
        if letter_scale not in (1, 2, 3):
            raise ValueError(f"letter_scale must be 1, 2 or 3, got letter_scale={letter_scale}")
        super().__init__(split, size, seed, **common)
        self.spurious_rate = spurious_rate
        self.letter_scale = letter_scale
        self.letter_colors = letter_colors
        self.reversed = reversed
        if reversed:
            self.info = self.REVERSED_INFO
        self.patch = max(self.PATCH, 7 * letter_scale + 2 * GAP + 2)

    @property
    def cue_rate(self) -> float:
        """Probability that background == label on this split."""
        return self.TEST_RATE if self.split == "test" else self.spurious_rate

    def _make_scene(self, rng: np.random.Generator) -> Scene:
        label = int(rng.integers(2))
        cue = label if rng.random() < self.cue_rate else 1 - label
        letter_id, background = (cue, label) if self.reversed else (label, cue)
        colour = np.asarray(self.BACKGROUNDS[background])[:, None, None]
        canvas = np.clip(colour + rng.normal(0.0, self.BG_NOISE, (3, IMAGE_SIZE, IMAGE_SIZE)), 0.0, 1.0)
        letter = SpuriousTextBox.info.class_names[letter_id]
        strokes = glyph(letter, self.letter_scale)
        h, w = strokes.shape
        side = self.patch
        px, py = (int(v) for v in rng.integers(0, IMAGE_SIZE - side + 1, size=2))
        lx, ly = (int(v) for v in rng.integers(GAP, [side - w - GAP + 1, side - h - GAP + 1]))
        pixels = np.zeros((side, side), dtype=bool)
        pixels[ly : ly + h, lx : lx + w] = strokes
        color = self.LETTER_COLORS[letter_id] if self.letter_colors else WHITE
        patch = SceneObject(letter, (px, py, px + side, py + side), pixels, color=color, fill=BLACK)
        return Scene(canvas, (patch,), _one_hot(label, 2), ((label, 0),), group=2 * letter_id + background)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = super().__getitem__(i)
        if self.reversed:  # attend to the background: the complement of the (dilated) patch box
            label = int(sample["labels"].argmax())
            sample["seg_masks"][label] = 1.0 - box_mask([self.scene(i).objects[0].box], IMAGE_SIZE, IMAGE_SIZE)
            sample["masks"][label] = 1.0 - sample["masks"][label]
        return sample



class SmerfTextBox(TextBoxDataset):
    """(c) A SMERF reasoning setting (SMERF Sec. 3.2, Table 1; App. A.1).

    Black background, objects per ``bucket_contents``. The bucket is drawn from the
    defined buckets of the setting: uniformly on val/heldout/test and, on train, with
    class-balanced weights (each class gets half the mass, spread uniformly over its
    buckets); this reproduces App. A.1 / Table 2 (Complex-FR trains on 3x more samples of
    buckets 10-12) and is uniform for the other, already balanced, settings. Class
    ``label`` has ``masks[label]`` = union of the boxes of the objects to focus (empty for
    "N"); ``secondary_mask`` = union of the boxes of the objects to avoid.
    """

    setting: ClassVar[str]
    CLASS_NAMES = ("negative", "positive")

    buckets: ClassVar[np.ndarray]
    """The buckets the setting defines (1..12, Table 1)."""
    bucket_labels: ClassVar[np.ndarray]

    def __init_subclass__(cls, setting: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.setting = setting
        cls.info = DatasetInfo(f"textbox_{setting}", cls.CLASS_NAMES, multilabel=False, smerf=True)
        table = {b: smerf_reasoning(setting, b) for b in range(1, 13)}
        cls.buckets = np.array([b for b, r in table.items() if r is not None])
        cls.bucket_labels = np.array([table[b].label for b in cls.buckets])

    @functools.cached_property
    def bucket_probs(self) -> np.ndarray:
        """Probability of drawing each of :attr:`buckets` on this split: class-balanced on train, uniform elsewhere."""
        labels = self.bucket_labels
        if self.split == "train":
            weights = np.array([1.0 / np.sum(labels == y) for y in labels])
        else:
            weights = np.ones(len(self.buckets))
        return weights / weights.sum()

    def bucket(self, i: int) -> int:
        """SMERF bucket id (1..12) of sample ``i``."""
        return self.scene(i).bucket

    def _make_scene(self, rng: np.random.Generator) -> Scene:
        bucket = int(rng.choice(self.buckets, p=self.bucket_probs))
        text, box1, box2 = bucket_contents(bucket)
        kinds = [k for k, on in ((text, text is not None), ("Box1", box1), ("Box2", box2)) if on]
        objects = scatter(rng, kinds)
        reasoning = SMERF_RULES[self.setting](text, box1, box2)
        names = [{"Box1": BOX1, "Box2": BOX2}.get(o.name, TEXT) for o in objects]
        return Scene(
            background=np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32),
            objects=objects,
            labels=_one_hot(reasoning.label, 2),
            class_objects=tuple((reasoning.label, j) for j, n in enumerate(names) if n in reasoning.focus),
            avoid=tuple(j for j, n in enumerate(names) if n in reasoning.avoid),
            bucket=bucket,
        )


class SimpleFRTextBox(SmerfTextBox, setting="simple_fr"):
    """Simple-FR (Table 1, col. 1): label 1 iff Box1 is present; 12 buckets."""


class SimpleNRTextBox(SmerfTextBox, setting="simple_nr"):
    """Simple-NR (Table 1, col. 2): label from the letter (A: 0, B: 1); buckets without text undefined."""


class ComplexFRTextBox(SmerfTextBox, setting="complex_fr"):
    """Complex-FR (Table 1, col. 3; SMERF Fig. 5): label 1 iff Box1 and Box2 are both present."""


class ComplexCR1TextBox(SmerfTextBox, setting="complex_cr1"):
    """Complex-CR1 (Table 1, col. 4): boxes decide when Box2 is present, the letter otherwise."""


class ComplexCR2TextBox(SmerfTextBox, setting="complex_cr2"):
    """Complex-CR2 (Table 1, col. 5): boxes decide when Box1 is present, the letter otherwise."""


class ComplexCR3TextBox(SmerfTextBox, setting="complex_cr3"):
    """Complex-CR3 (Table 1, col. 6): the letter decides when Box2 is present, Box1 otherwise."""


class ComplexCR4TextBox(SmerfTextBox, setting="complex_cr4"):
    """Complex-CR4 (Table 1, col. 7): the letter decides when Box1 is present, Box2 otherwise."""


TEXTBOX_VARIANTS: dict[str, type[TextBoxDataset]] = {
    "multilabel": MultiLabelTextBox,
    "spurious": SpuriousTextBox,
    **{cls.setting: cls for cls in SmerfTextBox.__subclasses__()},
}


def build_textbox(variant: str, split: str, size: int, seed: int = 0, **options: Any) -> TextBoxDataset:
    """Instantiate ``TEXTBOX_VARIANTS[variant](split, size, seed, **options)``."""
    if variant not in TEXTBOX_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(TEXTBOX_VARIANTS)}, got variant={variant!r}")
    return TEXTBOX_VARIANTS[variant](split, size, seed, **options)

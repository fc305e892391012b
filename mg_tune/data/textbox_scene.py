"""TextBox scenes: the embedded glyphs and boxes, their placement and rendering (SMERF Sec. 3.1, App. A.1).

Images are ``IMAGE_SIZE`` x ``IMAGE_SIZE`` RGB floats in [0, 1]. Objects (SMERF Fig. 4) are
white on a dark background and never overlap (at least ``GAP`` pixels apart):

* Text: a letter of the embedded 5x7 bitmap font ``GLYPHS_5X7``, scaled x3 (15x21 px);
  its segmentation mask is the stroke pixels, its box the tight 15x21 rectangle.
* Box1: a filled 10x10 box; Box2: a filled 4x4 box (segmentation mask = box).

A :class:`Scene` is everything about one sample before rendering; the data sets of
:mod:`mg_tune.data.textbox` draw scenes, this module places and paints them.
Boxes follow ``mg_tune.data.masks`` conventions: ``(x0, y0, x1, y1)``, x = column, y = row,
x1/y1 exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mg_tune.data.masks import Box

IMAGE_SIZE = 64
GAP = 2
"""Minimum number of background pixels between any two objects."""
_MAX_PLACEMENT_TRIES = 1000

Color = tuple[float, float, float]
WHITE: Color = (1.0, 1.0, 1.0)
BLACK: Color = (0.0, 0.0, 0.0)

GLYPHS_5X7: dict[str, tuple[str, ...]] = {
    "A": (
        ".###.",
        "#...#",
        "#...#",
        "#####",
        "#...#",
        "#...#",
        "#...#",
    ),
    "B": (
        "####.",
        "#...#",
        "#...#",
        "####.",
        "#...#",
        "#...#",
        "####.",
    ),
}
"""Embedded bitmap font: 7 rows of 5 columns per letter, '#' = stroke pixel."""


def glyph(letter: str, scale: int) -> np.ndarray:
    """Stroke mask of ``letter`` as a read-only bool array ``[7*scale, 5*scale]`` (nearest-neighbour upscaling)."""
    rows = np.array([[c == "#" for c in row] for row in GLYPHS_5X7[letter]])
    pixels = rows.repeat(scale, axis=0).repeat(scale, axis=1)
    pixels.flags.writeable = False
    return pixels


def _solid(side: int) -> np.ndarray:
    pixels = np.ones((side, side), dtype=bool)
    pixels.flags.writeable = False
    return pixels


OBJECT_PIXELS: dict[str, np.ndarray] = {
    "A": glyph("A", 3),
    "B": glyph("B", 3),
    "Box1": _solid(10),
    "Box2": _solid(4),
}
"""Segmentation mask (``[h, w]`` bool) of each object kind; its shape is the object's box size."""


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One drawn object.

    ``pixels`` is the segmentation mask inside ``box`` (shape ``[y1-y0, x1-x0]``), painted
    with ``color``; if ``fill`` is set, the whole box is first painted with ``fill``.
    """

    name: str
    box: Box
    pixels: np.ndarray
    color: Color = WHITE
    fill: Color | None = None

    def seg_mask(self, size: int = IMAGE_SIZE) -> np.ndarray:
        """Full-image bool segmentation mask ``[size, size]``."""
        x0, y0, x1, y1 = self.box
        mask = np.zeros((size, size), dtype=bool)
        mask[y0:y1, x0:x1] = self.pixels
        return mask


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything about one sample before rendering.

    ``labels`` is the multi-/one-hot label vector; ``class_objects`` lists pairs
    ``(class k, object index)``: the object's box belongs to ``M_k`` (masks) and its pixels
    to the class's segmentation mask; ``avoid`` lists object indices forming the secondary
    ("objects to avoid") mask; ``bucket`` is the SMERF bucket id (None outside SMERF).
    """

    background: np.ndarray
    objects: tuple[SceneObject, ...]
    labels: tuple[int, ...]
    class_objects: tuple[tuple[int, int], ...]
    avoid: tuple[int, ...] = ()
    group: int = -1
    bucket: int | None = None

    def render(self) -> np.ndarray:
        """Paint objects, in order, over the background; returns float32 ``[3, H, W]`` in [0, 1]."""
        image = self.background.astype(np.float32, copy=True)
        for obj in self.objects:
            x0, y0, x1, y1 = obj.box
            region = image[:, y0:y1, x0:x1]
            if obj.fill is not None:
                region[:] = np.asarray(obj.fill, dtype=np.float32)[:, None, None]
            region[:, obj.pixels] = np.asarray(obj.color, dtype=np.float32)[:, None]
        return image


def _apart(a: Box, b: Box, gap: int) -> bool:
    """True iff boxes ``a`` and ``b`` are separated by at least ``gap`` pixels along x or y."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def scatter(rng: np.random.Generator, kinds: Sequence[str], size: int = IMAGE_SIZE) -> tuple[SceneObject, ...]:
    """Place one object per kind (keys of ``OBJECT_PIXELS``) uniformly at random, pairwise ``GAP`` apart.

    Rejection sampling: each object's top-left corner is redrawn until it clears all
    previously placed objects (SMERF App. A.1: locations "constrained to avoid overlapping").
    """
    objects: list[SceneObject] = []
    for kind in kinds:
        pixels = OBJECT_PIXELS[kind]
        h, w = pixels.shape
        for _ in range(_MAX_PLACEMENT_TRIES):
            x0, y0 = (int(v) for v in rng.integers(0, [size - w + 1, size - h + 1]))
            box = (x0, y0, x0 + w, y0 + h)
            if all(_apart(box, other.box, GAP) for other in objects):
                objects.append(SceneObject(kind, box, pixels))
                break
        else:
            raise RuntimeError(f"could not place {list(kinds)} without overlap in a {size}x{size} image")
    return tuple(objects)

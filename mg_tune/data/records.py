"""The index of a real data set: :class:`Record` (one image, everything but its pixels) and what builds it.

A loader parses its annotation files into records; the helpers here validate what it reads
and name the file at fault (:class:`DatasetError`): boxes (:func:`pixel_box`), directories
and files (:func:`require_dir`, :func:`require_file`), the ``on_bad_sample`` policy
(:class:`BadSamples`), and the seeded carving of a split out of another (:func:`carve`).

Boxes everywhere are ``(x0, y0, x1, y1)`` in 0-based pixel coordinates of the
original image, x0/y0 inclusive and x1/y1 exclusive (:mod:`mg_tune.data.masks`).
Formats with real-valued coordinates (COCO, CUB) are converted to the smallest
pixel box covering the rectangle, ``x0 = floor(x)``, ``x1 = ceil(x + w)``; a box
may exceed the image by less than :data:`BOX_SLACK` pixel (float round-off in
those files) and is then clipped; anything further is a :class:`DatasetError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mg_tune.data.errors import DatasetError

BOX_SLACK = 1.0
"""A real-valued box may exceed the image by less than this many pixels (then it is clipped)."""

Box5 = tuple[int, int, int, int, int]
"""``(class_index, x0, y0, x1, y1)``."""


@dataclass(frozen=True, slots=True)
class Record:
    """One image of the index: everything but the pixels.

    ``labels`` are the class indices present (for single-label sets the one label);
    ``boxes`` are ``(k, x0, y0, x1, y1)`` before dilation; ``source`` is the
    annotation file (for error messages); ``seg`` is a loader-specific handle to the
    image's segmentation masks (None when it has none). ``difficult`` (VOC objects marked
    difficult) and ``crowd`` (COCO ``iscrowd`` regions) count what the annotation holds,
    whatever the options kept of it (``data check`` reports them).
    """

    image: str
    width: int
    height: int
    labels: tuple[int, ...]
    boxes: tuple[Box5, ...]
    source: str
    group: int = -1
    seg: Any = None
    difficult: int = 0
    crowd: int = 0


def pixel_box(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int, path: str | Path, what: str
) -> tuple[int, int, int, int]:
    """Smallest pixel box ``(floor x0, floor y0, ceil x1, ceil y1)`` covering a real rectangle, validated.

    Raises :class:`DatasetError` for non-finite values, a zero-area rectangle, or one
    lying outside the ``width`` x ``height`` image by :data:`BOX_SLACK` pixel or more.
    """
    values = (x0, y0, x1, y1)
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(path, f"{what}: box coordinates {values} are not finite numbers")
    if not (x1 > x0 and y1 > y0):
        raise DatasetError(path, f"{what}: zero-area box (x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g})")
    if x0 <= -BOX_SLACK or y0 <= -BOX_SLACK or x1 >= width + BOX_SLACK or y1 >= height + BOX_SLACK:
        raise DatasetError(
            path,
            f"{what}: box (x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g}) lies outside the {width}x{height} image",
        )
    box = (max(0, math.floor(x0)), max(0, math.floor(y0)), min(width, math.ceil(x1)), min(height, math.ceil(y1)))
    if not (box[2] > box[0] and box[3] > box[1]):
        raise DatasetError(path, f"{what}: zero-area box (x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g}) after clipping")
    return box



def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else DatasetError naming it."""
    if not path.is_dir():
        raise DatasetError(path, f"{what} directory is missing")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(path, f"{what} is missing")
    return path


class BadSamples:
    """``on_bad_sample`` policy: re-raise (``"error"``) or skip, count and warn once (``"skip"``)."""

    def __init__(self, mode: str, dataset: str) -> None:
        if mode not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {mode!r}")
        self.mode = mode
        self.dataset = dataset
        self.skipped = 0
        self.first: str | None = None

    def handle(self, exc: DatasetError) -> None:
        """Raise ``exc`` in error mode, else count it."""
        if self.mode == "error":
            raise exc
        self.skipped += 1
        self.first = self.first or str(exc)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or None when it raised a DatasetError that is skipped."""
        try:
            return fn(*args)
        except DatasetError as exc:
            self.handle(exc)
            return None

    def finish(self) -> None:
        """One warning for everything skipped."""
        if self.skipped:
            warnings.warn(
                f"{self.dataset}: skipped {self.skipped} bad sample(s) (on_bad_sample='skip'); first: {self.first}",
                stacklevel=3,
            )


def carve(items: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Split ``items`` into ``(rest, carved)``: ``carved`` is a seeded random ``fraction`` of them.

    ``round(fraction * n)`` items (at least 1 when ``fraction > 0`` and ``n > 1``, and
    never all of them when ``fraction < 1``) are drawn by the permutation of
    ``numpy.random.default_rng(seed)``; both parts keep the original order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    n = len(items)
    k = int(round(fraction * n))
    if fraction > 0 and n > 1:
        k = max(k, 1)
    if fraction < 1 and n > 1:
        k = min(k, n - 1)
    chosen = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    rest = [x for i, x in enumerate(items) if i not in chosen]
    carved_ = [x for i, x in enumerate(items) if i in chosen]
    return rest, carved_


SegLoader = Callable[[Record], dict[int, np.ndarray]]
"""Per-class bool segmentation masks ``{k: [H, W]}`` of a record (an empty dict if it has none)."""

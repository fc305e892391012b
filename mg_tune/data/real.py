"""Shared machinery of the real data sets (VOC, COCO, Waterbirds), read from the user's local copies.

``DataConfig.root`` may also be ``s3://bucket/prefix``: :mod:`mg_tune.data.remote`
mirrors it into a node-local cache first (``Loader.split``).

Each loader (:mod:`mg_tune.data.voc`, :mod:`mg_tune.data.coco`,
:mod:`mg_tune.data.waterbirds`) parses its annotation files once into a list of
:class:`Record` (the *index*: file names, image sizes, labels and boxes, never
pixels) and hands it to :class:`AnnotatedImageDataset`, which decodes one image
per ``__getitem__`` and returns the sample dict of
:class:`mg_tune.data.textbox.TextBoxDataset`:

* ``image``: FloatTensor ``[3, S, S]`` in [0, 1], ``S = image_size``;
* ``labels``: FloatTensor ``[K]`` (multi-hot, or one-hot for single-label sets);
* ``masks``: **uint8** ``[K, S, S]``, ``M_k`` = union of class k's boxes after
  ``dilate_box(box, dilation)`` (Waterbirds "reversed": the region *outside* the box);
* ``seg_masks``: **uint8** ``[K, S, S]``, per-class segmentation masks (zeros where
  the image has none; see ``has_seg``);
* ``has_mask``: BoolTensor scalar (``annotation_fraction`` subset on ``train``,
  always True elsewhere); ``has_seg``: BoolTensor scalar, the image has segmentation masks;
* ``group``: LongTensor scalar (-1 without groups); ``secondary_mask``: uint8
  ``[S, S]`` zeros; ``index``: int.

Masks are uint8 0/1 rather than float (80 float masks of 224 px are 16 MB per
COCO sample); every consumer (trainer losses, metrics, overlays) casts with
``.float()`` / ``_prepare`` before arithmetic.

Geometry: masks are rasterised at the image's own resolution, then the image
and all masks go through **one** ``torchvision.transforms.v2`` call (a
``tv_tensors.Image`` and a ``tv_tensors.Mask``): ``Resize((S, S))`` (bilinear,
antialiased, for the image; nearest-exact for masks, :class:`PixelMask`), or on ``train`` with
``augment`` ``RandomResizedCrop((S, S))`` + ``RandomHorizontalFlip()``, so crops
and flips stay aligned pixel for pixel.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from mg_tune.data.base import DatasetInfo
from mg_tune.data.errors import DatasetError
from mg_tune.data.masks import annotated_subset, dilate_box
from mg_tune.data.remote import local_root  # s3:// roots are mirrored into a node-local cache

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


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image header only (no decoding); DatasetError if missing or unreadable."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(path, f"not a readable image ({exc})") from None


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


class PixelMask(tv_tensors.Mask):
    """A ``tv_tensors.Mask`` that is resized with ``NEAREST_EXACT`` instead of v2's legacy ``NEAREST``.

    Legacy nearest (``floor(i * scale)``) shifts a mask by up to half an input pixel
    against the image's bilinear resize, which samples at pixel centres; nearest-exact
    (``floor((i + 0.5) * scale)``) samples the same centres, so a mask stays on the
    pixels it covers in the image. Every other kernel (crop, flip) is the Mask's own.
    """


@TF.register_kernel(TF.resize, PixelMask)
def _resize_pixel_mask(mask: torch.Tensor, size: list[int] | None, interpolation: Any = None, max_size: int | None = None, antialias: Any = None) -> torch.Tensor:
    out = TF.resize_mask(mask.as_subclass(torch.Tensor), size, interpolation=InterpolationMode.NEAREST_EXACT, max_size=max_size)
    return tv_tensors.wrap(out, like=mask)


@TF.register_kernel(TF.resized_crop, PixelMask)
def _resized_crop_pixel_mask(mask: torch.Tensor, top: int, left: int, height: int, width: int, size: list[int], **kwargs: Any) -> torch.Tensor:
    cropped = TF.crop_mask(mask.as_subclass(torch.Tensor), top, left, height, width)
    out = TF.resize_mask(cropped, size, interpolation=InterpolationMode.NEAREST_EXACT)
    return tv_tensors.wrap(out, like=mask)


def build_transform(size: int, augment: bool) -> v2.Compose:
    """The one geometric transform applied to an image and its masks together (see module doc)."""
    if augment:
        geometry = [v2.RandomResizedCrop((size, size), antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize((size, size), antialias=True)]
    return v2.Compose([*geometry, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])


def load_rgb(path: str, width: int, height: int) -> torch.Tensor:
    """Decode ``path`` as uint8 ``[3, H, W]`` RGB; DatasetError if unreadable or not ``width`` x ``height``."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(path, f"not a readable image ({exc})") from None
    if rgb.size != (width, height):
        raise DatasetError(path, f"image is {rgb.size[0]}x{rgb.size[1]} but its annotation says {width}x{height}")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


SegLoader = Callable[[Record], dict[int, np.ndarray]]
"""Per-class bool segmentation masks ``{k: [H, W]}`` of a record (an empty dict if it has none)."""


class AnnotatedImageDataset(Dataset):
    """Images decoded lazily from an index of :class:`Record`; the sample dict of the module doc.

    ``invert_boxes``: the guidance region of class ``k`` is the complement of its
    (dilated) boxes (Waterbirds "reversed" setting).
    """

    def __init__(
        self,
        records: Sequence[Record],
        info: DatasetInfo,
        split: str,
        image_size: int = 224,
        augment: bool = False,
        dilation: float = 0.0,
        annotation_fraction: float = 1.0,
        seed: int = 0,
        seg_loader: SegLoader | None = None,
        invert_boxes: bool = False,
    ) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not dilation >= 0:
            raise ValueError(f"dilation must be >= 0 (percent), got dilation={dilation}")
        self.records = list(records)
        self.info = info
        self.split = split
        self.image_size = image_size
        self.augment = augment and split == "train"
        self.dilation = dilation
        self.annotation_fraction = annotation_fraction
        self.seed = seed
        self.seg_loader = seg_loader
        self.invert_boxes = invert_boxes
        self.transform = build_transform(image_size, self.augment)
        n = len(self.records)
        self._has_mask = annotated_subset(n, annotation_fraction, seed) if split == "train" else torch.ones(n, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.records)

    def boxes(self, i: int) -> list[Box5]:
        """``(class_index, x0, y0, x1, y1)`` of every box of sample ``i`` (original pixels, before dilation)."""
        return list(self.records[i].boxes)

    def class_counts(self) -> list[int]:
        """Number of images containing each class."""
        counts = [0] * self.info.num_classes
        for r in self.records:
            for k in set(r.labels):
                counts[k] += 1
        return counts

    def _planes(self, r: Record) -> tuple[list[int], list[int], np.ndarray]:
        """Box classes, segmentation classes and their uint8 planes ``[C, H, W]`` at the image's resolution."""
        box_classes = sorted({b[0] for b in r.boxes})
        segs = self.seg_loader(r) if (self.seg_loader is not None and r.seg is not None) else {}
        planes = np.zeros((max(1, len(box_classes) + len(segs)), r.height, r.width), dtype=np.uint8)
        row = {k: j for j, k in enumerate(box_classes)}
        for k, x0, y0, x1, y1 in r.boxes:
            a0, b0, a1, b1 = dilate_box((x0, y0, x1, y1), self.dilation, r.height, r.width)
            planes[row[k], b0:b1, a0:a1] = 1
        if self.invert_boxes:
            planes[: len(box_classes)] ^= 1
        for j, m in enumerate(segs.values(), start=len(box_classes)):
            planes[j] = m
        return box_classes, list(segs), planes

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        image = load_rgb(r.image, r.width, r.height)
        box_classes, seg_classes, planes = self._planes(r)
        out_image, out_masks = self.transform(tv_tensors.Image(image), PixelMask(torch.from_numpy(planes)))
        out_masks = out_masks.as_subclass(torch.Tensor)
        s, k = self.image_size, self.info.num_classes
        masks = torch.zeros(k, s, s, dtype=torch.uint8)
        seg_masks = torch.zeros(k, s, s, dtype=torch.uint8)
        nb = len(box_classes)
        if box_classes:
            masks[box_classes] = out_masks[:nb]
        if seg_classes:
            seg_masks[seg_classes] = out_masks[nb : nb + len(seg_classes)]
        labels = torch.zeros(k)
        labels[list(r.labels)] = 1.0
        return {
            "image": out_image.as_subclass(torch.Tensor).clamp_(0.0, 1.0),
            "labels": labels,
            "masks": masks,
            "seg_masks": seg_masks,
            "has_mask": self._has_mask[i].clone(),
            "has_seg": torch.tensor(r.seg is not None and self.seg_loader is not None),
            "group": torch.tensor(r.group, dtype=torch.long),
            "secondary_mask": torch.zeros(s, s, dtype=torch.uint8),
            "index": int(i),
        }


@dataclass
class SplitReport:
    """Counts of one split, printed by ``mg-tune data check``.

    ``images``, ``boxes`` and the per-class counts are what a search loads (after the
    options: ``difficult``, ``crowd``, ``empty_images``, ``max_samples``); ``difficult`` and
    ``crowd`` count the difficult objects and crowd regions the split's annotations hold;
    ``unlabeled`` the images left without any label (all-negative samples).
    """

    split: str
    images: int
    boxes: int
    with_seg: int
    class_counts: list[int]
    group_counts: dict[int, int] = field(default_factory=dict)
    box_counts: list[int] = field(default_factory=list)
    difficult: int = 0
    crowd: int = 0
    unlabeled: int = 0

    @property
    def classes_without_boxes(self) -> list[int]:
        """Indices of the classes no box of the split belongs to (they cannot be guided here)."""
        return [k for k, n in enumerate(self.box_counts) if n == 0]


def split_report(split: str, records: Iterable[Record], num_classes: int, has_seg: Callable[[Record], bool]) -> SplitReport:
    """Count images, boxes, images with segmentation, images and boxes per class, groups, difficult, crowd, unlabeled."""
    records = list(records)
    counts, box_counts = [0] * num_classes, [0] * num_classes
    groups: dict[int, int] = {}
    for r in records:
        for k in set(r.labels):
            counts[k] += 1
        for box in r.boxes:
            box_counts[box[0]] += 1
        if r.group >= 0:
            groups[r.group] = groups.get(r.group, 0) + 1
    return SplitReport(
        split=split,
        images=len(records),
        boxes=sum(len(r.boxes) for r in records),
        with_seg=sum(1 for r in records if has_seg(r)),
        class_counts=counts,
        group_counts=dict(sorted(groups.items())),
        box_counts=box_counts,
        difficult=sum(r.difficult for r in records),
        crowd=sum(r.crowd for r in records),
        unlabeled=sum(1 for r in records if not r.labels),
    )


def verify_images(records: Iterable[Record], bad: BadSamples, seg_loader: SegLoader | None) -> list[Record]:
    """Records whose image header matches the annotated size and whose segmentation masks load."""
    kept = []
    for r in records:
        try:
            w, h = image_size(r.image)
            if (w, h) != (r.width, r.height):
                raise DatasetError(r.image, f"image is {w}x{h} but {r.source} says {r.width}x{r.height}")
            if seg_loader is not None and r.seg is not None:
                seg_loader(r)
        except DatasetError as exc:
            bad.handle(exc)
            continue
        kept.append(r)
    return kept


RecordsFn = Callable[[str, str, Any, str, str], tuple[DatasetInfo, list[Record]]]
"""``(root, split, options, variant, on_bad_sample) -> (info, records)``."""


@dataclass(frozen=True)
class Loader:
    """One real data set: its variants, its ``options`` model, its index and segmentation readers."""

    name: str
    variants: tuple[str, ...]
    options: type
    records: RecordsFn
    seg_loader: SegLoader | None = None
    inverted_variants: tuple[str, ...] = ()
    cache_clear: Callable[[], None] = lambda: None
    """Forget the parsed indexes (they are cached per process, keyed by root and options)."""

    def split(self, data: Any, split: str) -> tuple[DatasetInfo, list[Record]]:
        """``(info, records)`` of ``split`` for a :class:`mg_tune.config.DataConfig` (``max_samples`` applied)."""
        if data.root is None:
            raise DatasetError("data.root", f"is required for data set {self.name!r}")
        options = self.options.model_validate(data.options)
        info, records = self.records(str(local_root(data.root)), split, options, data.variant, data.on_bad_sample)
        if data.max_samples is not None:
            records = records[: data.max_samples]
        if not records:
            raise DatasetError(data.root, f"the {split!r} split of {self.name} is empty (check the split files and options)")
        return info, records

    def build(self, data: Any, split: str) -> AnnotatedImageDataset:
        """The ``split`` of this data set as an :class:`AnnotatedImageDataset`."""
        info, records = self.split(data, split)
        return AnnotatedImageDataset(
            records, info, split,
            image_size=data.image_size, augment=data.augment, dilation=data.dilation,
            annotation_fraction=data.annotation_fraction, seed=data.seed,
            seg_loader=self.seg_loader, invert_boxes=data.variant in self.inverted_variants,
        )

    def check(self, data: Any, splits: Sequence[str], images: bool = True) -> tuple[DatasetInfo, list[SplitReport]]:
        """Load and validate every split's index (with ``images``: image headers and segmentation files too).

        Indexes are re-read from disk (the cache is cleared first).
        """
        self.cache_clear()
        reports, info = [], None
        for split in splits:
            info, records = self.split(data, split)
            if images:
                bad = BadSamples(data.on_bad_sample, f"{self.name} {split}")
                records = verify_images(records, bad, self.seg_loader)
                bad.finish()
            reports.append(split_report(split, records, info.num_classes, lambda r: r.seg is not None))
        return info, reports

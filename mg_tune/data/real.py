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

The pieces live in their own modules: :mod:`mg_tune.data.records` (the index and the
checks of what a loader reads: boxes, files, ``on_bad_sample``, carving splits),
:mod:`mg_tune.data.images` (decoding, and the one geometric transform of an image and
its masks) and :mod:`mg_tune.data.split_report` (what ``data check`` counts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mg_tune.data.base import DatasetInfo
from mg_tune.data.errors import DatasetError
from mg_tune.data.images import PixelMask, build_transform, load_rgb
from mg_tune.data.masks import annotated_subset, dilate_box
from mg_tune.data.records import BadSamples, Box5, Record, SegLoader
from mg_tune.data.remote import local_root  # s3:// roots are mirrored into a node-local cache
from mg_tune.data.split_report import Progress, SplitReport, split_report, split_warnings, verify_images

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

    def group_counts(self) -> dict[int, int]:
        """Number of images per group present (empty without groups)."""
        return dict(sorted(Counter(r.group for r in self.records if r.group >= 0).items()))

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
        image = load_rgb(r.image, r.width, r.height, r.source)
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



RecordsFn = Callable[[str, str, Any, str, str], tuple[DatasetInfo, list[Record]]]
"""``(root, split, options, variant, on_bad_sample) -> (info, records)``."""


@dataclass(frozen=True)
class Loader:
    """One real data set: its variants (the first is the default), its ``options`` model, its index and segmentation readers.

    ``multilabel`` and ``groups`` say which metrics the data set can measure
    (:func:`mg_tune.data.unsupported_metrics`; without ``seg_loader`` it has no
    segmentation masks); ``title`` names it in messages (default: ``name``).
    """

    name: str
    variants: tuple[str, ...]
    options: type
    records: RecordsFn
    seg_loader: SegLoader | None = None
    inverted_variants: tuple[str, ...] = ()
    cache_clear: Callable[[], None] = lambda: None
    """Forget the parsed indexes (they are cached per process, keyed by root and options)."""
    multilabel: bool = False
    groups: bool = False
    title: str = ""

    @property
    def default_variant(self) -> str:
        return self.variants[0]

    def split(self, data: Any, split: str, decode: bool = True) -> tuple[DatasetInfo, list[Record]]:
        """``(info, records)`` of ``split`` for a :class:`mg_tune.config.DataConfig` (``max_samples`` applied).

        With ``on_bad_sample: skip`` (and ``decode``) every image of the split is decoded
        here, once, and the records whose image does not decode (or whose segmentation
        file does not load) are skipped, counted and warned about (:class:`BadSamples`):
        the split is then the same for every epoch, every DataLoader worker and every
        trial, and its size is known before training. With ``error`` (the default)
        images are decoded when a batch needs them and the first bad one stops the run
        with its file named (``mg-tune data check`` finds them all beforehand).
        """
        if data.root is None:
            raise DatasetError("data.root", f"is required for data set {self.name!r}")
        options = self.options.model_validate(data.options)
        info, records = self.records(str(local_root(data.root)), split, options, data.variant, data.on_bad_sample)
        if data.max_samples is not None:
            records = records[: data.max_samples]
        if decode and data.on_bad_sample == "skip":
            records = self.decodable(records, data, split)
        return info, self._non_empty(records, data, split)

    def _non_empty(self, records: list[Record], data: Any, split: str) -> list[Record]:
        """``records``, or one line saying why the split is empty: for a split carved out of another, the options that size it."""
        if records:
            return records
        options = self.options.model_validate(data.options)
        sizing = {"val": ["val_fraction"], "heldout": ["val_fraction", "heldout_fraction"]}.get(split, [])
        carved = [f"{name}={getattr(options, name)}" for name in sizing if hasattr(options, name)]
        hint = (
            f"it is carved out of the training images by {' and '.join(carved)}: raise {'them' if len(carved) > 1 else 'it'} (--option NAME=VALUE, or data.options in a spec) or add images"
            if carved else "check the split files and options"
        )
        raise DatasetError(data.root, f"the {split!r} split of {self.name} is empty ({hint})")

    def decodable(self, records: Sequence[Record], data: Any, split: str, progress: Progress | None = None) -> list[Record]:
        """The records whose image decodes and whose segmentation loads (:func:`verify_images`), under ``data.on_bad_sample``."""
        bad = BadSamples(data.on_bad_sample, f"{self.title or self.name} {split} images")
        kept = verify_images(records, bad, self.seg_loader, progress)
        bad.finish()
        return kept

    def build(self, data: Any, split: str) -> AnnotatedImageDataset:
        """The ``split`` of this data set as an :class:`AnnotatedImageDataset`."""
        info, records = self.split(data, split)
        return AnnotatedImageDataset(
            records, info, split,
            image_size=data.image_size, augment=data.augment, dilation=data.dilation,
            annotation_fraction=data.annotation_fraction, seed=data.seed,
            seg_loader=self.seg_loader, invert_boxes=data.variant in self.inverted_variants,
        )

    def check(
        self,
        data: Any,
        splits: Sequence[str],
        images: bool = True,
        progress: Callable[[str], Progress | None] = lambda split: None,
        warn: Callable[[str], None] = lambda text: None,
    ) -> tuple[DatasetInfo, list[SplitReport]]:
        """Load and validate every split's index (with ``images``: every image decoded whole, and segmentation files).

        Indexes are re-read from disk (the cache is cleared first). ``progress(split)`` gives
        the progress display of a split's decoding (or None). What is legal but suspicious
        is handed to ``warn``, one line each (:func:`split_warnings`): images listed twice in a
        split, images shared between splits (a leak into the evaluation), classes no image
        has, a split whose groups cannot measure worst-group accuracy.
        """
        self.cache_clear()
        reports, info, kept = [], None, {}
        for split in splits:
            info, records = self.split(data, split, decode=False)
            if images:
                records = self._non_empty(self.decodable(records, data, split, progress(split)), data, split)
            kept[split] = records
            reports.append(split_report(split, records, info.num_classes, lambda r: r.seg is not None))
        for text in split_warnings(f"{self.title or self.name} at {data.root}", info, kept):
            warn(text)
        return info, reports


REAL_LOADERS: dict[str, Loader] = {}
"""The real data sets by ``DataConfig.name``, in registration order (:func:`register_loader`)."""


def register_loader(loader: Loader) -> Loader:
    """Make ``loader`` a data set ``DataConfig.name`` can name; returns it (``LOADER = register_loader(Loader(...))``).

    Adding a data set is one module in ``mg_tune/data/`` that calls this at import:
    :mod:`mg_tune.data` imports every module of the package, and the config's and spec's
    ``data.name``, ``data check`` and the loaders of a search read :data:`REAL_LOADERS`.
    """
    if loader.name in REAL_LOADERS or loader.name == "textbox":
        raise ValueError(f"data set {loader.name!r} is registered twice")
    REAL_LOADERS[loader.name] = loader
    return loader

"""PASCAL VOC 2007 from the user's ``VOCdevkit/VOC2007`` (nothing is downloaded).

Files read (``root`` is the folder holding ``VOCdevkit/`` as torchvision's ``VOCDetection(root)``
takes it, ``VOCdevkit`` itself, or ``VOCdevkit/VOC2007``)::

    VOC2007/ImageSets/Main/{train,val,trainval,test}.txt   image ids, one per line (a whole line, stripped,
                                                           as VOCDetection reads it: ids may hold spaces;
                                                           the per-class files <class>_<set>.txt are not read)
    VOC2007/Annotations/<id>.xml                           size, objects (name, difficult, bndbox)
    VOC2007/JPEGImages/<filename>                          the images
    VOC2007/SegmentationClass/<id>.png                     optional, palette PNG: class 1..20, 0 bg, 255 void
    VOC2007/SegmentationObject/<id>.png                    optional, palette PNG: object 1..n (XML order), 255 void

Targets: 20-class multi-label (``VOC_CLASSES``), one box per object. VOC
``bndbox`` coordinates are 1-based and inclusive (``xmin..xmax`` covers
``xmax - xmin + 1`` pixels); they become 0-based with x1/y1 exclusive:
``x0 = xmin - 1``, ``y0 = ymin - 1``, ``x1 = xmax``, ``y1 = ymax``, so the box
covers ``mask[ymin-1:ymax, xmin-1:xmax]``.

What labelling tools write besides the official files is read as follows: real-valued
coordinates (CVAT) give the covering pixel box (``x0 = floor(xmin) - 1``,
``x1 = ceil(xmax)``); ``xmin``/``ymin`` of 0 (tools that write 0-based coordinates) is
the first pixel column/row, and ``xmax``/``ymax`` may exceed the image by less than
:data:`~mg_tune.data.records.BOX_SLACK` pixel: both are clipped, moving the box by at
most one pixel; anything further out is an error. An XML without ``<size>``, or with
a zero width or height (LabelMe converters, some exports), takes the size from the
image file's header.

Segmentation masks (``seg_masks``, ``has_seg``) exist for the images listed in
``ImageSets/Segmentation`` (~8 % of VOC 2007): class ``k`` is the pixels of value
``k + 1`` in ``SegmentationClass``, or, when only ``SegmentationObject`` is
present, the pixels of the objects whose XML entry is class ``k``. Void (255,
object borders) and background (0) belong to no class.

Splits (main paper protocol, as in the authors' code, ``torchvision`` ``VOCDetection``
image sets; reproducibility study Table 4: 2,501 / 2,510 / 4,952 images):

* ``train``: ``train.txt`` (``val_split="official"``), or, with ``val_split="random"``,
  ``trainval.txt`` minus a seeded ``val_fraction`` of it;
* ``val``: ``val.txt`` (or that random part of ``trainval.txt``) minus ``heldout``;
* ``heldout``: a seeded ``heldout_fraction`` of that validation part (IoU threshold selection);
* ``test``: ``test.txt``.

The seed is ``split_seed`` (fixed, 0 by default), not the training seed, so every
trial sees the same splits.
"""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from mg_tune.data.base import DatasetInfo
from mg_tune.data.errors import DatasetError
from mg_tune.data.real import Loader, register_loader
from mg_tune.data.images import image_size
from mg_tune.data.records import BOX_SLACK, BadSamples, Record, carve, require_dir, require_file
from mg_tune.textfiles import decode_problem, read_text

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_VOID = 255
INFO = DatasetInfo("voc2007", VOC_CLASSES, multilabel=True)


class VOCOptions(BaseModel):
    """``DataConfig.options`` for ``name: voc`` (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_split: Literal["official", "random"] = "official"
    val_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    difficult: bool = True
    """Keep objects marked ``difficult`` (labels and boxes), as the authors' code does."""


def voc_dir(root: str | Path) -> Path:
    """The ``VOC2007`` directory: ``root/VOCdevkit/VOC2007`` (torchvision's ``root``), ``root/VOC2007`` (root = VOCdevkit) or ``root`` itself when it holds ``Annotations``."""
    root = Path(root).expanduser()
    require_dir(root, "data root")
    for base in (root / "VOCdevkit" / "VOC2007", root / "VOC2007"):
        if base.is_dir():
            return base
    if (root / "Annotations").is_dir():
        return root
    raise DatasetError(root, "no VOC2007 directory here (expected VOCdevkit/VOC2007/Annotations, VOC2007/Annotations or Annotations)")


def image_set_path(base: Path, name: str) -> Path:
    """``ImageSets/Main/<name>.txt`` of the VOC directory ``base``."""
    return base / "ImageSets" / "Main" / f"{name}.txt"


def read_image_set(base: Path, name: str) -> list[tuple[str, int]]:
    """Image ids of ``ImageSets/Main/<name>.txt`` (whole lines, stripped; blank lines skipped), each with its 1-based line number."""
    path = require_file(image_set_path(base, name), f"image set {name!r}")
    try:
        ids = [(line.strip(), n) for n, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
    except UnicodeDecodeError as exc:
        raise DatasetError(path, decode_problem(exc)) from None
    if not ids:
        raise DatasetError(path, "image set is empty")
    return ids


def _number(path: Path, element: ET.Element | None, tag: str, what: str) -> float:
    text = element.findtext(tag) if element is not None else None
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(path, f"{what}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DatasetError(path, f"{what}: <{tag}> is {text!r}, not a finite number")
    return value


def _image_size(path: Path, root: ET.Element, image: Path) -> tuple[int, int]:
    """``(width, height)`` of ``<size>``, or of the image header when ``<size>`` is absent or zero (see module doc)."""
    size = root.find("size")
    if size is None or not (size.findtext("width") or "").strip() or not (size.findtext("height") or "").strip():
        return image_size(image)
    width, height = (round(_number(path, size, tag, "size")) for tag in ("width", "height"))
    if width == 0 or height == 0:
        return image_size(image)
    if width < 0 or height < 0:
        raise DatasetError(path, f"image size {width}x{height} is not positive")
    return width, height


def _pixel_box(path: Path, bb: ET.Element, what: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The 0-based, x1/y1-exclusive pixel box of a 1-based inclusive ``<bndbox>`` (see module doc for tools' variants)."""
    xmin, ymin, xmax, ymax = (_number(path, bb, t, what) for t in ("xmin", "ymin", "xmax", "ymax"))
    coords = f"xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}"
    if xmax < xmin or ymax < ymin:
        raise DatasetError(path, f"{what}: zero-area box ({coords})")
    if xmin < 0 or ymin < 0 or xmax >= width + BOX_SLACK or ymax >= height + BOX_SLACK:
        raise DatasetError(path, f"{what}: box ({coords}, 1-based) lies outside the {width}x{height} image")
    x0, y0 = max(0, math.floor(xmin) - 1), max(0, math.floor(ymin) - 1)
    x1, y1 = min(width, max(math.ceil(xmax), x0 + 1)), min(height, max(math.ceil(ymax), y0 + 1))
    return x0, y0, x1, y1


def parse_annotation(base: Path, image_id: str, keep_difficult: bool = True, listed_at: str | None = None) -> Record:
    """The :class:`Record` of ``Annotations/<image_id>.xml`` (validated; see module doc for coordinates).

    ``listed_at`` (``"<ImageSets list file> line N"``) says where the id came from: the
    error for a missing XML or JPEG names it, so the user can fix the list or restore the file.
    """
    path = base / "Annotations" / f"{image_id}.xml"
    listed = f"image id {image_id!r} listed in {listed_at}" if listed_at else f"image id {image_id!r}"
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        first = image_id.split()[0] if image_id.split() else image_id
        if first != image_id and (base / "Annotations" / f"{first}.xml").is_file():  # "000005 -1": a per-class list's line
            listed += f"; the line looks like one of a per-class list (<id> <1|0|-1>), but ImageSets/Main/{{train,val,trainval,test}}.txt hold one id per line"
        raise DatasetError(path, f"annotation file is missing ({listed})") from None
    except ET.ParseError as exc:
        raise DatasetError(path, f"corrupt XML ({exc})") from None
    filename = (root.findtext("filename") or f"{image_id}.jpg").strip()
    image = base / "JPEGImages" / filename
    if not image.is_file():
        raise DatasetError(image, f"image file is missing (named by {path}; {listed})")
    width, height = _image_size(path, root, image)
    labels: list[int] = []
    boxes: list[tuple[int, int, int, int, int]] = []
    object_classes: list[int] = []
    difficult = 0
    for j, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DatasetError(path, f"object {j}: unknown class name {name!r} (VOC classes: {', '.join(VOC_CLASSES)})")
        k = VOC_CLASSES.index(name)
        object_classes.append(k)
        bb = obj.find("bndbox")
        what = f"object {j} ({name})"
        if bb is None:
            raise DatasetError(path, f"{what}: no <bndbox>")
        x0, y0, x1, y1 = _pixel_box(path, bb, what, width, height)
        if (obj.findtext("difficult") or "0").strip() == "1":
            difficult += 1
            if not keep_difficult:
                continue
        labels.append(k)
        boxes.append((k, x0, y0, x1, y1))
    seg_class = base / "SegmentationClass" / f"{image_id}.png"
    seg_object = base / "SegmentationObject" / f"{image_id}.png"
    seg = None
    if seg_class.is_file():
        seg = ("class", str(seg_class), tuple(object_classes))
    elif seg_object.is_file():
        seg = ("object", str(seg_object), tuple(object_classes))
    return Record(str(image), width, height, tuple(sorted(set(labels))), tuple(boxes), str(path), seg=seg, difficult=difficult)


def load_segmentation(record: Record) -> dict[int, np.ndarray]:
    """Per-class bool masks ``{k: [H, W]}`` from the record's VOC palette PNG (see module doc)."""
    if record.seg is None:
        return {}
    kind, path, object_classes = record.seg
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DatasetError(path, f"segmentation PNG has mode {im.mode!r}; expected a palette ('P') image")
            values = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(path, "segmentation PNG is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(path, f"not a readable PNG ({exc})") from None
    if values.shape != (record.height, record.width):
        raise DatasetError(path, f"segmentation is {values.shape[1]}x{values.shape[0]} but the image is {record.width}x{record.height}")
    present = [int(v) for v in np.unique(values) if v not in (0, VOC_VOID)]
    masks: dict[int, np.ndarray] = {}
    if kind == "class":
        for v in present:
            if v > len(VOC_CLASSES):
                raise DatasetError(path, f"pixel value {v} is not a VOC class (1..{len(VOC_CLASSES)}, 0 background, 255 void)")
            masks[v - 1] = values == v
    else:
        for v in present:
            if v > len(object_classes):
                raise DatasetError(path, f"object index {v} but {record.source} lists {len(object_classes)} objects")
            k = object_classes[v - 1]
            masks[k] = masks[k] | (values == v) if k in masks else values == v
    return dict(sorted(masks.items()))


@functools.lru_cache(maxsize=8)
def _index(base: str, image_set: str, keep_difficult: bool, on_bad_sample: str) -> tuple[Record, ...]:
    bad = BadSamples(on_bad_sample, f"VOC {image_set}")
    listing = image_set_path(Path(base), image_set)
    ids = read_image_set(Path(base), image_set)
    records = [bad.run(parse_annotation, Path(base), i, keep_difficult, f"{listing} line {n}") for i, n in ids]
    bad.finish()
    return tuple(r for r in records if r is not None)


def split_records(
    root: str | Path, split: str, options: VOCOptions, variant: str = "2007", on_bad_sample: str = "error"
) -> tuple[DatasetInfo, list[Record]]:
    """``(info, records)`` of ``split`` (``train``/``val``/``heldout``/``test``), records in image-set order."""
    base = str(voc_dir(root))
    index = functools.partial(_index, base, keep_difficult=options.difficult, on_bad_sample=on_bad_sample)
    if split == "test":
        return INFO, list(index("test"))
    if options.val_split == "official":
        train, val = list(index("train")), list(index("val"))
    else:
        train, val = carve(index("trainval"), options.val_fraction, options.split_seed)
    if split == "train":
        return INFO, train
    val, heldout = carve(val, options.heldout_fraction, options.split_seed + 1)
    return INFO, val if split == "val" else heldout


LOADER = register_loader(Loader("voc", ("2007",), VOCOptions, split_records, seg_loader=load_segmentation, cache_clear=_index.cache_clear, multilabel=True, title="VOC"))
"""``build_split`` / ``mg-tune data check`` entry for ``name: voc``."""

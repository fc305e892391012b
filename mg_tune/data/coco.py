"""MS COCO 2014 through pycocotools, from the user's local copy (nothing is downloaded).

Files read (``root`` is the COCO directory)::

    annotations/instances_train2014.json    train + val + heldout
    annotations/instances_val2014.json      test
    train2014/<file_name>, val2014/<file_name>   the images

Targets: classes are identified by category **name**, once for the data set
(:func:`class_table`): the train file's categories sorted by id (COCO's 80 in
their usual order), then names only the val file lists, by their val id, mapped
to contiguous indices ``0..K-1`` (``class_names``); each file's ids are
translated through the names, so per-split exports that number categories
differently (by first appearance, as many tools do) give the same class the same
index. Refused in one line: a name with two ids or an id with two names in one
file, an image id listed twice, a name the test file annotates that the train
file does not list (the model would have no output trained for it). Multi-label
``labels``; one box per annotation, COCO ``bbox = [x, y, w, h]`` (0-based,
real-valued) becoming the covering pixel box ``(floor x, floor y, ceil(x+w),
ceil(y+h))`` (:func:`mg_tune.data.records.pixel_box`); ``seg_masks`` from the
polygon or RLE ``segmentation`` of each annotation, rasterised with
``pycocotools.mask`` exactly as ``COCO.annToMask`` does (polygons with fewer
than 3 points cover nothing and are dropped first, since ``frPyObjects`` would
read a 4-number polygon as a box). An image has segmentation masks only when every
box it keeps has a segmentation covering pixels: box-only exports
(``"segmentation": []``, Roboflow, Label Studio, CVAT boxes) have none, and masks
for some boxes only would score the rest against an empty mask. Image ids may be
numbers and strings mixed (numbers first, then strings, is the order);
``iscrowd``, ``area`` and ``supercategory`` may be missing (not crowd).

Options (``DataConfig.options``, :class:`COCOOptions`):

* ``crowd``: what ``iscrowd=1`` annotations (RLE regions over many instances)
  contribute: ``"label"`` (default) the class label only, no box, no mask;
  ``"ignore"`` nothing; ``"include"`` label, box and segmentation mask like any
  other annotation. Crowd annotations are never an error.
* ``empty_images``: images of train2014 (train / val / heldout) without (kept)
  annotations are all-negative samples (``"negative"``, default) or dropped
  (``"skip"``). The test split (val2014) always keeps every image: dropping the
  negatives would inflate test precision. ``"skip"`` reproduces the
  reproducibility study's counts (73,872 + 8,209 train2014 images with
  annotations, 40,504 test images, Table 4).
* ``val_fraction`` (0.1) of train2014 becomes ``val`` (seeded by ``split_seed``),
  ``heldout_fraction`` (0.1) of that becomes ``heldout``; ``test`` is val2014.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pydantic import BaseModel, ConfigDict, Field

from mg_tune.data.base import DatasetInfo
from mg_tune.data.errors import DatasetError
from mg_tune.data.real import Loader, register_loader
from mg_tune.data.records import BadSamples, Record, carve, pixel_box, require_dir, require_file
from mg_tune.textfiles import decode_problem, read_text

ANNOTATION_FILES = {"train2014": "annotations/instances_train2014.json", "val2014": "annotations/instances_val2014.json"}


class COCOOptions(BaseModel):
    """``DataConfig.options`` for ``name: coco`` (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crowd: Literal["label", "ignore", "include"] = "label"
    empty_images: Literal["negative", "skip"] = "negative"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)


def load_json(path: Path) -> dict[str, Any]:
    """The parsed instances file; DatasetError for a missing, corrupt or incomplete file."""
    require_file(path, "COCO annotation file")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"corrupt JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(path, decode_problem(exc)) from None
    if not isinstance(data, dict):
        raise DatasetError(path, f"expected a JSON object with images/annotations/categories, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(path, f"no {key!r} list")
    for key, fields in (("images", ("id", "file_name", "width", "height")), ("categories", ("id", "name")), ("annotations", ("id", "image_id", "category_id"))):
        for j, entry in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise DatasetError(path, f"{key}[{j}] lacks {', '.join(missing)}")
    return data


def ann_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Bool ``[H, W]`` mask of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE), as ``COCO.annToMask``."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy=False deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _check_segmentation(path: Path, what: str, segmentation: Any, height: int, width: int) -> None:
    if isinstance(segmentation, list):
        for p in segmentation:
            if not isinstance(p, list) or len(p) % 2 or not all(isinstance(v, (int, float)) for v in p):
                raise DatasetError(path, f"{what}: a polygon must be a flat list of x, y numbers")
    elif isinstance(segmentation, dict):
        if "counts" not in segmentation or list(segmentation.get("size", [])) != [height, width]:
            raise DatasetError(path, f"{what}: RLE needs 'counts' and size [{height}, {width}], got size {segmentation.get('size')!r}")
    else:
        raise DatasetError(path, f"{what}: segmentation must be polygons or RLE, got {type(segmentation).__name__}")


def _id_order(value: Any) -> tuple[int, int, str]:
    """Sort key of a COCO id: numbers first (numerically), then strings; ids of mixed types never meet in a comparison."""
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def _positive_int(path: Path, what: str, field: str, value: Any) -> int:
    """``value`` as an int if it is a positive whole number (``640``, ``640.0`` or ``"640"``), else DatasetError naming it."""
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value) or value <= 0:
        raise DatasetError(path, f"{what}: {field} {value!r} is not a positive whole number of pixels")
    return int(value)


def _check_ids(path: Path, data: dict[str, Any]) -> None:
    """Image and category ids are numbers or strings, each listed once (pycocotools would keep the last of two silently)."""
    for key in ("images", "categories"):
        seen: set[Any] = set()
        for j, entry in enumerate(data[key]):
            i = entry["id"]
            if isinstance(i, bool) or not isinstance(i, (int, str)):
                raise DatasetError(path, f"{key}[{j}]: id {i!r} must be a whole number or a string")
            if i in seen and key == "images":
                raise DatasetError(path, f"images[{j}]: image id {i!r} is listed twice (annotations could not tell the two apart)")
            seen.add(i)


def file_categories(path: Path, data: dict[str, Any]) -> tuple[tuple[Any, str], ...]:
    """``((category id, name), ...)`` of one instances file, in id order; DatasetError when ids and names are not one-to-one.

    Classes are identified by name across files (:func:`class_table`), so within one file a
    name must have one id and an id one name (an exact repeat of an entry is harmless).
    """
    name_of: dict[Any, str] = {}
    id_of: dict[str, Any] = {}
    for j, cat in enumerate(data["categories"]):
        i, name = cat["id"], str(cat["name"]).strip()
        if not name:
            raise DatasetError(path, f"categories[{j}]: category id {i!r} has an empty name")
        if name_of.get(i, name) != name:
            raise DatasetError(path, f"categories[{j}]: category id {i!r} is named both {name_of[i]!r} and {name!r}")
        if id_of.get(name, i) != i:
            raise DatasetError(path, f"categories[{j}]: category {name!r} has two ids ({id_of[name]!r} and {i!r}); classes are matched by name")
        name_of[i], id_of[name] = name, i
    return tuple(sorted(name_of.items(), key=lambda item: _id_order(item[0])))


_CATEGORIES: dict[tuple[str, int, int], tuple[tuple[tuple[Any, str], ...], frozenset[Any]]] = {}
"""``(path, mtime_ns, size) -> (categories, annotated category ids)`` of the instances files read in this process."""


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def _remember_categories(path: Path, data: dict[str, Any]) -> tuple[tuple[tuple[Any, str], ...], frozenset[Any]]:
    found = (file_categories(path, data), frozenset(a["category_id"] for a in data["annotations"] if _hashable(a["category_id"])))
    _CATEGORIES[_file_key(path)] = found
    return found


def _hashable(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _categories(path: Path) -> tuple[tuple[tuple[Any, str], ...], frozenset[Any]]:
    """Categories and annotated category ids of the instances file at ``path`` (read once per process and file version)."""
    found = _CATEGORIES.get(_file_key(require_file(path, "COCO annotation file")))
    if found is None:
        data = load_json(path)
        _check_ids(path, data)
        found = _remember_categories(path, data)
    return found


def class_table(root: Path) -> tuple[tuple[str, ...], dict[str, dict[Any, int]]]:
    """The data set's class names and, per subset, its category ids' class indices: classes are matched by **name**.

    Order: the train file's categories sorted by id (COCO's own 80: its usual order), then
    names that only the val file lists, sorted by their val id. A name the val (test) file
    annotates but the train file does not list is refused: the model trained on train2014
    would have no trained output for it. Without a val file the train file decides alone.
    """
    train_path = root / ANNOTATION_FILES["train2014"]
    val_path = root / ANNOTATION_FILES["val2014"]
    train_cats, _ = _categories(train_path)
    names = [name for _, name in train_cats]
    index = {"train2014": {i: names.index(name) for i, name in train_cats}}
    if val_path.is_file():
        val_cats, annotated = _categories(val_path)
        for i, name in val_cats:
            if name not in names:
                if i in annotated:
                    raise DatasetError(val_path, f"category {name!r} (id {i!r}) is annotated in the test split, but {train_path} does not list it: a model trained on train2014 has no output for it")
                names.append(name)
        index["val2014"] = {i: names.index(name) for i, name in val_cats}
    return tuple(names), index


def _index(root: str, subset: str, crowd: str, empty_images: str, on_bad_sample: str) -> tuple[Record, ...]:
    """The records of one instances file, labels and boxes in **category ids** (:func:`_records` maps them to classes)."""
    path = Path(root) / ANNOTATION_FILES[subset]
    data = load_json(path)
    _check_ids(path, data)
    cats, _ = _remember_categories(path, data)
    known_cats = {i for i, _ in cats}
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    image_dir = require_dir(Path(root) / subset, f"COCO {subset} image")
    bad = BadSamples(on_bad_sample, f"COCO {subset}")
    known_images = set(coco.imgs)
    for ann in data["annotations"]:
        if not _hashable(ann["image_id"]) or ann["image_id"] not in known_images:
            bad.handle(DatasetError(path, f"annotation {ann['id']}: image_id {ann['image_id']!r} is not in 'images'"))

    def record(img: dict[str, Any]) -> Record | None:
        what_image = f"images entry of image id {img['id']!r}"
        width, height = (_positive_int(path, what_image, f, img[f]) for f in ("width", "height"))
        image = image_dir / str(img["file_name"])
        if not image.is_file():
            raise DatasetError(image, f"image file is missing (image id {img['id']!r} of {path})")
        labels, boxes, segs = set(), [], []
        crowds = 0
        for ann in coco.imgToAnns.get(img["id"], []):
            what = f"annotation {ann['id']} (image {img['id']!r})"
            if not _hashable(ann["category_id"]) or ann["category_id"] not in known_cats:
                raise DatasetError(path, f"{what}: unknown category_id {ann['category_id']!r}")
            c = ann["category_id"]
            is_crowd = bool(ann.get("iscrowd", 0))
            crowds += is_crowd
            if is_crowd and crowd == "ignore":
                continue
            labels.add(c)
            if is_crowd and crowd == "label":
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
                raise DatasetError(path, f"{what}: bbox must be [x, y, w, h], got {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            boxes.append((c, *pixel_box(x, y, x + w, y + h, width, height, path, what)))
            segmentation = ann.get("segmentation")
            if segmentation is not None:
                _check_segmentation(path, what, segmentation, height, width)
            segs.append((c, segmentation if _covers_pixels(segmentation) else None))
        if not labels and empty_images == "skip":
            return None
        whole = segs and all(seg is not None for _, seg in segs)  # masks of some boxes only would score the others as 0
        return Record(str(image), width, height, tuple(labels), tuple(boxes), str(path), seg=tuple(segs) if whole else None, crowd=crowds)

    records = []
    for img_id in sorted(coco.imgs, key=_id_order):
        r = bad.run(record, coco.imgs[img_id])
        if r is not None:
            records.append(r)
    bad.finish()
    return tuple(records)


def _covers_pixels(segmentation: Any) -> bool:
    """Whether a (checked) ``segmentation`` can cover a pixel: an RLE, or a polygon of at least 3 points (``[]`` cannot)."""
    return isinstance(segmentation, dict) or (isinstance(segmentation, list) and any(len(p) >= 6 for p in segmentation))


def _to_classes(record: Record, class_of: dict[Any, int]) -> Record:
    return dataclasses.replace(
        record,
        labels=tuple(sorted({class_of[c] for c in record.labels})),
        boxes=tuple((class_of[c], *box) for c, *box in record.boxes),
        seg=tuple((class_of[c], seg) for c, seg in record.seg) if record.seg is not None else None,
    )


@functools.lru_cache(maxsize=2)
def _records(root: str, subset: str, crowd: str, empty_images: str, on_bad_sample: str) -> tuple[tuple[str, ...], tuple[Record, ...]]:
    """``(class names, records)`` of one instances file, classes matched by name across both files (:func:`class_table`)."""
    records = _index(root, subset, crowd, empty_images, on_bad_sample)
    names, index = class_table(Path(root))
    return names, tuple(_to_classes(r, index[subset]) for r in records)


def _cache_clear() -> None:
    """Forget every parsed file (``data check`` re-reads them)."""
    _records.cache_clear()
    _CATEGORIES.clear()


def load_segmentation(record: Record) -> dict[int, np.ndarray]:
    """Per-class bool masks ``{k: [H, W]}``: union of the class's annotation masks."""
    masks: dict[int, np.ndarray] = {}
    for k, segmentation in record.seg or ():
        m = ann_to_mask(segmentation, record.height, record.width)
        masks[k] = masks[k] | m if k in masks else m
    return dict(sorted(masks.items()))


def coco_root(root: str | Path) -> Path:
    """The COCO directory, which must exist."""
    return require_dir(Path(root).expanduser(), "data root")


def split_records(
    root: str | Path, split: str, options: COCOOptions, variant: str = "2014", on_bad_sample: str = "error"
) -> tuple[DatasetInfo, list[Record]]:
    """``(info, records)`` of ``split``; records in image-id order."""
    base = str(coco_root(root))
    subset = "val2014" if split == "test" else "train2014"
    empty = options.empty_images if subset == "train2014" else "negative"  # the test split keeps every image
    names, records = _records(base, subset, options.crowd, empty, on_bad_sample)
    info = DatasetInfo("coco2014", names, multilabel=True)
    if split == "test":
        return info, list(records)
    train, val = carve(records, options.val_fraction, options.split_seed)
    if split == "train":
        return info, train
    val, heldout = carve(val, options.heldout_fraction, options.split_seed + 1)
    return info, val if split == "val" else heldout


LOADER = register_loader(Loader("coco", ("2014",), COCOOptions, split_records, seg_loader=load_segmentation, cache_clear=_cache_clear, multilabel=True, title="COCO"))
"""``build_split`` / ``mg-tune data check`` entry for ``name: coco``."""

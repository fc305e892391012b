"""MS COCO 2014 through pycocotools, from the user's local copy (nothing is downloaded).

Files read (``root`` is the COCO directory)::

    annotations/instances_train2014.json    train + val + heldout
    annotations/instances_val2014.json      test
    train2014/<file_name>, val2014/<file_name>   the images

Targets: the categories of the JSON (80 for COCO) sorted by id and mapped to
contiguous indices ``0..K-1`` (``class_names`` = category names); multi-label
``labels``; one box per annotation, COCO ``bbox = [x, y, w, h]`` (0-based,
real-valued) becoming the covering pixel box ``(floor x, floor y, ceil(x+w),
ceil(y+h))`` (:func:`mg_tune.data.records.pixel_box`); ``seg_masks`` from the
polygon or RLE ``segmentation`` of each annotation, rasterised with
``pycocotools.mask`` exactly as ``COCO.annToMask`` does (polygons with fewer
than 3 points cover nothing and are dropped first, since ``frPyObjects`` would
read a 4-number polygon as a box).

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
import functools
import io
import json
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
from mg_tune.textfiles import decode_problem

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
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
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


@functools.lru_cache(maxsize=2)
def _index(root: str, subset: str, crowd: str, empty_images: str, on_bad_sample: str) -> tuple[tuple[str, ...], tuple[Record, ...]]:
    path = Path(root) / ANNOTATION_FILES[subset]
    data = load_json(path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    cat_ids = sorted(coco.cats)
    class_of = {c: k for k, c in enumerate(cat_ids)}
    names = tuple(str(coco.cats[c]["name"]) for c in cat_ids)
    image_dir = require_dir(Path(root) / subset, f"COCO {subset} image")
    bad = BadSamples(on_bad_sample, f"COCO {subset}")
    known_images = set(coco.imgs)
    for ann in data["annotations"]:
        if ann["image_id"] not in known_images:
            bad.handle(DatasetError(path, f"annotation {ann['id']}: image_id {ann['image_id']} is not in 'images'"))

    def record(img: dict[str, Any]) -> Record | None:
        width, height = int(img["width"]), int(img["height"])
        image = image_dir / str(img["file_name"])
        if not image.is_file():
            raise DatasetError(image, f"image file is missing (image id {img['id']} of {path})")
        labels, boxes, segs = set(), [], []
        crowds = 0
        for ann in coco.imgToAnns.get(img["id"], []):
            what = f"annotation {ann['id']} (image {img['id']})"
            if ann["category_id"] not in class_of:
                raise DatasetError(path, f"{what}: unknown category_id {ann['category_id']}")
            k = class_of[ann["category_id"]]
            is_crowd = bool(ann.get("iscrowd", 0))
            crowds += is_crowd
            if is_crowd and crowd == "ignore":
                continue
            labels.add(k)
            if is_crowd and crowd == "label":
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise DatasetError(path, f"{what}: bbox must be [x, y, w, h], got {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            boxes.append((k, *pixel_box(x, y, x + w, y + h, width, height, path, what)))
            if "segmentation" in ann:
                _check_segmentation(path, what, ann["segmentation"], height, width)
                segs.append((k, ann["segmentation"]))
        if not labels and empty_images == "skip":
            return None
        return Record(str(image), width, height, tuple(sorted(labels)), tuple(boxes), str(path), seg=tuple(segs) or None, crowd=crowds)

    records = []
    for img_id in sorted(coco.imgs):
        r = bad.run(record, coco.imgs[img_id])
        if r is not None:
            records.append(r)
    bad.finish()
    return names, tuple(records)


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
    names, records = _index(base, subset, options.crowd, empty, on_bad_sample)
    info = DatasetInfo("coco2014", names, multilabel=True)
    if split == "test":
        return info, list(records)
    train, val = carve(records, options.val_fraction, options.split_seed)
    if split == "train":
        return info, train
    val, heldout = carve(val, options.heldout_fraction, options.split_seed + 1)
    return info, val if split == "val" else heldout


LOADER = register_loader(Loader("coco", ("2014",), COCOOptions, split_records, seg_loader=load_segmentation, cache_clear=_index.cache_clear, multilabel=True, title="COCO"))
"""``build_split`` / ``mg-tune data check`` entry for ``name: coco``."""

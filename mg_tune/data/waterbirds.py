"""Waterbirds-100 (Sagawa et al. 2020; Petryk et al. 2022) from the user's local copy.

Files read (``root`` is the data set directory, e.g. ``waterbird_1.0_forest2water2``)::

    metadata.csv                 img_filename, y (0 landbird / 1 waterbird),
                                 place (0 land / 1 water), split (0 train / 1 val / 2 test)
                                 [, img_id: the CUB image id]
    <img_filename>               the images (CUB birds pasted on Places backgrounds,
                                 same size as the CUB image, so CUB boxes apply)
    bird boxes, one of (searched in this order):
      options.boxes                         a boxes.csv file, or a directory with the CUB files
      root/boxes.csv                        img_filename,x,y,w,h   (header line required)
      <dir>/bounding_boxes.txt (+ images.txt)  CUB_200_2011 format, "<img_id> <x> <y> <w> <h>"
                                            and "<img_id> <relative/path.jpg>", where <dir> is
                                            root, root/CUB_200_2011 or root/../CUB_200_2011

CUB rows are linked to metadata rows by path (``images.txt`` path ==
``img_filename``) or, without ``images.txt``, by the metadata's ``img_id``
column. Box coordinates are 0-based and real-valued (``x, y, w, h``); they
become the covering pixel box ``(floor x, floor y, ceil(x+w), ceil(y+h))``.

Settings (``DataConfig.variant``), main paper Sec. 5.5 and the reproducibility
study Sec. 4 ("Effectiveness against spurious correlations"):

* ``conventional``: classify the bird (landbird vs. waterbird, label ``y``); the
  guidance mask of the label class is the bird's box (attend to the bird).
* ``reversed`` (Petryk et al. 2022): classify the background (land vs. water,
  label ``place``); the guidance mask is everything *outside* the bird's box
  (attend to the background, not the bird). Boxes are dilated before taking the
  complement.

In both settings ``group = 2 * y + place`` (``group_names``: landbird/land,
landbird/water, waterbird/land, waterbird/water), so worst-group accuracy is
over the same four bird-background combinations. Waterbirds-100 correlates
bird and background 100 % on train; test is balanced.

Splits: ``train`` / ``test`` = metadata split 0 / 2. ``val`` = split 1 restricted to
the majority groups landbird/land and waterbird/water (``val_groups="majority"``,
default: the main paper's authors removed the minority groups so the validation
set does not leak the test distribution, reproducibility study App. A: 1,199 -> 600
images), or all of split 1 (``val_groups="all"``); ``heldout`` is a seeded
``heldout_fraction`` of that validation set. The paper guides with boxes for
1 % of the training images: ``annotation_fraction: 0.01``.
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mg_tune.data.base import DatasetInfo
from mg_tune.data.errors import DatasetError
from mg_tune.data.images import image_size
from mg_tune.data.real import Loader, register_loader
from mg_tune.data.records import BadSamples, Record, carve, pixel_box, require_dir, require_file
from mg_tune.textfiles import decode_problem, read_text

SETTINGS: tuple[str, ...] = ("conventional", "reversed")
GROUP_NAMES: tuple[str, ...] = ("landbird/land", "landbird/water", "waterbird/land", "waterbird/water")
INFOS: dict[str, DatasetInfo] = {
    "conventional": DatasetInfo("waterbirds_conventional", ("landbird", "waterbird"), multilabel=False, group_names=GROUP_NAMES),
    "reversed": DatasetInfo("waterbirds_reversed", ("land", "water"), multilabel=False, group_names=GROUP_NAMES),
}
MAJORITY_GROUPS = (0, 3)
METADATA_COLUMNS = ("img_filename", "y", "place", "split")


class WaterbirdsOptions(BaseModel):
    """``DataConfig.options`` for ``name: waterbirds`` (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_groups: Literal["majority", "all"] = "majority"
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    boxes: str | None = None


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header holding ``columns``, each with its line number (CRLF, BOM and UTF-16 as :func:`read_text` reads them)."""
    require_file(path, "CSV file")
    try:
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(path, f"missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        return [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DatasetError(path, f"corrupt CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(path, decode_problem(exc)) from None


def _number(path: Path, line: int, column: str, value: str | None, choices: tuple[int, ...] | None = None) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(path, f"line {line}: {column}={value!r} is not a number") from None
    if choices is not None and number not in choices:
        raise DatasetError(path, f"line {line}: {column}={value} must be one of {', '.join(map(str, choices))}")
    return number


def _cub_lines(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    rows = []
    try:
        text = read_text(path)
    except UnicodeDecodeError as exc:
        raise DatasetError(path, decode_problem(exc)) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != fields:
            raise DatasetError(path, f"line {n}: expected {fields} fields, got {len(parts)}")
        rows.append((n, parts))
    return rows


def read_boxes(root: Path, metadata: list[tuple[int, dict[str, str]]], option: str | None) -> tuple[dict[str, tuple[float, float, float, float]], Path]:
    """``{img_filename: (x, y, w, h)}`` and the file it came from (see module doc for where it is looked for)."""
    candidates: list[Path] = []
    if option is not None:
        candidates.append(Path(option).expanduser())
    candidates += [root / "boxes.csv", root, root / "CUB_200_2011", root.parent / "CUB_200_2011"]
    for place in candidates:
        if place.is_file():
            rows = _read_csv(place, ("img_filename", "x", "y", "w", "h"))
            return {r["img_filename"]: tuple(_number(place, n, c, r[c]) for c in "xywh") for n, r in rows}, place  # type: ignore[misc]
        if (place / "bounding_boxes.txt").is_file():
            return _read_cub(place, metadata), place / "bounding_boxes.txt"
        if option is not None and place == candidates[0]:
            raise DatasetError(place, "options.boxes is neither a boxes.csv file nor a directory with bounding_boxes.txt")
    raise DatasetError(root, "no bird boxes found (boxes.csv, or CUB bounding_boxes.txt + images.txt in root or CUB_200_2011/)")


def _read_cub(folder: Path, metadata: list[tuple[int, dict[str, str]]]) -> dict[str, tuple[float, float, float, float]]:
    boxes_path = folder / "bounding_boxes.txt"
    by_id = {}
    for n, (img_id, *xywh) in _cub_lines(boxes_path, 5):
        by_id[img_id] = tuple(_number(boxes_path, n, c, v) for c, v in zip("xywh", xywh))
    images_path = folder / "images.txt"
    if images_path.is_file():
        id_of = {path: img_id for _, (img_id, path) in _cub_lines(images_path, 2)}
    elif all("img_id" in row for _, row in metadata):
        id_of = {row["img_filename"]: str(row["img_id"]).strip() for _, row in metadata}
    else:
        raise DatasetError(images_path, "missing, and metadata.csv has no img_id column to link CUB boxes to images")
    return {path: by_id[i] for path, i in id_of.items() if i in by_id}


@functools.lru_cache(maxsize=4)
def _index(root: str, variant: str, boxes_option: str | None, on_bad_sample: str) -> tuple[tuple[Record, ...], tuple[int, ...]]:
    base = require_dir(Path(root).expanduser(), "data root")
    meta_path = base / "metadata.csv"
    require_file(meta_path, "Waterbirds metadata.csv")
    metadata = _read_csv(meta_path, METADATA_COLUMNS)
    if not metadata:
        raise DatasetError(meta_path, "no rows")
    boxes, boxes_path = read_boxes(base, metadata, boxes_option)
    bad = BadSamples(on_bad_sample, "Waterbirds")

    def record(line: int, row: dict[str, str]) -> tuple[Record, int]:
        y = int(_number(meta_path, line, "y", row["y"], (0, 1)))
        place = int(_number(meta_path, line, "place", row["place"], (0, 1)))
        split = int(_number(meta_path, line, "split", row["split"], (0, 1, 2)))
        name = row["img_filename"]
        image = base / name
        width, height = image_size(image)
        if name not in boxes:
            raise DatasetError(boxes_path, f"no box for {name} (metadata.csv line {line})")
        x, yy, w, h = boxes[name]
        box = pixel_box(x, yy, x + w, yy + h, width, height, boxes_path, f"box of {name}")
        label = y if variant == "conventional" else place
        return Record(str(image), width, height, (label,), ((label, *box),), str(meta_path), group=2 * y + place), split

    records, splits = [], []
    for line, row in metadata:
        result = bad.run(record, line, row)
        if result is not None:
            records.append(result[0])
            splits.append(result[1])
    bad.finish()
    return tuple(records), tuple(splits)


def split_records(
    root: str | Path, split: str, options: WaterbirdsOptions, variant: str = "conventional", on_bad_sample: str = "error"
) -> tuple[DatasetInfo, list[Record]]:
    """``(info, records)`` of ``split`` in metadata order."""
    if variant not in SETTINGS:
        raise ValueError(f"Waterbirds variant must be one of {', '.join(SETTINGS)}, got {variant!r}")
    records, splits = _index(str(Path(root).expanduser()), variant, options.boxes, on_bad_sample)
    info = INFOS[variant]
    wanted = {"train": 0, "val": 1, "heldout": 1, "test": 2}[split]
    chosen = [r for r, s in zip(records, splits) if s == wanted]
    if split in ("train", "test"):
        return info, chosen
    if options.val_groups == "majority":
        chosen = [r for r in chosen if r.group in MAJORITY_GROUPS]
    val, heldout = carve(chosen, options.heldout_fraction, options.split_seed)
    return info, val if split == "val" else heldout


LOADER = register_loader(Loader("waterbirds", SETTINGS, WaterbirdsOptions, split_records, inverted_variants=("reversed",), cache_clear=_index.cache_clear, groups=True, title="Waterbirds"))
"""``build_split`` / ``mg-tune data check`` entry for ``name: waterbirds``."""

"""Tiny copies of VOC 2007, COCO 2014 and Waterbirds-100 written in their exact on-disk formats (the data tests' fixtures).

Used by ``tests/data/test_datasets.py`` and by every test that trains or searches on a real data set's loader.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from mg_tune.data.voc import VOC_CLASSES

S = 64


def _palette_png(path: Path, values: np.ndarray) -> None:
    """A VOC-style palette ('P') PNG with pixel indices ``values``."""
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    palette = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    palette[255] = (224, 224, 192)  # VOC's void colour
    im.putpalette(palette.flatten().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _image(path: Path, width: int, height: int, white: tuple[int, int, int, int] | None = None) -> None:
    """A dark noisy JPEG with an optional white rectangle ``(x0, y0, x1, y1)`` (0-based, exclusive)."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    pixels = rng.integers(0, 40, (height, width, 3)).astype(np.uint8)
    if white is not None:
        x0, y0, x1, y1 = white
        pixels[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


# VOC: image id -> (width, height, [(class, xmin, ymin, xmax, ymax, difficult)]) in 1-based inclusive coordinates
VOC_IMAGES = {
    "000001": (S, S, [("dog", 11, 21, 40, 50, 0), ("person", 1, 1, 64, 20, 0)]),
    "000002": (S, S, [("cat", 5, 5, 20, 20, 0), ("cat", 30, 30, 44, 60, 1)]),
    "000003": (S, S, [("car", 1, 1, 64, 64, 0)]),
    "000004": (80, 48, [("bus", 8, 4, 70, 40, 0)]),
    "000005": (S, S, [("dog", 20, 20, 30, 30, 0)]),
    "000006": (S, S, [("bird", 2, 3, 4, 5, 0), ("tvmonitor", 50, 50, 60, 60, 0)]),
    "000007": (S, S, [("sheep", 10, 10, 20, 20, 0)]),
    "000008": (S, S, [("horse", 33, 1, 64, 32, 0)]),
}
VOC_SETS = {"train": ["000001", "000002", "000003"], "val": ["000004", "000005", "000006"], "test": ["000007", "000008"]}


def voc_xml(image_id: str, width: int, height: int, objects) -> str:
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{diff}</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1, diff in objects
    )
    return (
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>0</segmented>{body}</annotation>"
    )


def voc_seg_class() -> np.ndarray:
    """SegmentationClass of 000001: dog pixels (class 12) inside its box, a person blob (15), a void border (255)."""
    seg = np.zeros((S, S), dtype=np.uint8)
    seg[25:45, 15:35] = VOC_CLASSES.index("dog") + 1
    seg[24, 14:36] = 255
    seg[2:10, 3:50] = VOC_CLASSES.index("person") + 1
    return seg


def voc_seg_object() -> np.ndarray:
    """SegmentationObject of 000002: object 1 (cat) and object 2 (cat, difficult), a void border."""
    seg = np.zeros((S, S), dtype=np.uint8)
    seg[6:18, 6:18] = 1
    seg[35:55, 32:40] = 2
    seg[5, 5:19] = 255
    return seg


def write_voc(tmp_path: Path) -> Path:
    """A VOCdevkit tree under ``tmp_path``; returns the VOCdevkit directory."""
    base = tmp_path / "VOCdevkit" / "VOC2007"
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for name, ids in {**VOC_SETS, "trainval": VOC_SETS["train"] + VOC_SETS["val"]}.items():
        (main / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    (main / "dog_train.txt").write_text("000001  1\n")  # per-class files are ignored
    (base / "Annotations").mkdir()
    for image_id, (w, h, objects) in VOC_IMAGES.items():
        (base / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, w, h, objects))
        first = objects[0]
        _image(base / "JPEGImages" / f"{image_id}.jpg", w, h, white=(first[1] - 1, first[2] - 1, first[3], first[4]))
    _palette_png(base / "SegmentationClass" / "000001.png", voc_seg_class())
    _palette_png(base / "SegmentationObject" / "000002.png", voc_seg_object())
    return tmp_path / "VOCdevkit"


VOC_BACKGROUNDS = ["bg0001", "bg0002", "bg0003"]
"""Background images (hard negatives) of :func:`write_voc_backgrounds`: annotations without ``<object>``."""


def write_voc_backgrounds(tmp_path: Path, val: list[str]) -> Path:
    """The VOC fixture plus the :data:`VOC_BACKGROUNDS` images; ``val.txt`` lists ``val`` (e.g. backgrounds first)."""
    root = write_voc(tmp_path)
    base = root / "VOC2007"
    for image_id in VOC_BACKGROUNDS:
        (base / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, S, S, []))
        _image(base / "JPEGImages" / f"{image_id}.jpg", S, S)
    (base / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return root


COCO_CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 3, "name": "car", "supercategory": "vehicle"}, {"id": 18, "name": "dog", "supercategory": "animal"}]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            run, current = 0, v
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def crowd_mask() -> np.ndarray:
    mask = np.zeros((S, S), dtype=np.uint8)
    mask[40:60, 5:25] = 1
    mask[50:55, 25:30] = 1
    return mask


def coco_train_json() -> dict:
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": S, "height": S} for i in range(1, 11)]
    annotations = [
        # image 1: a person polygon (rectangle 10..30 x 10..40) and a car box with real-valued coordinates
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 600.0, "bbox": [10, 10, 20, 30], "segmentation": [[10, 10, 30, 10, 30, 40, 10, 40]]},
        {"id": 102, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 300.0, "bbox": [40.5, 2.2, 20.3, 15.0], "segmentation": [[41, 3, 60, 3, 60, 17, 41, 17]]},
        # image 2: a crowd of dogs as uncompressed RLE, plus one dog polygon
        {"id": 103, "image_id": 2, "category_id": 18, "iscrowd": 1, "area": float(crowd_mask().sum()), "bbox": [5, 40, 25, 20], "segmentation": _uncompressed_rle(crowd_mask())},
        {"id": 104, "image_id": 2, "category_id": 18, "iscrowd": 0, "area": 100.0, "bbox": [30, 5, 10, 10], "segmentation": [[30, 5, 40, 5, 40, 15, 30, 15]]},
        # image 3: only a crowd annotation (person)
        {"id": 105, "image_id": 3, "category_id": 1, "iscrowd": 1, "area": float(crowd_mask().sum()), "bbox": [5, 40, 25, 20], "segmentation": _uncompressed_rle(crowd_mask())},
        # image 4: no annotations at all; images 5..10: one car each
    ]
    annotations += [
        {"id": 200 + i, "image_id": i, "category_id": 3, "iscrowd": 0, "area": 64.0, "bbox": [i, i, 8, 8], "segmentation": [[i, i, i + 8, i, i + 8, i + 8, i, i + 8]]}
        for i in range(5, 11)
    ]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": [dict(c) for c in COCO_CATEGORIES]}


def coco_val_json() -> dict:
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": S, "height": S} for i in (7, 8)]
    annotations = [{"id": 1, "image_id": 7, "category_id": 18, "iscrowd": 0, "area": 100.0, "bbox": [1, 1, 10, 10], "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]}]
    return {"images": images, "annotations": annotations, "categories": [dict(c) for c in COCO_CATEGORIES]}


def coco_val_json_renumbered() -> dict:
    """instances_val2014.json as a per-split export writes it: categories numbered by first appearance (dog 1, person 2, car 3).

    Image 7: a dog [1, 1, 10, 10] and a person [20, 20, 10, 10]; image 8: a car [5, 5, 8, 8]. The train
    file numbers them person 1, car 3, dog 18, so the classes are (person, car, dog) = 0, 1, 2.
    """
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": S, "height": S} for i in (7, 8)]
    categories = [{"id": 1, "name": "dog", "supercategory": "animal"}, {"id": 2, "name": "person", "supercategory": "person"}, {"id": 3, "name": "car", "supercategory": "vehicle"}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [1, 1, 10, 10], "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]},
        {"id": 2, "image_id": 7, "category_id": 2, "iscrowd": 0, "area": 100.0, "bbox": [20, 20, 10, 10], "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30]]},
        {"id": 3, "image_id": 8, "category_id": 3, "iscrowd": 0, "area": 64.0, "bbox": [5, 5, 8, 8], "segmentation": [[5, 5, 13, 5, 13, 13, 5, 13]]},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(tmp_path: Path, train: dict | None = None, val: dict | None = None) -> Path:
    """A COCO directory (annotations/, train2014/, val2014/) under ``tmp_path``; ``train``/``val`` replace the default instances files."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for subset, data in (("train2014", train or coco_train_json()), ("val2014", val or coco_val_json())):
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(data))
        for img in data["images"]:
            _image(root / subset / img["file_name"], int(img["width"]), int(img["height"]))
    return root


# Waterbirds: (img_id, relative path, y, place, split, (w, h), CUB box x y w h)
WATERBIRDS = [
    (1, "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg", 1, 1, 0, (S, S), (10.0, 12.0, 30.0, 20.0)),
    (2, "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg", 1, 1, 0, (S, S), (0.0, 0.0, 64.0, 64.0)),
    (3, "014.Indigo_Bunting/Indigo_Bunting_0001_12469.jpg", 0, 0, 0, (S, S), (5.5, 6.25, 20.0, 10.5)),
    (4, "014.Indigo_Bunting/Indigo_Bunting_0002_12470.jpg", 0, 0, 0, (S, S), (30.0, 30.0, 20.0, 20.0)),
    (5, "014.Indigo_Bunting/Indigo_Bunting_0003_12471.jpg", 0, 0, 1, (S, S), (1.0, 2.0, 3.0, 4.0)),
    (6, "014.Indigo_Bunting/Indigo_Bunting_0004_12472.jpg", 0, 1, 1, (S, S), (8.0, 8.0, 16.0, 16.0)),  # minority group in val
    (7, "001.Black_footed_Albatross/Black_Footed_Albatross_0003_796136.jpg", 1, 1, 1, (S, S), (20.0, 20.0, 30.0, 30.0)),
    (8, "001.Black_footed_Albatross/Black_Footed_Albatross_0005_796090.jpg", 1, 1, 1, (S, S), (2.0, 2.0, 60.0, 30.0)),
    (9, "001.Black_footed_Albatross/Black_Footed_Albatross_0006_796065.jpg", 1, 0, 2, (80, 48), (10.0, 5.0, 50.0, 30.0)),
    (10, "014.Indigo_Bunting/Indigo_Bunting_0005_12473.jpg", 0, 1, 2, (S, S), (12.0, 14.0, 16.0, 18.0)),
]


def write_waterbirds(tmp_path: Path) -> Path:
    """A Waterbirds-100 directory with CUB_200_2011/ box files next to it, under ``tmp_path``."""
    root = tmp_path / "waterbird_1.0_forest2water2"
    root.mkdir()
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for img_id, path, y, place, split, _, _ in WATERBIRDS:
            writer.writerow([img_id, path, y, split, place, "/b/bamboo_forest/00000001.jpg"])
    cub = tmp_path / "CUB_200_2011"  # next to the data set, as distributed
    cub.mkdir()
    (cub / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, *_ in WATERBIRDS) + "999 200.Common_Yellowthroat/x.jpg\n")
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} {b[0]} {b[1]} {b[2]} {b[3]}\n" for i, *_, b in WATERBIRDS))
    for _, path, _, _, _, (w, h), (x, y, bw, bh) in WATERBIRDS:
        _image(root / path, w, h, white=(math.floor(x), math.floor(y), math.ceil(x + bw), math.ceil(y + bh)))
    return root


def truncate_jpeg(path: Path) -> None:
    """Cut a JPEG to its first half: the header (size) still reads, the pixels do not (an interrupted copy or download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def windows_text(text: str, encoding: str = "utf-8-sig") -> bytes:
    """``text`` as Windows tools save it: CRLF line ends, with a byte-order mark (``utf-8-sig``: Notepad's "UTF-8 with BOM",
    Excel's "CSV UTF-8"; ``utf-16``: Notepad's "Unicode", little-endian with its BOM)."""
    return text.replace("\n", "\r\n").encode(encoding)

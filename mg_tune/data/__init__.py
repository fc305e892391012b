"""Data sets for model guidance: the embedded TextBox family (SMERF) and real data sets read from local copies.

Every loader returns the same sample dict (see ``TextBoxDataset`` and
:mod:`mg_tune.data.real`) and exposes ``dataset.info`` (:class:`DatasetInfo`).
Real data sets (``voc``, ``coco``, ``waterbirds``) are never downloaded from the web: they are
read from ``DataConfig.root``, a local directory or an ``s3://bucket/prefix`` that
:mod:`mg_tune.data.remote` mirrors into a node-local cache; problems with their files raise
:class:`DatasetError` (a ``ValueError``) whose one-line message names the file.

A real data set is one module of this package that registers its loader
(:func:`register_loader`, see :mod:`mg_tune.data.voc`); importing this package imports
every module of it, so :data:`REAL_LOADERS` holds them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from mg_tune.data import voc, coco, waterbirds  # noqa: F401, I001  (registered first, in the order listings show them)
from mg_tune.data.base import DatasetInfo
from mg_tune.data.errors import DatasetError
from mg_tune.data.real import REAL_LOADERS, AnnotatedImageDataset, Loader, SplitReport, register_loader
from mg_tune.data.split_report import Progress
from mg_tune.data.textbox import TEXTBOX_VARIANTS, build_textbox


def _import_data_set_modules() -> None:
    """Import every module of this package: a data set module registers its loader when imported (:func:`register_loader`)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_data_set_modules()

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "heldout", "test")


def data_set_names() -> tuple[str, ...]:
    """Every ``DataConfig.name``: ``textbox`` (generated), then the registered real data sets (:data:`REAL_LOADERS`)."""
    return ("textbox", *REAL_LOADERS)


def _check_split(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")


def build_split(data: Any, split: str) -> Dataset:
    """The ``split`` of the data set described by a :class:`mg_tune.config.DataConfig`.

    Dispatches on ``data.name``; real data sets raise :class:`DatasetError` when
    their files are missing or invalid.
    """
    _check_split(split)
    if data.name in REAL_LOADERS:
        return REAL_LOADERS[data.name].build(data, split)
    size = getattr(data, f"{split}_size")
    return build_textbox(
        data.variant,
        split,
        size,
        seed=data.seed,
        annotation_fraction=data.annotation_fraction,
        dilation=data.dilation,
        **data.options,
    )


SEGMENTATION_METRICS: tuple[str, ...] = ("seg_epg", "x_seg_epg")
SMERF_METRICS: tuple[str, ...] = ("pafl", "safl")


def unsupported_metrics(data: Any) -> dict[str, str]:
    """The metrics the data set of a :class:`mg_tune.config.DataConfig` cannot measure, each with why.

    Known from the configuration alone (no file is read): PAFL / SAFL exist on the SMERF
    reasoning settings only, SegEPG / X-SegEPG need segmentation masks (Waterbirds has
    none), accuracy single-label data, the group accuracies groups. The training loop
    leaves these metrics out (:mod:`mg_tune.split_eval`); a spec naming one as objective
    or constraint is refused. Whether a VOC copy has segmentation files is a question for
    the files (``SearchSpec.check_segmentation``).
    """
    out: dict[str, str] = {}
    textbox = TEXTBOX_VARIANTS[data.variant].info if data.name == "textbox" and data.variant in TEXTBOX_VARIANTS else None
    loader = REAL_LOADERS.get(data.name)
    what = f"data.variant {data.variant!r}" if data.name == "textbox" else f"data.name {data.name!r}"
    multilabel = loader.multilabel if loader is not None else textbox is not None and textbox.multilabel
    groups = loader.groups if loader is not None else textbox is not None and bool(textbox.group_names)
    if multilabel:
        out["accuracy"] = f"accuracy is reported for single-label data, and {what} is multi-label (f1 and map are)"
    if not groups:
        out.update(dict.fromkeys(("worst_group_acc", "mean_group_acc"), f"{what} has no groups"))
    if not (textbox is not None and textbox.smerf):
        settings = ", ".join(v for v, cls in TEXTBOX_VARIANTS.items() if cls.info.smerf)
        out.update(dict.fromkeys(SMERF_METRICS, f"SMERF's attribution focus levels need its objects to focus on and avoid, which only the SMERF TextBox settings have ({settings}), not {what}"))
    if loader is not None and loader.seg_loader is None:
        out.update(dict.fromkeys(SEGMENTATION_METRICS, f"{loader.title or loader.name} has no segmentation masks"))
    return out


def check_dataset(
    data: Any,
    splits: Sequence[str] = SPLIT_NAMES,
    images: bool = True,
    progress: Callable[[str], Progress | None] = lambda split: None,
    warn: Callable[[str], None] = lambda text: None,
) -> tuple[DatasetInfo, list[SplitReport]]:
    """Load every split's index of a real data set and validate every annotation.

    With ``images``, every image is decoded whole (existence, readable pixels, size) and
    every segmentation file loaded; ``progress(split)`` may display that
    (:meth:`Loader.check`). Returns the data set's info and per-split counts; raises
    :class:`DatasetError` on the first problem (``on_bad_sample="error"``); hands ``warn``
    one line per duplicate, leak between splits, class without images or degenerate group.
    """
    if data.name not in REAL_LOADERS:
        raise ValueError(f"check needs a real data set ({', '.join(REAL_LOADERS)}), got name={data.name!r}")
    for split in splits:
        _check_split(split)
    return REAL_LOADERS[data.name].check(data, splits, images=images, progress=progress, warn=warn)


__all__ = [
    "AnnotatedImageDataset",
    "DatasetError",
    "DatasetInfo",
    "Loader",
    "REAL_LOADERS",
    "SPLIT_NAMES",
    "TEXTBOX_VARIANTS",
    "build_split",
    "build_textbox",
    "check_dataset",
    "data_set_names",
    "register_loader",
    "unsupported_metrics",
]

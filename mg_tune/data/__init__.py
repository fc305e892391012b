"""Data sets for model guidance: the embedded TextBox family (SMERF) and its annotations.

Every loader returns the same sample dict (see ``TextBoxDataset``) and exposes
``dataset.info`` (:class:`DatasetInfo`).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from mg_tune.data.base import DatasetInfo
from mg_tune.data.textbox import TEXTBOX_VARIANTS, build_textbox

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "heldout", "test")


def build_split(data: Any, split: str) -> Dataset:
    """The ``split`` of the data set described by a :class:`mg_tune.config.DataConfig`."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
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


__all__ = ["DatasetInfo", "SPLIT_NAMES", "TEXTBOX_VARIANTS", "build_split", "build_textbox"]

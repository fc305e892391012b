"""Splits too small for what a search uses them for: one warning per search.

Two splits decide things without being trained on: the held-out split chooses
the IoU threshold (:mod:`mg_tune.split_eval`) and the validation split measures
the objectives that select the Pareto front. A split with fewer than
``max(MIN_SPLIT_IMAGES, number of classes)`` images makes those choices noisy
(a threshold of 0.05 for one epoch, 0.65 for the next; a front decided by one
image). The search driver (:func:`mg_tune.search.runner.run_search`) calls
:func:`warn_small_splits` once: a ``warning:`` line per small split on the
console and all of them in the tag :data:`SMALL_SPLITS_TAG` of the search's
parent run. A validation split holding fewer than two groups of a data set with
groups is warned about the same way: worst-group accuracy over one group is that
group's accuracy (a Waterbirds validation split of one group scores 1.0 for a model
that gets that group right). The search goes on.

The splits are built by :func:`mg_tune.data.build_split`, exactly as every trial
builds them (real data sets: the files' index, ``options`` and ``max_samples``
applied; TextBox: the ``*_size`` fields). The data fields a spec may search
(``annotation_fraction``, ``dilation``, ``mask_kind``) never change a split's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mg_tune.data import build_split
from mg_tune.data.split_report import GROUP_SPLITS, group_warning
from mg_tune.output import warning
from mg_tune.tracking import SearchRun, set_search_tag

__all__ = ["GroupLessSplit", "MIN_SPLIT_IMAGES", "SMALL_SPLITS_TAG", "SPLIT_USES", "SmallSplit", "small_splits", "warn_small_splits"]

MIN_SPLIT_IMAGES = 20
"""A split that chooses something needs at least ``max(MIN_SPLIT_IMAGES, number of classes)`` images."""

SPLIT_USES: dict[str, str] = {
    "heldout": "choosing the IoU threshold",
    "val": "measuring the objectives that select the Pareto front",
}
"""The splits checked and what a search uses each one for."""

SMALL_SPLITS_TAG = "mg_tune.small_splits"
"""Tag of the search's parent run holding the warnings, one per line (absent when no split is small)."""


@dataclass(frozen=True)
class SmallSplit:
    """A split with fewer images than ``minimum`` (``max(MIN_SPLIT_IMAGES, classes)``)."""

    dataset: str
    split: str
    images: int
    classes: int

    @property
    def minimum(self) -> int:
        return max(MIN_SPLIT_IMAGES, self.classes)

    @property
    def message(self) -> str:
        images = f"{self.images} image{'s' if self.images != 1 else ''}"
        return (
            f"{self.dataset}: the {self.split} split has {images}, fewer than the {self.minimum} "
            f"(max({MIN_SPLIT_IMAGES}, {self.classes} classes)) wanted for {SPLIT_USES[self.split]}; expect noisy choices"
        )


@dataclass(frozen=True)
class GroupLessSplit:
    """A split of a data set with groups that holds fewer than two of them: it cannot measure worst-group accuracy (:func:`mg_tune.data.split_report.group_warning`)."""

    split: str
    message: str


def _dataset_label(data: Any) -> str:
    """How a :class:`mg_tune.config.DataConfig` is named in messages: ``voc at /data/VOCdevkit``, ``textbox/multilabel``."""
    return f"textbox/{data.variant}" if data.name == "textbox" else f"{data.name} at {data.root}"


def small_splits(data: Any) -> list[SmallSplit | GroupLessSplit]:
    """The splits of :data:`SPLIT_USES` of ``data`` (a ``DataConfig``) that are too small, held-out first.

    A validation split of a data set with groups that holds fewer than two of them is
    listed too (:class:`GroupLessSplit`): its worst-group accuracy is one group's accuracy.

    Raises:
        DatasetError: a real data set's files are missing or invalid (as a trial would).
    """
    found: list[SmallSplit | GroupLessSplit] = []
    for split in SPLIT_USES:
        dataset = build_split(data, split)
        small = SmallSplit(_dataset_label(data), split, len(dataset), dataset.info.num_classes)
        if small.images < small.minimum:
            found.append(small)
        if split in GROUP_SPLITS and dataset.info.group_names:
            text = group_warning(_dataset_label(data), split, dataset.group_counts(), dataset.info.group_names)
            if text:
                found.append(GroupLessSplit(split, text))
    return found


def warn_small_splits(data: Any, search_run: SearchRun) -> list[SmallSplit]:
    """Print one warning line per small split of ``data`` and record them in tag :data:`SMALL_SPLITS_TAG` of ``search_run``."""
    found = small_splits(data)
    for small in found:
        warning(small.message)
    if found:
        set_search_tag(search_run, SMALL_SPLITS_TAG, "\n".join(small.message for small in found))
    return found

"""What ``mg-tune data check`` reports of a real data set's splits: counts (:class:`SplitReport`), image checks (:func:`verify_images`) and warnings (:func:`split_warnings`)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mg_tune.data.errors import DatasetError
from mg_tune.data.images import check_decodes
from mg_tune.data.records import BadSamples, Record, SegLoader

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


DECODE_THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
"""Images decoded at once by :func:`verify_images` (PIL releases the GIL while it decodes)."""

Progress = Callable[[Iterable[Any], int], Iterable[Any]]
"""``progress(items, total)``: the same items, shown as they pass (``data check``'s bar on a terminal)."""


def _problem(record: Record, seg_loader: SegLoader | None) -> DatasetError | None:
    try:
        check_decodes(record.image, record.width, record.height, record.source)
        if seg_loader is not None and record.seg is not None:
            seg_loader(record)
    except DatasetError as exc:
        return exc
    return None


GROUP_SPLITS: tuple[str, ...] = ("val", "test")
"""The splits group accuracies are measured on (val selects the front, test reports it)."""

OVERLAP_PAIRS: tuple[tuple[str, str], ...] = (("train", "test"), ("train", "val"), ("train", "heldout"), ("val", "test"), ("heldout", "test"), ("val", "heldout"))
"""Pairs of splits that must not share an image, the worst leak first."""


def group_warning(dataset: str, split: str, group_counts: dict[int, int], group_names: Sequence[str]) -> str | None:
    """Why ``split`` cannot measure worst-group accuracy, or None: it holds fewer than two groups.

    Worst-group accuracy is ``min_g acc_g`` over the groups present; with one group it is that
    group's accuracy (1.0 for a model that gets the majority group right), with none it is absent.
    """
    if not group_names or len(group_counts) >= 2:
        return None
    held = ", ".join(f"{group_names[g]} ({n} image{'s' if n != 1 else ''})" for g, n in group_counts.items()) or "no group"
    return f"{dataset}: the {split} split holds only {held}: it cannot measure worst-group accuracy (the minimum over one group is that group's accuracy)"


def split_warnings(dataset: str, info: Any, splits: dict[str, Sequence[Record]]) -> list[str]:
    """What ``data check`` warns about, besides errors: images listed twice in a split, images shared between splits, classes no image has, degenerate groups.

    An image is identified by its resolved file path (VOC ids and Waterbirds rows name one
    file; COCO's ids are per file and say nothing across files). A test image that is also
    a training image is a leak: its warning starts with ``LEAK``.
    """
    out = []
    paths = {split: [str(Path(r.image).resolve()) for r in records] for split, records in splits.items()}
    for split, listed in paths.items():
        twice = [p for p, n in Counter(listed).items() if n > 1]
        if twice:
            out.append(f"{dataset}: the {split} split lists {len(twice)} image(s) more than once (first: {twice[0]}); each copy counts as a sample")
    for a, b in OVERLAP_PAIRS:
        if a in paths and b in paths:
            shared = sorted(set(paths[a]) & set(paths[b]))
            if shared:
                loud = "LEAK: " if a == "train" else ""
                out.append(f"{loud}{dataset}: {len(shared)} image(s) of the {b} split are also in the {a} split (first: {shared[0]}); {b} metrics are measured partly on {a} images")
    labelled = {k for records in splits.values() for r in records for k in r.labels}
    unused = [name for k, name in enumerate(info.class_names) if k not in labelled]
    if unused and len(splits) > 1:
        listed = ", ".join(repr(n) for n in unused)
        out.append(f"{dataset}: class(es) {listed} label no image of any split: the model gets an output for each that nothing trains or tests (a placeholder category of an export?)")
    for split in GROUP_SPLITS:
        if split in splits and info.group_names:
            counts = dict(sorted(Counter(r.group for r in splits[split] if r.group >= 0).items()))
            text = group_warning(dataset, split, counts, info.group_names)
            if text:
                out.append(text)
    return out


def verify_images(records: Iterable[Record], bad: BadSamples, seg_loader: SegLoader | None, progress: Progress | None = None) -> list[Record]:
    """The records whose image decodes whole at the annotated size and whose segmentation masks load.

    Images are decoded :data:`DECODE_THREADS` at a time, problems handled in record order
    (``bad`` raises the first one in ``error`` mode, so the error is the same on every run;
    the images not yet decoded are then cancelled).
    """
    records = list(records)
    pool = ThreadPoolExecutor(max_workers=DECODE_THREADS)
    try:
        problems = pool.map(_problem, records, [seg_loader] * len(records))
        kept = []
        for record, problem in zip(records, progress(problems, len(records)) if progress else problems):
            if problem is None:
                kept.append(record)
            else:
                bad.handle(problem)
        return kept
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

"""What ``mg-tune data check`` reports of a real data set's split: counts (:class:`SplitReport`) and image checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mg_tune.data.errors import DatasetError
from mg_tune.data.images import image_size
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


def verify_images(records: Iterable[Record], bad: BadSamples, seg_loader: SegLoader | None) -> list[Record]:
    """Records whose image header matches the annotated size and whose segmentation masks load."""
    kept = []
    for r in records:
        try:
            w, h = image_size(r.image)
            if (w, h) != (r.width, r.height):
                raise DatasetError(r.image, f"image is {w}x{h} but {r.source} says {r.width}x{r.height}")
            if seg_loader is not None and r.seg is not None:
                seg_loader(r)
        except DatasetError as exc:
            bad.handle(exc)
            continue
        kept.append(r)
    return kept

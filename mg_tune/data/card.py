"""What a model's outputs mean and what input it expects: the dataset card.

Written into every checkpoint (``dataset``), export and MLflow Model
(``dataset.json``, ``MLmodel`` metadata), so a model is usable -- classes
named in output order, images preprocessed as in training -- without the
data set on disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mg_tune.data.errors import DatasetError
from mg_tune.data.textbox import IMAGE_SIZE

__all__ = ["DatasetCard", "check_classes", "dataset_card"]


@dataclass(frozen=True)
class DatasetCard:
    """What a model's outputs mean and what input it expects.

    ``classes[k]`` names output ``k``; ``multilabel``: sigmoid per class
    (else softmax); ``image_size``: the side ``S`` images are resized to.
    """

    name: str
    classes: tuple[str, ...]
    multilabel: bool
    image_size: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "multilabel": self.multilabel, "image_size": self.image_size,
                "preprocessing": self.preprocessing}

    @property
    def preprocessing(self) -> str:
        return f"RGB float32 in [0, 1], shape [N, 3, H, W]; resized to {self.image_size}x{self.image_size} (bilinear, antialiased); no mean/std normalisation"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatasetCard:
        return cls(str(data["name"]), tuple(str(c) for c in data["classes"]), bool(data["multilabel"]), int(data["image_size"]))


def dataset_card(info: Any, data: Any) -> DatasetCard:
    """The card of a data set's ``info`` (:class:`mg_tune.data.DatasetInfo`) under ``data`` (a ``DataConfig``).

    TextBox images are generated at :data:`mg_tune.data.textbox.IMAGE_SIZE`; real data sets are resized to ``data.image_size``.
    """
    size = IMAGE_SIZE if data.name == "textbox" else data.image_size
    return DatasetCard(info.name, tuple(info.class_names), bool(info.multilabel), int(size))


def check_classes(card: Mapping[str, Any] | None, info: Any, where: str) -> None:
    """Refuse a data set whose class list is not the one a model's card records (``card`` None: an old checkpoint, nothing to compare).

    A model's output ``k`` means ``card["classes"][k]``; if the files were edited since it was
    trained (a category added or renamed), the data set's index ``k`` would name another class
    and every per-class number would silently swap. Raises :class:`mg_tune.data.DatasetError`.
    """
    if card is None or "classes" not in card:
        return
    recorded = tuple(str(c) for c in card["classes"])
    if recorded != tuple(info.class_names):
        differ = next((k for k, (a, b) in enumerate(zip(recorded, info.class_names)) if a != b), min(len(recorded), len(info.class_names)))
        raise DatasetError(
            where,
            f"the model's classes ({len(recorded)}) are not the data set's ({len(info.class_names)}): output {differ} is "
            f"{recorded[differ] if differ < len(recorded) else 'absent'!r} in the model's card but "
            f"{info.class_names[differ] if differ < len(info.class_names) else 'absent'!r} in the data set (were its files changed since training?)",
        )

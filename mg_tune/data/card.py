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

from mg_tune.data.textbox import IMAGE_SIZE

__all__ = ["DatasetCard", "dataset_card"]


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

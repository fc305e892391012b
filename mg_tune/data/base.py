"""Shared dataset metadata for mg-tune data loaders."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset, exposed as ``dataset.info`` by every loader.

    ``class_names[k]`` names label index ``k``; ``multilabel`` says whether ``labels`` is
    multi-hot (True) or one-hot (False); ``group_names[g]`` names group id ``g`` (empty
    when the dataset has no groups, in which case samples carry ``group == -1``).
    ``smerf`` marks the SMERF reasoning settings, whose samples carry the objects to focus
    on (``masks``) and to avoid (``secondary_mask``): only there do SMERF's attribution
    focus levels PAFL / SAFL mean anything (:mod:`mg_tune.split_eval`).
    """

    name: str
    class_names: tuple[str, ...]
    multilabel: bool
    group_names: tuple[str, ...] = ()
    smerf: bool = False

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.class_names)

"""What the Pareto explorer shows, read from MLflow alone: no Ray, nothing written.

A :class:`Snapshot` is one read of a search: :func:`mg_tune.front.checkpoint_table`
(one row per (trial, epoch) checkpoint) plus a text column per filter
(:data:`FILTERS`: the trial's value of a searched parameter, else the
spec's fixed value, else the :class:`~mg_tune.config.TrainConfig` default),
the objectives and constraints of the search, and the parent run.
:meth:`Snapshot.select` applies the filters and marks the Pareto front of
the rows left with :func:`mg_tune.front.mark_pareto`, so with no
filter the front is the one ``mg-tune pareto`` tags in MLflow.

Objectives: ``--objectives`` if given, else the search's own, read back from its
logged spec (:func:`mg_tune.search.logged_spec.search_objectives`, the reader
``mg-tune pareto`` and ``evaluate`` use); the constraints are always the search's.
A search whose spec cannot be read is refused in one line (give ``--objectives``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from mg_tune.front import ID_COLUMNS, ParetoResult, checkpoint_table, mark_pareto
from mg_tune.pareto import Objectives
from mg_tune.search.logged_spec import front_objectives, logged_spec
from mg_tune.search.spec import FRONT_GROUP_KEYS, SearchSpec
from mg_tune.tracking import experiment_name, find_search_run, overlay_artifact

__all__ = ["FILTERS", "Snapshot", "Source", "overlay_artifact"]

FILTERS = dict(zip(FRONT_GROUP_KEYS, ("loss", "attribution method", "layer", "annotation fraction")))


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class Snapshot:
    """One read of a search from MLflow; ``table`` has a text column per :data:`FILTERS` key."""

    search_name: str
    tracking_uri: str
    experiment_id: str
    parent: Run | None
    table: pd.DataFrame
    objectives: list[str]
    maximize: list[bool]
    constraints: list[str]

    def options(self) -> dict[str, list[str]]:
        """The values of every filter present in the table, sorted."""
        return {key: sorted(set(self.table[key]), key=_sort_key) for key in FILTERS}

    def select(self, filters: Mapping[str, Sequence[str]] | None = None) -> ParetoResult:
        """Rows whose value of each filter is among ``filters[key]`` (a missing key keeps all), their front marked."""
        keep = pd.Series(True, index=self.table.index)
        for key, values in (filters or {}).items():
            keep &= self.table[key].isin(list(values))
        return mark_pareto(self.table[keep], self.objectives, self.maximize, self.constraints, search_name=self.search_name)

    def checkpoint(self, trial_id: str, epoch: int) -> pd.Series | None:
        """The row of one (trial, epoch), or ``None``."""
        rows = self.table[(self.table["trial_id"] == str(trial_id)) & (self.table["epoch"] == int(epoch))]
        return rows.iloc[0] if len(rows) else None

    @property
    def status(self) -> str:
        return self.parent.info.status if self.parent is not None else "UNKNOWN"

    @property
    def hyperparameters(self) -> list[str]:
        """``params.*`` columns of the table (the searched parameters)."""
        return [c for c in self.table.columns if c.startswith("params.")]

    @property
    def metrics(self) -> list[str]:
        """Metric columns: validation metrics, then ``test_*``."""
        names = [c for c in self.table.columns if c not in ID_COLUMNS and not c.startswith("params.") and c not in FILTERS]
        return sorted(names, key=lambda c: (c.startswith("test_"), c))


def _sort_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


class Source:
    """A search in MLflow, re-read on :meth:`refresh`; the latest :class:`Snapshot` is :attr:`current` (thread-safe).

    ``objectives``: ``--objectives`` as given (``"f1,epg:max"``), else None for the search's own.

    Raises (on construction, which reads once):
        ValueError: no search of that name, objectives that cannot be read or
            parsed, or an objective it did not log.
    """

    def __init__(self, tracking_uri: str, search_name: str, objectives: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.search_name = search_name
        self.objectives: Objectives = front_objectives(tracking_uri, search_name, objectives)[0]
        self._lock = threading.Lock()
        self._spec: SearchSpec | None = None
        self._spec_read = False
        self.current: Snapshot = self.refresh()

    def refresh(self) -> Snapshot:
        table = checkpoint_table(self.tracking_uri, self.search_name)
        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name(self.search_name))
        if experiment is None:
            raise ValueError(f"no search named {self.search_name!r}")
        parent = find_search_run(client, experiment.experiment_id)
        spec = self._read_spec(parent)
        objectives, maximize = list(self.objectives.names), list(self.objectives.maximize)
        constraints = [str(c) for c in self.objectives.constraints]
        fixed = _fixed_values(spec)
        for key in FILTERS:
            column = table[f"params.{key}"] if f"params.{key}" in table.columns else pd.Series(math.nan, index=table.index, dtype=object)
            table[key] = [_text(v) if not (isinstance(v, float) and math.isnan(v)) else fixed.get(key, "unknown") for v in column]
        snapshot = Snapshot(self.search_name, self.tracking_uri, experiment.experiment_id, parent, table, objectives, maximize, constraints)
        snapshot.select()  # an objective or constraint this search did not log fails here, with the search named
        with self._lock:
            self.current = snapshot
        return snapshot

    def _read_spec(self, parent: Run | None) -> SearchSpec | None:
        """The search's logged spec (read once; for the filters' fixed values), or ``None`` if absent or not valid here."""
        if self._spec_read or parent is None:
            return self._spec
        try:
            self._spec = SearchSpec.model_validate(logged_spec(self.tracking_uri, self.search_name))
        except ValueError:  # pydantic's ValidationError too; e.g. an init_checkpoint or data root this machine lacks
            self._spec = None
        self._spec_read = True
        return self._spec


def _fixed_values(spec: SearchSpec | None) -> dict[str, str]:
    """Each filter's value when a trial did not search it: the spec's fixed or data value, else the default."""
    return {k: _text(v) for k, v in spec.group_defaults().items()} if spec is not None else {}

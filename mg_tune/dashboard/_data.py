"""What the Pareto explorer shows, read from MLflow alone: no Ray, nothing written.

A :class:`Snapshot` is one read of a search: :func:`mg_tune.front.checkpoint_table`
(one row per (trial, epoch) checkpoint) plus a text column per filter
(:data:`FILTERS`: the trial's value of a searched parameter, else the
spec's fixed value, else the :class:`~mg_tune.config.TrainConfig` default),
the objectives and constraints of the search, and the parent run.
:meth:`Snapshot.select` applies the filters and marks the Pareto front of
the rows left with :func:`mg_tune.front.mark_pareto`, so with no
filter the front is the one ``mg-tune pareto`` tags in MLflow.

Objectives: ``--objectives`` if given, else the parent run's tag
``pareto_objectives`` (written when the search ended), else the spec's
(``spec.yaml`` on the parent run), else F1, EPG, IoU maximised.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from mg_tune.front import CONSTRAINTS_TAG, ID_COLUMNS, OBJECTIVES_TAG, ParetoResult, checkpoint_table, mark_pareto
from mg_tune.search.spec import FRONT_GROUP_KEYS, SearchSpec, SpecError, load_spec
from mg_tune.tracking import SPEC_ARTIFACT, experiment_name, find_search_run, overlay_artifact

__all__ = ["FILTERS", "Snapshot", "Source", "overlay_artifact"]

FILTERS = dict(zip(FRONT_GROUP_KEYS, ("loss", "attribution method", "layer", "annotation fraction")))
DEFAULT_OBJECTIVES = (["f1", "epg", "iou"], [True, True, True])


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

    Raises (on construction, which reads once):
        ValueError: no search of that name, or an objective it did not log.
    """

    def __init__(self, tracking_uri: str, search_name: str, objectives: Sequence[str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.search_name = search_name
        self.objectives = list(objectives) if objectives else None
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
        spec = self._read_spec(client, parent)
        objectives, maximize = self._objectives(parent, spec)
        constraints = _constraints(parent, spec)
        fixed = _fixed_values(spec)
        for key in FILTERS:
            column = table[f"params.{key}"] if f"params.{key}" in table.columns else pd.Series(math.nan, index=table.index, dtype=object)
            table[key] = [_text(v) if not (isinstance(v, float) and math.isnan(v)) else fixed.get(key, "unknown") for v in column]
        snapshot = Snapshot(self.search_name, self.tracking_uri, experiment.experiment_id, parent, table, objectives, maximize, constraints)
        snapshot.select()  # an objective or constraint this search did not log fails here, with the search named
        with self._lock:
            self.current = snapshot
        return snapshot

    def _read_spec(self, client: MlflowClient, parent: Run | None) -> SearchSpec | None:
        """The search's spec from its parent run's ``spec.yaml`` (read once), or ``None`` if absent or not a valid spec."""
        if self._spec_read or parent is None:
            return self._spec
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(parent.info.run_id, SPEC_ARTIFACT, tmp)
                self._spec = load_spec(Path(path))[0]
            except (OSError, SpecError, MlflowException):
                self._spec = None
        self._spec_read = True
        return self._spec

    def _objectives(self, parent: Run | None, spec: SearchSpec | None) -> tuple[list[str], list[bool]]:
        if self.objectives:
            return self.objectives, [True] * len(self.objectives)
        tagged = parent.data.tags.get(OBJECTIVES_TAG) if parent is not None else None
        if tagged:
            pairs = [item.rsplit(":", 1) for item in tagged.split(",")]
            return [name for name, _ in pairs], [mode == "max" for _, mode in pairs]
        if spec is not None:
            return spec.metric_names, [m == "max" for m in spec.modes]
        return list(DEFAULT_OBJECTIVES[0]), list(DEFAULT_OBJECTIVES[1])


def _constraints(parent: Run | None, spec: SearchSpec | None) -> list[str]:
    """The parent run's ``pareto_constraints`` tag if present (``"; "``-joined), else the spec's."""
    tagged = parent.data.tags.get(CONSTRAINTS_TAG) if parent is not None else None
    if tagged is not None:
        return [c for c in tagged.split("; ") if c]
    return [str(c) for c in spec.parsed_constraints] if spec is not None else []


def _fixed_values(spec: SearchSpec | None) -> dict[str, str]:
    """Each filter's value when a trial did not search it: the spec's fixed or data value, else the default."""
    return {k: _text(v) for k, v in spec.group_defaults().items()} if spec is not None else {}

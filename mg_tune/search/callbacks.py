"""Driver-side Ray Tune callbacks of a search: hypervolume tracking and early-stopped trials.

:class:`HypervolumeTracker` logs, after every finished trial-epoch, the
hypervolume of all (trial, epoch) points seen so far on the search's parent
run, with step = trial-epochs spent::

    HV_s = normalized_hypervolume({y(trial, epoch) : the first s trial-epochs, meeting the constraints},
                                  bounds = (0, 1) per objective)

(:func:`mg_tune.pareto.normalized_hypervolume`: objectives mapped to [0, 1],
larger is better, reference point 0), so ``HV_s`` never decreases and users
watch the search converge in MLflow. It is computed by the same function as
the Pareto report's curve (:func:`mg_tune.pareto.hypervolume_over_time`,
:func:`mg_tune.front.hypervolume_curve`), whose last value is the
``pareto_hypervolume`` of :func:`mg_tune.front.search_pareto` (same
bounds): ``hypervolume`` is that curve logged while the search runs. ``setup`` re-reads the points already in MLflow, so a resumed
search continues the count instead of restarting it.

:class:`StartingTable` is that read, shared: every callback that starts
from what MLflow holds (this tracker, retention, the checkpoint index
writer) gets the same one from ``build_tuner``, so a (re)starting driver
reads the search's LoggedModels once, not once per callback.

:class:`StoppedTrialFinisher` ends the MLflow run of a trial that Tune
stopped (a scheduler decision) as FINISHED with tag ``mg_tune.stopped_early``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from ray import tune

from mg_tune.pareto import hypervolume_over_time, pareto_front
from mg_tune.checkpoint_table import checkpoint_table
from mg_tune.front import feasible_rows
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import RetryPolicy, SearchRun, clear_index_tag, find_search_run, finish_stopped_trial, log_search_metrics

__all__ = ["HYPERVOLUME_METRIC", "HypervolumeTracker", "StartingTable", "StoppedTrialFinisher"]

HYPERVOLUME_METRIC = "hypervolume"


class StartingTable:
    """The search's checkpoint table as MLflow holds it when the driver (re)starts: read once, for every callback's ``setup``.

    :meth:`read` first clears the parent run's checkpoint-index tag (the
    search is about to change its checkpoints, so the index is no longer
    complete), then reads every LoggedModel (:func:`checkpoint_table`), and
    hands the same table to every later caller. The table is not pickled:
    a driver restored from Ray's experiment state (``--resume``) reads
    afresh. Callers must not modify it.
    """

    def __init__(self, search_run: SearchRun) -> None:
        self.search_run = search_run
        self._table: pd.DataFrame | None = None

    def read(self) -> pd.DataFrame:
        if self._table is None:
            client = MlflowClient(self.search_run.tracking_uri)
            clear_index_tag(client, RetryPolicy().call(find_search_run, client, self.search_run.experiment_id))
            self._table = checkpoint_table(self.search_run.tracking_uri, self.search_run.name)
        return self._table

    def __getstate__(self) -> dict[str, Any]:
        return {"search_run": self.search_run, "_table": None}


class _SearchRunCallback(tune.Callback):
    """A driver-side callback of one search, holding its search run.

    Ray pickles it, with its :class:`~mg_tune.tracking.SearchRun`, into the
    experiment state (``tuner.pkl``); the run's tracking URI holds no
    password (:func:`mg_tune.tracking.move_credentials`), and a resumed
    driver's restored callback writes to the same parent run.
    """

    def __init__(self, search_run: SearchRun, starting_table: StartingTable | None = None) -> None:
        self.search_run = search_run
        self.starting_table = starting_table or StartingTable(search_run)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore; a search stopped before the rename keeps its run under ``search``, one stopped before the shared
        read has no ``starting_table`` (``--resume`` still works)."""
        if "search" in state and "search_run" not in state:
            state["search_run"] = state.pop("search")
        state.setdefault("starting_table", StartingTable(state["search_run"]))
        self.__dict__.update(state)


class HypervolumeTracker(_SearchRunCallback):
    """Logs ``hypervolume`` on the parent run after every new (trial, epoch) result; see the module docstring."""

    def __init__(self, spec: SearchSpec, search_run: SearchRun, starting_table: StartingTable | None = None) -> None:
        super().__init__(search_run, starting_table)
        self.spec = spec
        self.metrics = list(dict.fromkeys(spec.metric_names + [c.metric for c in spec.parsed_constraints]))
        self.points: dict[tuple[str, int], list[float]] = {}
        self.logged: float | None = None  # the hypervolume logged last (None: none yet in this driver)

    def setup(self, **info: Any) -> None:
        table = self.starting_table.read()
        columns = [table[m].to_numpy(dtype=float) if m in table else np.full(len(table), np.nan) for m in self.metrics]
        self.points = {
            (trial, int(epoch)): [float(c[i]) for c in columns]
            for i, (trial, epoch) in enumerate(zip(table["trial_id"], table["epoch"]))
        }

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" not in result:
            return
        key = (trial.trial_id, int(result["epoch"]))
        if key in self.points:  # a restarted trial repeating an epoch already counted
            return
        self.points[key] = [float(result.get(m, math.nan)) for m in self.metrics]
        self.logged = self.hypervolume()
        log_search_metrics(self.search_run, {HYPERVOLUME_METRIC: self.logged}, step=len(self.points))

    def _table(self) -> tuple[pd.DataFrame, list[str], list[bool], np.ndarray]:
        table = pd.DataFrame(list(self.points.values()), columns=self.metrics, dtype=float)
        return table, self.spec.metric_names, [mode == "max" for mode in self.spec.modes], feasible_rows(table, self.spec.parsed_constraints)

    def hypervolume(self) -> float:
        """``HV_s`` of the points seen so far (constraints applied): the last value of :func:`mg_tune.pareto.hypervolume_over_time`."""
        table, objectives, maximize, feasible = self._table()
        curve = hypervolume_over_time(table[objectives].to_numpy(dtype=float), [(0.0, 1.0)] * len(objectives), maximize, feasible)
        return float(curve[-1]) if len(curve) else 0.0

    def front(self) -> list[tuple[str, int]]:
        """The (trial id, epoch) keys of the points seen so far on their front (feasible, non-dominated): what ``search_pareto`` will tag."""
        table, objectives, maximize, feasible = self._table()
        keys = [key for key, ok in zip(self.points, feasible) if ok]
        return [keys[i] for i in pareto_front(table.loc[feasible, objectives].to_numpy(dtype=float), maximize)] if keys else []


class StoppedTrialFinisher(_SearchRunCallback):
    """When a trial completes with its MLflow run still RUNNING (Tune stopped it), end the run FINISHED, tagged."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get("epoch")
        if epoch is not None:
            finish_stopped_trial(self.search_run, trial.trial_id, int(epoch))

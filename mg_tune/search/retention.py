"""Checkpoint retention while a search runs: the weights of dominated checkpoints are deleted.

A search keeps one checkpoint per (trial, epoch): ResNet-50 with Adam is
~300 MB, so the papers' VOC protocol (64 trials × 50 epochs) would store about
a terabyte. Most of it can never matter: with objectives y (oriented so that
larger is better) a checkpoint p is *dominated* by q when

    y_i(q) ≥ y_i(p) for every objective i  and  y_j(q) > y_j(p) for some j.

Points are only ever added to a search, so once a checkpoint q that meets the
spec's constraints dominates p, p is off the front for good, whatever runs
later (q stays, and so does whatever dominates q). ``checkpoints.keep``
(:class:`mg_tune.search.spec.CheckpointPolicy`) decides where q may come from:

* ``front``: any checkpoint of the search;
* ``front_per_group`` (what the GPU specs set): a checkpoint with the same loss, attribution
  method, layer and annotation fraction (:data:`~mg_tune.search.spec.FRONT_GROUP_KEYS`).
  A point dominated inside its group is dominated in every union of groups,
  so every front the dashboard's filters can show keeps its weights;
* ``all`` (the default): nothing is deleted.

A point with a NaN objective is never dominated (it is kept), and an
infeasible point never dominates. What is deleted is the LoggedModel's
``checkpoint.pt`` (:func:`mg_tune.tracking.delete_weights`): its metrics
stay in MLflow and it is tagged ``mg_tune.weights_deleted`` with the reason,
and the search's checkpoint index (:mod:`mg_tune.search.checkpoint_index`)
is told, so its ``weights_deleted`` column follows; ``setup`` clears the
index's completeness tag first.

Safety: a trial's newest epoch is never deleted while the trial may still
run (it is where a restarted trial or ``--resume`` continues from); it
becomes deletable when the trial reports a newer epoch or ends. A resumed
driver re-reads the points from MLflow and treats every trial as possibly
running. The front is computed over the spec's objectives: a later
``mg-tune pareto --objectives`` over *other* metrics may name checkpoints
whose weights are gone (``keep: all`` keeps them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow import MlflowClient

from mg_tune.search.callbacks import StartingTable, _SearchRunCallback
from mg_tune.search.spec import FRONT_GROUP_KEYS, SearchSpec
from mg_tune.tracking import EPOCH_TAG, TRIAL_TAG, RetryPolicy, SearchRun, delete_weights, iter_logged_models

if TYPE_CHECKING:
    from mg_tune.search.checkpoint_index import CheckpointIndexWriter

__all__ = ["CheckpointRetention"]

log = logging.getLogger(__name__)


@dataclass
class _Point:
    objectives: np.ndarray  # oriented: larger is better
    feasible: bool
    group: tuple


def _dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: does ``a`` dominate ``b`` (larger is better; a NaN on either side never does)? Broadcasts."""
    return np.all(a >= b, axis=-1) & np.any(a > b, axis=-1)


class CheckpointRetention(_SearchRunCallback):
    """Driver-side Ray Tune callback applying ``spec.checkpoints.keep``; see the module docstring."""

    index: CheckpointIndexWriter | None = None  # a callback pickled before the checkpoint index existed resumes without one

    def __init__(
        self, spec: SearchSpec, search_run: SearchRun, index: CheckpointIndexWriter | None = None, starting_table: StartingTable | None = None
    ) -> None:
        super().__init__(search_run, starting_table)
        self.spec = spec
        self.index = index  # told of every deletion, so the search's checkpoint index says weights_deleted
        self.points: dict[tuple[str, int], _Point] = {}
        self.dominator: dict[tuple[str, int], tuple[str, int]] = {}  # dominated, not yet deleted → one point dominating it
        self.deleted: set[tuple[str, int]] = set()
        self.newest: dict[str, int] = {}  # trials that may still run → their newest epoch
        self.sign = np.array([1.0 if mode == "max" else -1.0 for mode in spec.modes])
        self.defaults = spec.group_defaults()

    # -- Ray Tune's hooks
    def setup(self, **info: Any) -> None:
        """Start from what MLflow holds (a resumed driver: every trial may still run, its newest epoch kept)."""
        self.points, self.dominator, self.deleted, self.newest = {}, {}, set(), {}
        for row in self.starting_table.read().to_dict("records"):  # the read clears the index tag: deletions change the index
            params = {key: row.get(f"params.{key}") for key in FRONT_GROUP_KEYS}
            key = (str(row["trial_id"]), int(row["epoch"]))
            if row["weights_deleted"]:
                self.deleted.add(key)
            self._add(key, row, params)
            self.newest[key[0]] = max(self.newest.get(key[0], 0), key[1])
        self._sweep()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" not in result:
            return
        key = (trial.trial_id, int(result["epoch"]))
        self.newest[trial.trial_id] = max(self.newest.get(trial.trial_id, 0), key[1])
        if key not in self.points:
            self._add(key, result, trial.config)
        self._sweep()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.newest.pop(trial.trial_id, None)
        self._sweep()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_complete(iteration, trials, trial)

    # -- bookkeeping
    def _add(self, key: tuple[str, int], metrics: dict, params: dict) -> None:
        """Record a point and update which points are dominated (by a feasible point of the same group)."""
        values = np.array([float(metrics.get(m, np.nan)) for m in self.spec.metric_names]) * self.sign
        feasible = all(c.holds(float(metrics.get(c.metric, np.nan))) for c in self.spec.parsed_constraints)
        group = self._group(params)
        peers = [(k, p) for k, p in self.points.items() if p.group == group]
        self.points[key] = _Point(values, feasible, group)
        if not peers:
            return
        others = np.stack([p.objectives for _, p in peers])
        feasible_peers = np.array([p.feasible for _, p in peers])
        hits = np.flatnonzero(_dominates(others, values) & feasible_peers)
        if len(hits) and key not in self.deleted:
            self.dominator[key] = peers[hits[0]][0]
        if feasible:
            for i in np.flatnonzero(_dominates(values[None, :], others)):
                k = peers[i][0]
                if k not in self.deleted:
                    self.dominator.setdefault(k, key)

    def _group(self, params: dict) -> tuple[str, ...]:
        """The point's group: its :data:`FRONT_GROUP_KEYS` values for ``front_per_group``, one group otherwise."""
        if self.spec.checkpoints.keep != "front_per_group":
            return ()
        values = []
        for name in FRONT_GROUP_KEYS:
            value = params.get(name)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                value = self.defaults[name]
            values.append(f"{value:g}" if isinstance(value, float) else str(value))
        return tuple(values)

    def _sweep(self) -> None:
        """Delete the weights of every dominated checkpoint no running trial may still need."""
        if self.spec.checkpoints.keep == "all":
            return
        for key, by in list(self.dominator.items()):
            trial, epoch = key
            if key in self.deleted or (trial in self.newest and epoch >= self.newest[trial]):
                continue
            reason = f"dominated by trial {by[0]} epoch {by[1]} on {', '.join(self.spec.metric_names)} (checkpoints.keep: {self.spec.checkpoints.keep})"
            try:
                RetryPolicy().call(self._delete, trial, epoch, reason)
            except Exception as exc:  # a failed deletion must not stop the search; the weights simply stay
                log.warning("could not delete the weights of trial %s epoch %s: %s", trial, epoch, exc)
            else:
                if self.index is not None:
                    self.index.weights_deleted(trial, epoch)
            self.deleted.add(key)
            del self.dominator[key]

    def _delete(self, trial: str, epoch: int, reason: str) -> None:
        client = MlflowClient(self.search_run.tracking_uri)
        query = f"tags.`{TRIAL_TAG}` = '{trial}' AND tags.`{EPOCH_TAG}` = '{epoch}'"
        for model in iter_logged_models(client, self.search_run.experiment_id, query):
            delete_weights(self.search_run.tracking_uri, model, reason)

"""The driver's checkpoint index of a search (:mod:`mg_tune.tracking.checkpoint_index`): kept while trials report, written to the parent run.

Each trial logs an epoch to MLflow first and then reports it to Tune with the
epoch's index row under :data:`RESULT_KEY` (the LoggedModel's id, creation
time and checkpoint URI, the stored metrics: what the driver cannot derive).
:class:`CheckpointIndexWriter` collects those rows, one per (trial, epoch),
and uploads them as the parent run's ``checkpoint_index.parquet``:

* while the search runs, at most every ``interval_s`` seconds and only once
  the rows grew by a factor ``1 + growth`` since the last upload, so the
  bytes written over a whole search stay below ``(2 + 1/growth)`` times
  the final index (a geometric series), never one upload per epoch;
* when the experiment ends (Tune's ``on_experiment_end``, after every
  trial's last result and retention's last deletion), once more, complete,
  and then tagged ``mg_tune.checkpoint_index=complete:<rows>``.

Before that final write the index is checked against the trial runs (one
``search_runs`` page per 1,000 trials): a run whose newest logged epoch
(its ``epoch`` metric) is not matched by exactly the epochs ``1 .. newest``
in the index -- an epoch a trial logged but could not report (killed in
between), a trial whose run was already finished when a resumed driver
restarted it -- has its rows re-read from its READY LoggedModels (one request
per such run). So the complete index holds exactly the checkpoints
:func:`mg_tune.checkpoint_table.checkpoint_table` reads from the LoggedModels.

:class:`~mg_tune.search.retention.CheckpointRetention` tells the writer
which weights it deleted (:meth:`CheckpointIndexWriter.weights_deleted`),
so the index's ``weights_deleted`` column follows. ``setup`` (a new or a
resumed driver) clears the completeness tag and starts from what MLflow
holds (every LoggedModel, as the tag is gone).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from mg_tune.checkpoint_table import ID_COLUMNS
from mg_tune.search.callbacks import StartingTable, _SearchRunCallback
from mg_tune.tracking import (
    PARENT_TAG,
    ROLE_TAG,
    TRIAL_TAG,
    RetryPolicy,
    SearchRun,
    checkpoint_record,
    iter_logged_models,
    iter_runs,
    model_epoch,
    model_metrics,
    write_index,
)

__all__ = ["RESULT_KEY", "CheckpointIndexWriter"]

log = logging.getLogger(__name__)

RESULT_KEY = "mg_tune_checkpoint"
"""Key of a trial's result holding its epoch's index row (:func:`mg_tune.tracking.checkpoint_record`)."""


def _records_from_table(table) -> dict[tuple[str, int], dict[str, Any]]:
    """(trial id, epoch) → index row, from a :func:`checkpoint_table`."""
    metrics = [c for c in table.columns if c not in ID_COLUMNS and not c.startswith("params.")]
    records = {}
    for row in table.to_dict("records"):
        records[(str(row["trial_id"]), int(row["epoch"]))] = {
            **{c: row[c] for c in ("run_id", "model_id", "checkpoint_uri")},
            "epoch": int(row["epoch"]),
            "created": int(row["created"]),
            "weights_deleted": bool(row["weights_deleted"]),
            "metrics": {m: float(row[m]) for m in metrics if row[m] == row[m]},  # NaN: not logged
        }
    return records


class CheckpointIndexWriter(_SearchRunCallback):
    """Keeps the search's checkpoint index from the trials' results and writes it; see the module docstring."""

    def __init__(self, search_run: SearchRun, interval_s: float = 60.0, growth: float = 0.5, starting_table: StartingTable | None = None) -> None:
        super().__init__(search_run, starting_table)
        self.interval_s = interval_s
        self.growth = growth
        self.records: dict[tuple[str, int], dict[str, Any]] = {}
        self.written_rows = 0
        self.written_at = 0.0
        self.bytes_written = 0

    # -- Ray Tune's hooks
    def setup(self, **info: Any) -> None:
        self.records = _records_from_table(self.starting_table.read())  # the read clears the completeness tag first
        self.written_rows, self.written_at = len(self.records), time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        record = result.get(RESULT_KEY)
        if not isinstance(record, dict) or "epoch" not in record:
            return
        key = (trial.trial_id, int(record["epoch"]))
        if key not in self.records:  # first write wins, as in MLflow
            self.records[key] = {**record, "metrics": dict(record.get("metrics") or {})}
        self._maybe_write()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        try:
            self.finish()
        except Exception as exc:  # the index is an accelerator: without its tag readers use the LoggedModels
            log.warning("could not write the checkpoint index of search %s: %s", self.search_run.name, exc)

    # -- what retention tells
    def weights_deleted(self, trial_id: str, epoch: int) -> None:
        """Retention deleted the weights of (trial, epoch)."""
        record = self.records.get((trial_id, int(epoch)))
        if record is not None:
            record["weights_deleted"] = True

    # -- writing
    def _maybe_write(self) -> None:
        rows = len(self.records)
        if rows < max(self.written_rows * (1 + self.growth), self.written_rows + 1):
            return
        if time.monotonic() - self.written_at < self.interval_s:
            return
        try:
            self._write(complete=False)
        except Exception as exc:  # an upload that fails is retried at the next chance; the search goes on
            log.warning("could not write the checkpoint index of search %s: %s", self.search_run.name, exc)

    def _write(self, complete: bool) -> None:
        self.bytes_written += write_index(self.search_run.tracking_uri, self.search_run.run_id, self._sorted(), complete=complete)
        self.written_rows, self.written_at = len(self.records), time.monotonic()

    def _sorted(self) -> list[dict[str, Any]]:
        return [self.records[k] for k in sorted(self.records, key=lambda k: (self.records[k]["created"], k))]

    def finish(self) -> None:
        """Check the index against the trial runs (re-reading the runs it does not match), write it complete and tag it."""
        client = MlflowClient(self.search_run.tracking_uri)
        query = f"tags.`{PARENT_TAG}` = '{self.search_run.run_id}' AND tags.`{ROLE_TAG}` = 'trial'"
        epochs: dict[str, set[int]] = {}
        for trial_id, epoch in self.records:
            epochs.setdefault(trial_id, set()).add(epoch)
        for run in RetryPolicy().call(lambda: list(iter_runs(client, self.search_run.experiment_id, query))):
            trial_id = run.data.tags.get(TRIAL_TAG, run.info.run_name)
            newest = run.data.metrics.get("epoch")
            expected = set(range(1, int(newest) + 1)) if newest is not None else set()
            if epochs.get(trial_id, set()) != expected:
                RetryPolicy().call(self._reread, client, trial_id, run.info.run_id)
        self._write(complete=True)

    def _reread(self, client: MlflowClient, trial_id: str, run_id: str) -> None:
        """Replace the rows of one trial with its READY LoggedModels (the oldest of an epoch wins, as in :func:`checkpoint_table`)."""
        models = {}
        for model in iter_logged_models(client, self.search_run.experiment_id, f"source_run_id = '{run_id}'"):
            epoch = model_epoch(model)
            if model.status == LoggedModelStatus.READY and epoch is not None:
                if epoch not in models or model.creation_timestamp < models[epoch].creation_timestamp:
                    models[epoch] = model
        self.records = {k: r for k, r in self.records.items() if k[0] != trial_id}
        for epoch, model in models.items():
            self.records[(trial_id, epoch)] = checkpoint_record(run_id, epoch, model, model_metrics(model, epoch))

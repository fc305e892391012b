"""A search's checkpoint index: one compact row per (trial run, epoch), one artifact of the parent run.

Reading every LoggedModel of a large search through a tracking server costs
seconds of CPU per thousand models (each comes with its tags, params and
metrics as JSON; docs/benchmarks.md). The driver sees every epoch anyway,
so it keeps the few fields the checkpoint table needs per checkpoint
(:data:`INDEX_COLUMNS` and the epoch's metrics, as :func:`checkpoint_record`
makes them) and writes them to the parent run as the Parquet artifact
:data:`INDEX_ARTIFACT` (:func:`write_index`): a search's whole table is then
one download and the trial runs' page(s).

The index is trusted only when the parent run's tag :data:`INDEX_TAG` says
``complete:<rows>`` and the file has that many rows (:func:`read_index`).
The driver sets it after its final write, once it has checked the index
against the trial runs (:class:`mg_tune.search.checkpoint_index.CheckpointIndexWriter`).
Whatever may add or change checkpoints afterwards clears it first
(:func:`clear_index_tag`: ``--resume`` in :func:`~mg_tune.tracking.start_search`,
a driver's retention, ``mg-tune evaluate`` until it has patched the index),
so a reader falls back to the LoggedModels whenever the index might be stale.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, Run

from mg_tune.tracking.layout import CHECKPOINT_ARTIFACT, WEIGHTS_DELETED_TAG
from mg_tune.tracking.retry import RetryPolicy

__all__ = [
    "INDEX_ARTIFACT",
    "INDEX_TAG",
    "checkpoint_record",
    "clear_index_tag",
    "index_rows",
    "read_index",
    "updating_index_metrics",
    "write_index",
]

log = logging.getLogger(__name__)

INDEX_ARTIFACT = "checkpoint_index.parquet"
INDEX_TAG = "mg_tune.checkpoint_index"  # on the parent run: "complete:<rows>" (trusted), absent otherwise
INDEX_COLUMNS = ["run_id", "epoch", "model_id", "checkpoint_uri", "created", "weights_deleted"]
METRIC_PREFIX = "metrics."
COMPLETE = "complete"


def checkpoint_record(run_id: str, epoch: int, model: LoggedModel, metrics: Mapping[str, float]) -> dict[str, Any]:
    """One checkpoint as the index holds it: :data:`INDEX_COLUMNS` and ``metrics`` (a dict of floats; NaN: not logged)."""
    return {
        "run_id": run_id,
        "epoch": int(epoch),
        "model_id": model.model_id,
        "checkpoint_uri": f"{model.artifact_location.rstrip('/')}/{CHECKPOINT_ARTIFACT}",
        "created": int(model.creation_timestamp),
        "weights_deleted": WEIGHTS_DELETED_TAG in (model.tags or {}),
        "metrics": {str(k): float(v) for k, v in metrics.items() if k != "epoch"},
    }


def index_frame(records: Iterable[Mapping[str, Any]]):
    """Records as the index's table: :data:`INDEX_COLUMNS`, then ``metrics.<name>`` per metric (NaN where a row has none)."""
    import pandas as pd

    records = list(records)
    keys = sorted({k for r in records for k in r["metrics"]})
    rows = [{**{c: r[c] for c in INDEX_COLUMNS}, **{METRIC_PREFIX + k: r["metrics"].get(k, math.nan) for k in keys}} for r in records]
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS + [METRIC_PREFIX + k for k in keys])
    return frame.astype({"epoch": "int64", "created": "int64", "weights_deleted": bool}) if len(frame) else frame


def index_records(frame) -> list[dict[str, Any]]:
    """The inverse of :func:`index_frame` (metrics that are NaN are left out: not logged)."""
    metric_columns = [c for c in frame.columns if c.startswith(METRIC_PREFIX)]
    records = []
    for row in frame.to_dict("records"):
        metrics = {c[len(METRIC_PREFIX) :]: float(row[c]) for c in metric_columns if not math.isnan(row[c])}
        records.append(
            {
                "run_id": str(row["run_id"]),
                "epoch": int(row["epoch"]),
                "model_id": str(row["model_id"]),
                "checkpoint_uri": str(row["checkpoint_uri"]),
                "created": int(row["created"]),
                "weights_deleted": bool(row["weights_deleted"]),
                "metrics": metrics,
            }
        )
    return records


def write_index(tracking_uri: str, run_id: str, records: Iterable[Mapping[str, Any]], complete: bool = False) -> int:
    """Upload ``records`` as the parent run's :data:`INDEX_ARTIFACT` (replacing it); with ``complete``, then tag it trusted. Returns the bytes written."""
    client = MlflowClient(tracking_uri)
    frame = index_frame(records)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / INDEX_ARTIFACT
        frame.to_parquet(path, index=False, compression="zstd")
        RetryPolicy().call(client.log_artifact, run_id, str(path))
        size = path.stat().st_size
    if complete:
        RetryPolicy().call(client.set_tag, run_id, INDEX_TAG, f"{COMPLETE}:{len(frame)}")
    return size


def index_rows(parent: Run | None) -> int | None:
    """The row count a complete index of this parent run has, or None when its index is not trusted."""
    value = parent.data.tags.get(INDEX_TAG, "") if parent is not None else ""
    state, _, rows = value.partition(":")
    return int(rows) if state == COMPLETE and rows.isdigit() else None


def read_index(tracking_uri: str, parent: Run | None) -> list[dict[str, Any]] | None:
    """The records of the parent run's index when it is complete (:func:`index_rows`), else None (read the LoggedModels).

    One artifact download. A missing or unreadable file, or one whose row
    count is not the tag's, is not trusted (None, with a warning).
    """
    rows = index_rows(parent)
    if rows is None:
        return None
    import mlflow.artifacts
    import pandas as pd

    try:
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"{parent.info.artifact_uri.rstrip('/')}/{INDEX_ARTIFACT}"
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri)
            frame = pd.read_parquet(path)
    except Exception as exc:  # an index that cannot be read is no index: the LoggedModels are the record
        log.warning("checkpoint index of run %s not readable (%s); reading every LoggedModel", parent.info.run_id, exc)
        return None
    if len(frame) != rows or not set(INDEX_COLUMNS) <= set(frame.columns):
        log.warning("checkpoint index of run %s has %d rows, its tag says %d; reading every LoggedModel", parent.info.run_id, len(frame), rows)
        return None
    return index_records(frame)


def clear_index_tag(client: MlflowClient, run: Run | None) -> bool:
    """Remove :data:`INDEX_TAG` from a parent run (before anything changes its checkpoints); whether it said complete."""
    if run is None or INDEX_TAG not in run.data.tags:
        return False
    RetryPolicy().call(client.delete_tag, run.info.run_id, INDEX_TAG)
    return index_rows(run) is not None


@contextlib.contextmanager
def updating_index_metrics(tracking_uri: str, parent: Run | None) -> Iterator[Callable[[str, int, Mapping[str, float]], None]]:
    """Keep a complete index complete while metrics are linked to its checkpoints (``mg-tune evaluate``).

    Yields ``add(run_id, epoch, metrics)``, to be called for every epoch
    whose LoggedModel gets ``metrics`` linked inside the block. A complete
    index is read, its tag cleared before the block, and on leaving it the
    index is written back with the added metrics (NaN ones are logged on the
    run only, so they are left out) and tagged complete again. If the block
    raises, the tag stays cleared: readers use the LoggedModels. Without a
    complete index, ``add`` does nothing.
    """
    records = read_index(tracking_uri, parent)
    updates: dict[tuple[str, int], dict[str, float]] = {}

    def add(run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        values = {str(k): float(v) for k, v in metrics.items() if not math.isnan(float(v))}
        updates.setdefault((run_id, int(epoch)), {}).update(values)

    if records is None:
        yield add
        return
    clear_index_tag(MlflowClient(tracking_uri), parent)
    yield add
    for record in records:
        record["metrics"].update(updates.get((record["run_id"], record["epoch"]), {}))
    write_index(tracking_uri, parent.info.run_id, records, complete=True)

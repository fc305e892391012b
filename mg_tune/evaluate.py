"""Test evaluation of a search's Pareto checkpoints, logged back to MLflow (main paper Sec. 4: Pareto models → test).

For every checkpoint on the Pareto front (or every checkpoint), read from
MLflow alone (:func:`mg_tune.pareto_report.search_pareto`), the checkpoint is
downloaded and evaluated with :func:`mg_tune.evaluation.evaluate_checkpoint`
(the IoU threshold is chosen on the held-out split, never on the split
reported). Each metric ``<name>`` is logged as ``<split>_<name>`` (``test_f1``,
``test_iou``, ...) with ``step=epoch`` on the trial run *and* linked to the
epoch's LoggedModel, so it shows next to the validation metrics and the
checkpoint, and :func:`mg_tune.pareto_report.checkpoint_table` and
:func:`mg_tune.export.export_checkpoint` read it back. Re-running logs new
values with a newer timestamp; readers take the latest.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from mg_tune.data import SPLIT_NAMES
from mg_tune.evaluation import evaluate_checkpoint
from mg_tune.pareto_report import search_pareto
from mg_tune.tracking import RetryPolicy, download_checkpoint

__all__ = ["evaluate_pareto"]

ID_COLUMNS = ["trial_id", "epoch", "run_id", "model_id"]


def evaluate_pareto(
    tracking_uri: str,
    search: str,
    objectives: Sequence[str],
    maximize: Sequence[bool],
    split: str = "test",
    pareto_only: bool = True,
    device: str = "cpu",
) -> pd.DataFrame:
    """Evaluate the Pareto checkpoints (all checkpoints with ``pareto_only=False``) of ``search`` on ``split``.

    Checkpoints whose weights the search's retention policy deleted are
    skipped with a warning (their validation metrics stay in MLflow).

    The front is that of :func:`~mg_tune.pareto_report.search_pareto` over
    ``objectives`` (no tags are written). Results are logged to MLflow as
    described in the module docstring.

    Returns:
        One row per checkpoint, sorted by trial and epoch: ``trial_id``,
        ``epoch``, ``run_id``, ``model_id``, the validation ``objectives``,
        then ``<split>_<metric>`` for every metric of ``evaluate_checkpoint``.

    Raises:
        ValueError: unknown split, search or objective.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    result = search_pareto(tracking_uri, search, list(objectives), list(maximize), tag=False)
    checkpoints = result.front if pareto_only else result.table
    deleted = checkpoints["weights_deleted"].astype(bool)
    if deleted.any():  # the search's retention policy (spec checkpoints.keep) kept their metrics, not their weights
        warnings.warn(f"{int(deleted.sum())} of {len(checkpoints)} checkpoints have no weights (deleted by the search's checkpoints.keep policy); evaluating the other {int((~deleted).sum())}", stacklevel=2)
        checkpoints = checkpoints[~deleted]
    client = MlflowClient(tracking_uri)
    rows = [_evaluate_row(client, tracking_uri, row, list(objectives), split, device) for row in checkpoints.to_dict("records")]
    columns = ID_COLUMNS + list(objectives)
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    table = table[columns + sorted(set(table.columns) - set(columns))]
    return table.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def _evaluate_row(client: MlflowClient, tracking_uri: str, row: Mapping[str, Any], objectives: list[str], split: str, device: str) -> dict[str, Any]:
    """Download, evaluate and log one checkpoint; its row of the result table."""
    epoch = int(row["epoch"])
    with tempfile.TemporaryDirectory(prefix="mg-tune-eval-") as tmp:
        checkpoint = download_checkpoint(tracking_uri, row["run_id"], epoch, Path(tmp))
        metrics = {f"{split}_{k}": float(v) for k, v in evaluate_checkpoint(str(checkpoint), split, device).items()}
    _log(client, row["run_id"], row["model_id"], epoch, metrics)
    return {**{c: row[c] for c in ID_COLUMNS}, "epoch": epoch, **{o: row[o] for o in objectives}, **metrics}


def _log(client: MlflowClient, run_id: str, model_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
    """Log ``metrics`` on the run at ``step=epoch``, linked to the LoggedModel (NaN: run only, see mg_tune.tracking)."""
    stamp = int(time.time() * 1000)
    items = [
        Metric(key, value, stamp, epoch, model_id=None if math.isnan(value) else model_id, run_id=run_id)
        for key, value in metrics.items()
    ]
    RetryPolicy().call(client.log_batch, run_id, metrics=items)

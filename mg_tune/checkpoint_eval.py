"""Test evaluation of a search's Pareto checkpoints, logged back to MLflow (main paper Sec. 4: Pareto models → test).

For every checkpoint on the Pareto front (or every checkpoint), read from
MLflow alone (:func:`mg_tune.front.search_pareto`), the checkpoint is
downloaded and evaluated with :func:`mg_tune.split_eval.evaluate_checkpoint`.
Each metric ``<name>`` is logged as ``<split>_<name>`` (``test_f1``,
``test_iou``, ...) with ``step=epoch`` on the trial run *and* linked to the
epoch's LoggedModel, so it shows next to the validation metrics and the
checkpoint, and :func:`mg_tune.front.checkpoint_table` and
:func:`mg_tune.export.export_checkpoint` read it back. Re-running logs new
values with a newer timestamp; readers take the latest. A search's complete
checkpoint index (:mod:`mg_tune.tracking.checkpoint_index`) gets the same
metrics, so it stays complete.

The IoU threshold is never chosen on the split reported
(:data:`IOU_THRESHOLD_MODES`): ``checkpoint`` (default) uses each checkpoint's
own, as in training (its config's fixed ``iou_threshold``, else the best on its
held-out split); ``pooled`` chooses one threshold for all evaluated checkpoints
on their pooled held-out evaluations (:func:`mg_tune.split_eval.pooled_iou_threshold`),
which does not jump between checkpoints when the held-out split is small.
Either way ``<split>_iou_threshold`` records the threshold used.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from mg_tune.data import SPLIT_NAMES
from mg_tune.front import search_pareto
from mg_tune.output import NO_PROGRESS, ProgressBars
from mg_tune.split_eval import CheckpointEvaluator, evaluate_checkpoint, pooled_iou_threshold
from mg_tune.tracking import RetryPolicy, download_checkpoint, epoch_metrics, experiment_name, find_search_run, updating_index_metrics

__all__ = ["IOU_THRESHOLD_MODES", "evaluate_pareto"]

ID_COLUMNS = ["trial_id", "epoch", "run_id", "model_id"]

IOU_THRESHOLD_MODES: dict[str, str] = {
    "checkpoint": "each checkpoint's own, as in training: its fixed iou_threshold, else the best on its held-out split",
    "pooled": "one for all evaluated checkpoints, the best on their pooled held-out evaluations",
}
"""How :func:`evaluate_pareto` chooses the IoU threshold (``mg-tune evaluate --iou-threshold``)."""

TEST_METRICS_HINT = (
    "test metrics were logged at step=epoch on each trial run (the metric history of test_<metric>) "
    "and on the LoggedModel of that epoch; the epoch column says which checkpoint each row is"
)
"""The line ``mg-tune evaluate`` prints after its table: where each row's test metrics are in MLflow."""


def evaluate_pareto(
    tracking_uri: str,
    search_name: str,
    objectives: Sequence[str],
    maximize: Sequence[bool],
    split: str = "test",
    pareto_only: bool = True,
    device: str = "cpu",
    iou_threshold: str = "checkpoint",
    constraints: Sequence[Any] = (),
    progress: ProgressBars = NO_PROGRESS,
) -> pd.DataFrame:
    """Evaluate the Pareto checkpoints (all checkpoints with ``pareto_only=False``) of search ``search_name`` on ``split``.

    Checkpoints whose weights the search's retention policy deleted are
    skipped with a warning (their validation metrics stay in MLflow).

    The front is that of :func:`~mg_tune.front.search_pareto` over
    ``objectives`` and ``constraints`` (no tags are written): pass the search's own
    (:func:`mg_tune.search.logged_spec.search_objectives`) to test the front the search tagged. ``iou_threshold`` is one of
    :data:`IOU_THRESHOLD_MODES`. Results are logged to MLflow as described in
    the module docstring. ``progress`` shows the checkpoints read from MLflow, then
    counts the checkpoints downloaded, evaluated on the held-out split (``pooled``)
    and evaluated on ``split``.

    Returns:
        One row per checkpoint, sorted by trial and epoch: ``trial_id``,
        ``epoch``, ``run_id``, ``model_id``, the validation ``objectives``,
        then ``<split>_<metric>`` for every metric of ``evaluate_checkpoint``.

    Raises:
        ValueError: unknown split, IoU threshold mode, search or objective; a
            search with no checkpoint, or none on the front (nothing to evaluate).
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    if iou_threshold not in IOU_THRESHOLD_MODES:
        modes = "; ".join(f"{mode} ({what})" for mode, what in IOU_THRESHOLD_MODES.items())
        raise ValueError(f"IoU threshold mode {iou_threshold!r} is not one of: {modes}")
    result = search_pareto(tracking_uri, search_name, list(objectives), list(maximize), tag=False, constraints=constraints, progress=progress)
    if result.table.empty:
        raise ValueError(f"search {search_name!r} has no checkpoint yet (no trial finished an epoch): nothing to evaluate")
    checkpoints = result.front if pareto_only else result.table
    if checkpoints.empty:
        why = f" meets the constraints ({'; '.join(result.constraints)}) and" if result.constraints else ""
        raise ValueError(f"no checkpoint of search {search_name!r}{why} has every objective ({', '.join(objectives)}) measured: its front is empty, nothing to evaluate")
    deleted = checkpoints["weights_deleted"].astype(bool)
    if deleted.any():  # the search's retention policy (spec checkpoints.keep) kept their metrics, not their weights
        warnings.warn(f"{int(deleted.sum())} of {len(checkpoints)} checkpoints have no weights (deleted by the search's checkpoints.keep policy); evaluating the other {int((~deleted).sum())}", stacklevel=2)
        checkpoints = checkpoints[~deleted]
    checkpoints = checkpoints.to_dict("records")
    client = MlflowClient(tracking_uri)
    parent = find_search_run(client, client.get_experiment_by_name(experiment_name(search_name)).experiment_id)
    with tempfile.TemporaryDirectory(prefix="mg-tune-eval-") as tmp, updating_index_metrics(tracking_uri, parent) as add_to_index:
        count = f"{len(checkpoints)} checkpoint{'s' if len(checkpoints) != 1 else ''}"
        downloads = progress.track(enumerate(checkpoints), f"downloading {count}", len(checkpoints))
        paths = [str(download_checkpoint(tracking_uri, row["run_id"], int(row["epoch"]), Path(tmp) / f"{i}.pt")) for i, row in downloads]
        threshold = None
        if iou_threshold == "pooled" and paths:
            threshold = pooled_iou_threshold([CheckpointEvaluator(p, device).split("heldout") for p in progress.track(paths, f"evaluating {count} on the held-out split")])
        evaluated = progress.track(list(zip(checkpoints, paths)), f"evaluating {count} on the {split} split")
        rows = [_evaluate_row(client, row, path, list(objectives), split, device, threshold) for row, path in evaluated]
        for row in rows:  # the search's checkpoint index (if complete) gets the same metrics
            add_to_index(row["run_id"], row["epoch"], {k: v for k, v in row.items() if k.startswith(f"{split}_")})
    columns = ID_COLUMNS + list(objectives) + [f"{split}_{o}" for o in objectives]  # a metric the split cannot measure: NaN, shown '-'
    table = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys(columns + [c for row in rows for c in row]))) if rows else pd.DataFrame(columns=columns)
    table = table[columns + sorted(set(table.columns) - set(columns))]
    return table.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def _evaluate_row(
    client: MlflowClient, row: Mapping[str, Any], checkpoint: str, objectives: list[str], split: str, device: str, threshold: float | None
) -> dict[str, Any]:
    """Evaluate and log one downloaded checkpoint (IoU at ``threshold``, or its own when None); its row of the result table."""
    epoch = int(row["epoch"])
    metrics = {f"{split}_{k}": float(v) for k, v in evaluate_checkpoint(checkpoint, split, device, iou_threshold=threshold).items()}
    _log(client, row["run_id"], row["model_id"], epoch, metrics)
    return {**{c: row[c] for c in ID_COLUMNS}, "epoch": epoch, **{o: row[o] for o in objectives}, **metrics}


def _log(client: MlflowClient, run_id: str, model_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
    """Log ``metrics`` on the run at ``step=epoch``, linked to the LoggedModel (NaN: run only, see mg_tune.tracking)."""
    items = epoch_metrics(run_id, model_id, epoch, metrics, int(time.time() * 1000))
    RetryPolicy().call(client.log_batch, run_id, metrics=items)

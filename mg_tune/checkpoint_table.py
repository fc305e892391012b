"""Every (trial, epoch) checkpoint of a search as one table, read from MLflow alone.

:func:`checkpoint_table` reads a search with a bounded number of requests -- the
experiment, the parent run, ``search_runs`` pages (trial params and status) and
either the search's complete checkpoint index (one artifact of the parent run,
written by the driver when the search ended; :mod:`mg_tune.tracking.checkpoint_index`)
or, when there is none (a running, crashed, resumed or older search),
``search_logged_models`` pages (one READY LoggedModel per epoch, with its metrics; see
:mod:`mg_tune.tracking`). Both give the same table: the index holds, per
checkpoint, what the table takes from its LoggedModel (:func:`mg_tune.tracking.checkpoint_record`).
:mod:`mg_tune.front` computes the front of that table;
the search's callbacks, budget and retention read it while a search runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, Run

from mg_tune.output import NO_PROGRESS, Advance, ProgressBars
from mg_tune.tracking import (
    ROLE_TAG,
    TRIAL_TAG,
    checkpoint_record,
    experiment_name,
    find_search_run,
    iter_logged_models,
    iter_runs,
    logged_models_in_slices,
    model_epoch,
    model_metrics,
    read_index,
    redact_uri,
)

ID_COLUMNS = ["run_id", "trial_id", "epoch", "model_id", "status", "checkpoint_uri", "created", "weights_deleted"]


@dataclass
class SearchCheckpoints:
    """What :func:`read_search` read: the trial runs, the parent run and one index row per (run, epoch) checkpoint.

    ``models``: the first READY LoggedModel of each (run, epoch) when they
    were read (no complete index), else empty; ``records``: the index rows
    (:func:`mg_tune.tracking.checkpoint_record`), from the index or from ``models``.
    """

    client: MlflowClient
    experiment_id: str
    parent: Run | None
    runs: dict[str, Run]
    models: dict[tuple[str, int], LoggedModel]
    records: list[dict[str, Any]] = field(default_factory=list)
    from_index: bool = False  # the records came from the search's complete index (``models`` is empty)


SLICES = 4
"""Concurrent time slices of the LoggedModel read from a tracking server (:func:`_logged_models`)."""


def _logged_models(client: MlflowClient, experiment_id: str, runs: Iterable[Run], tracking_uri: str, advance: Advance) -> Iterable[LoggedModel]:
    """The experiment's LoggedModels: paged; from a server (``http(s)://``) in :data:`SLICES` concurrent slices.

    The slices cut at quantiles of the trial runs' start times, which split
    the checkpoints about evenly (a trial's models are created after its
    run starts). Over HTTP the server's work and this process's parsing then
    overlap; a local store gains nothing from threads (the GIL), so it reads
    the plain pages. ``advance(n)`` counts the models of each page read.
    """
    starts = sorted(run.info.start_time for run in runs)
    if not tracking_uri.startswith(("http://", "https://")) or len(starts) < 2 * SLICES:
        return iter_logged_models(client, experiment_id, advance=advance)
    cuts = [starts[len(starts) * k // SLICES] for k in range(1, SLICES)]
    return logged_models_in_slices(client, experiment_id, cuts, workers=SLICES, advance=advance)


def read_search(tracking_uri: str, search_name: str, use_index: bool = True, progress: ProgressBars = NO_PROGRESS) -> SearchCheckpoints:
    """The search's trial runs and checkpoints (ValueError when there is no such search).

    With ``use_index`` (the default) a complete checkpoint index is read
    instead of the LoggedModels when the parent run has one. ``progress``
    shows the LoggedModels read, page by page (their number is not known before).
    """
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(search_name))
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ValueError(f"no search named {search_name!r} in {redact_uri(tracking_uri)}")
    exp_id = experiment.experiment_id
    parent = find_search_run(client, exp_id)
    records = read_index(tracking_uri, parent) if use_index else None
    runs = {r.info.run_id: r for r in iter_runs(client, exp_id, f"tags.`{ROLE_TAG}` = 'trial'")}
    if records is not None:
        return SearchCheckpoints(client, exp_id, parent, runs, {}, [r for r in records if r["run_id"] in runs], from_index=True)
    models: dict[tuple[str, int], LoggedModel] = {}
    with progress.task(f"reading the checkpoints of search {search_name!r} from MLflow") as advance:
        for model in _logged_models(client, exp_id, runs.values(), tracking_uri, advance):
            epoch = model_epoch(model)
            if model.status != LoggedModelStatus.READY or epoch is None or model.source_run_id not in runs:
                continue
            key = (model.source_run_id, epoch)
            old = models.get(key)
            if old is None or model.creation_timestamp < old.creation_timestamp:  # first write wins
                models[key] = model
    records = [checkpoint_record(run_id, epoch, model, model_metrics(model, epoch)) for (run_id, epoch), model in models.items()]
    return SearchCheckpoints(client, exp_id, parent, runs, models, records)


def _numeric(column: pd.Series) -> pd.Series:
    """A param column as numbers when every value parses as one, else unchanged."""
    converted = pd.to_numeric(column, errors="coerce")
    return converted if converted.notna().sum() == column.notna().sum() else column


def search_table(data: SearchCheckpoints) -> pd.DataFrame:
    """The rows of :func:`checkpoint_table` from what :func:`read_search` read."""
    rows = []
    param_keys: set[str] = set()
    metric_keys: set[str] = set()
    for record in data.records:
        run = data.runs[record["run_id"]]
        params = {f"params.{k}": v for k, v in run.data.params.items()}
        metrics = {k: v for k, v in record["metrics"].items() if k != "epoch" and not math.isnan(v)}  # NaN: not logged
        param_keys.update(params)
        metric_keys.update(metrics)
        rows.append(
            {
                "run_id": record["run_id"],
                "trial_id": run.data.tags.get(TRIAL_TAG, run.info.run_name),
                "epoch": record["epoch"],
                "model_id": record["model_id"],
                "status": run.info.status,
                "checkpoint_uri": record["checkpoint_uri"],
                "created": record["created"],
                "weights_deleted": record["weights_deleted"],
                **params,
                **metrics,
            }
        )
    columns = ID_COLUMNS + sorted(param_keys) + sorted(metric_keys)
    table = pd.DataFrame(rows, columns=columns)
    for key in param_keys:
        table[key] = _numeric(table[key])
    for key in metric_keys:
        table[key] = table[key].astype(float)
    table["epoch"] = table["epoch"].astype(int)
    return table.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def checkpoint_table(tracking_uri: str, search_name: str, use_index: bool = True) -> pd.DataFrame:
    """One row per (trial, epoch) checkpoint of search ``search_name``.

    Columns: ``run_id``, ``trial_id``, ``epoch``, ``model_id`` (the epoch's
    LoggedModel), ``status`` (the trial run's status), ``checkpoint_uri``,
    ``created`` (the LoggedModel's creation time, ms since the epoch), ``weights_deleted``
    (True where the search's retention policy deleted the checkpoint's weights, keeping its metrics),
    then ``params.<name>`` for the trial params (numeric where they parse),
    then one float column per metric (NaN where an epoch did not log it or
    logged NaN). Rows are sorted by trial and epoch. Epochs of failed or
    still running trials are included: each is a complete checkpoint.
    Cost: 1 (experiment) + 1 (parent run) + ceil(trials/1000) store requests,
    then, for a search with a complete checkpoint index, its download (two
    HTTP requests through a server), else ceil(checkpoints/1000) requests.

    ``use_index=False`` always reads the LoggedModels (the same table).

    Raises:
        ValueError: no search of that name.
    """
    return search_table(read_search(tracking_uri, search_name, use_index))


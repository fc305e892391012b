"""The Pareto front of a search, computed from MLflow alone.

:func:`checkpoint_table` (:mod:`mg_tune.checkpoint_table`) reads every (trial, epoch)
checkpoint of a search with a bounded number of requests, and :func:`search_pareto` applies :func:`mg_tune.pareto.pareto_front` and
:func:`mg_tune.pareto.normalized_hypervolume` to it, then (``tag=True``)
writes the result back to MLflow: tags on the front's runs and LoggedModels,
the hypervolume and the Pareto report (pairwise plots, 3-D view, hypervolume
over trial-epochs; :func:`report_html`) on the parent run.

Hypervolume
    ``HV = normalized_hypervolume(front, bounds, maximize)``: the fraction of
    the box spanned by ``bounds`` (default ``(0, 1)`` per objective: F1, mAP,
    EPG and IoU are fractions) dominated by the front, in ``[0, 1]``. Fixed
    bounds keep it comparable while a search grows; it is logged on the
    parent run as ``pareto_hypervolume`` with ``step`` = the number of
    (trial, epoch) points with finite objectives.

Hypervolume over trial-epochs
    ``HV_k`` = ``normalized_hypervolume`` of the front of the first ``k``
    feasible checkpoints in the order they were stored (LoggedModel creation
    time, column ``created``), ``k = 1 .. n`` (:func:`hypervolume_curve`):
    non-decreasing in ``k``, the search's convergence curve.
"""

from __future__ import annotations

import html
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, RunTag

from mg_tune.checkpoint_table import ID_COLUMNS, SearchCheckpoints, checkpoint_table, read_search, search_table
from mg_tune.mlflow_links import PARETO_HTML, PARETO_PNG, save_front_view, set_report_description
from mg_tune.output import NO_PROGRESS, ProgressBars
from mg_tune.pareto import Constraint, hypervolume_over_time, normalized_hypervolume, pareto_front
from mg_tune.pareto_plots import hypervolume_figure, pareto_3d_figure, pareto_figure, pareto_png
from mg_tune.tracking import count_requests, iter_logged_models

__all__ = [
    "FrontTags",
    "PARETO_EPOCHS_TAG",
    "PARETO_TAG",
    "ParetoResult",
    "checkpoint_table",
    "count_requests",
    "feasible_rows",
    "hypervolume_curve",
    "mark_pareto",
    "report_figures",
    "report_html",
    "search_pareto",
]

PARETO_TAG = "pareto"
PARETO_EPOCHS_TAG = "pareto_epochs"
OBJECTIVES_TAG = "pareto_objectives"
CONSTRAINTS_TAG = "pareto_constraints"
HYPERVOLUME_METRIC = "pareto_hypervolume"


@dataclass(frozen=True)
class FrontTags:
    """The names a front is written under in MLflow (tags, metric, artifact folder).

    The search's own front (its spec's objectives): ``pareto``, ``pareto_epochs``,
    ``pareto_hypervolume``, ``pareto_objectives``, ``pareto_constraints``, and its report
    (``pareto.html``, ``pareto.png``) at the parent run's artifact root (``plot_dir`` empty).
    A front on other objectives (``mg-tune pareto --objectives``): the same names with
    ``.<objective>-<direction>...`` appended (``pareto.f1-max.epg-max.iou-max``), its report
    in the folder of that name, so it never overwrites, and cannot be mistaken for, the
    search's own.
    """

    pareto: str = PARETO_TAG
    epochs: str = PARETO_EPOCHS_TAG
    hypervolume: str = HYPERVOLUME_METRIC
    objectives: str = OBJECTIVES_TAG
    constraints: str = CONSTRAINTS_TAG
    plot_dir: str = ""

    @classmethod
    def of(cls, objectives: Sequence[str], maximize: Sequence[bool], own: bool) -> "FrontTags":
        """The search's own names (``own``), else the names suffixed with the objectives and their directions."""
        if own:
            return cls()
        suffix = "".join(f".{name}-{'max' if up else 'min'}" for name, up in zip(objectives, maximize))
        return cls(*(name + suffix for name in (PARETO_TAG, PARETO_EPOCHS_TAG, HYPERVOLUME_METRIC, OBJECTIVES_TAG, CONSTRAINTS_TAG, PARETO_TAG)))


@dataclass
class ParetoResult:
    """``table``: every (trial, epoch) with a ``pareto`` bool column; ``front``: its Pareto rows."""

    table: pd.DataFrame
    front: pd.DataFrame
    hypervolume: float
    objectives: list[str]
    maximize: list[bool]
    constraints: list[str] = field(default_factory=list)
    plot_path: Path | None = None
    bounds: list[tuple[float, float]] = field(default_factory=list)
    tags: FrontTags = field(default_factory=FrontTags)



def _front_indices(table: pd.DataFrame, objectives: Sequence[str], maximize: Sequence[bool]) -> list[int]:
    points = table[list(objectives)].to_numpy(dtype=float) if len(table) else np.zeros((0, len(objectives)))
    return pareto_front(points, maximize)


def search_pareto(
    tracking_uri: str,
    search_name: str,
    objectives: list[str],
    maximize: list[bool],
    tag: bool = True,
    bounds: Sequence[tuple[float, float]] | None = None,
    constraints: Sequence[Any] | None = None,
    plot_dir: str | Path | None = None,
    own: bool = True,
    require_checkpoints: bool = False,
    progress: ProgressBars = NO_PROGRESS,
) -> ParetoResult:
    """Pareto-optimal checkpoints of a search over ``objectives``, from MLflow alone.

    ``front`` = the rows of :func:`checkpoint_table` returned by
    :func:`mg_tune.pareto.pareto_front` (a row with a NaN objective is never
    on it; ties are all kept); ``hypervolume`` = normalised hypervolume of
    the front within ``bounds`` (default ``(0, 1)`` per objective).

    ``constraints``: checkpoints must satisfy all of them to be eligible;
    the front is the Pareto front of the eligible rows only. Each is a
    string ``"metric >= value"`` / ``"metric <= value"`` or an object with
    ``metric`` and ``holds(value) -> bool`` (e.g.
    :class:`mg_tune.pareto.Constraint`); a NaN value never holds. The
    table gets a bool column ``feasible``.

    With ``tag=True`` the result is written back (only changes are sent):

    * trial runs with >= 1 front epoch: tags ``pareto=true`` and
      ``pareto_epochs="3,5"``; these tags are removed from other runs;
    * front LoggedModels: tag ``pareto=true`` (removed from the others);
    * parent run: metric ``pareto_hypervolume``, tag
      ``pareto_objectives="f1:max,epg:max,iou:max"`` and
      ``pareto_constraints`` (``"; "``-joined, empty if none), artifacts
      ``pareto.html`` (self-contained plotly) and ``pareto.png`` at its artifact
      root, linked from its description (unless it has one of its own); with
      ``plot_dir`` the two files are also kept there (``plot_path``);
    * experiment: the front's shared runs view (:func:`mg_tune.mlflow_links.save_front_view`).

    ``own``: whether ``objectives`` are the search's own (its spec's). A front on
    other objectives is written under :class:`FrontTags` names of its own
    (``pareto.f1-max.epg-max`` ...), leaving the search's front as it is.

    ``progress`` shows the slow parts: the LoggedModels read page by page and
    the tag writes (one request each).

    Raises:
        ValueError: unknown search, mismatched ``maximize``, an objective
            no checkpoint logged, or (``require_checkpoints``) a search with
            no checkpoint at all, before anything is written.
    """
    data = read_search(tracking_uri, search_name, progress=progress)
    if require_checkpoints and not data.records:
        raise ValueError(f"search {search_name!r} has no checkpoint yet (no trial finished an epoch): no front to compute")
    result = mark_pareto(search_table(data), objectives, maximize, constraints, bounds, search_name)
    result.tags = FrontTags.of(result.objectives, result.maximize, own)
    if tag:
        _write_back(data, result, plot_dir, progress)
    return result


def mark_pareto(
    table: pd.DataFrame,
    objectives: Sequence[str],
    maximize: Sequence[bool],
    constraints: Sequence[Any] | None = None,
    bounds: Sequence[tuple[float, float]] | None = None,
    search_name: str = "",
) -> ParetoResult:
    """The Pareto front of a checkpoint table (all of it, or any subset of its rows).

    What :func:`search_pareto` computes after reading MLflow, on a table of
    the same columns (e.g. a filtered :func:`checkpoint_table`): a copy of
    ``table`` (index reset) with bool columns ``feasible`` and ``pareto``,
    the front rows, and their normalised hypervolume. ``search_name`` only names
    the search in error messages.

    Raises:
        ValueError: mismatched ``maximize``, or an objective or constraint
            metric no row logged.
    """
    objectives, maximize = list(objectives), [bool(m) for m in maximize]
    if not objectives or len(objectives) != len(maximize):
        raise ValueError(f"need one maximize flag per objective, got objectives={objectives} maximize={maximize}")
    bounds = list(bounds) if bounds is not None else [(0.0, 1.0)] * len(objectives)
    table = table.reset_index(drop=True)
    missing = [o for o in objectives if o not in table.columns]
    if missing and len(table):
        known = [c for c in table.columns if c not in ID_COLUMNS and not c.startswith("params.")]
        raise ValueError(f"objective {missing[0]!r} was not logged by search {search_name!r}; its metrics are {known}")
    for name in missing:
        table[name] = pd.Series(dtype=float)
    parsed = [Constraint.parse(c) if isinstance(c, str) else c for c in constraints or []]
    table["feasible"] = feasible_rows(table, parsed, search_name)
    eligible = np.flatnonzero(table["feasible"].to_numpy(dtype=bool))
    index = eligible[_front_indices(table.iloc[eligible], objectives, maximize)].tolist()
    table["pareto"] = False
    table.loc[index, "pareto"] = True
    front = table.iloc[index].reset_index(drop=True)
    hv = normalized_hypervolume(front[objectives].to_numpy(dtype=float).reshape(-1, len(objectives)), bounds, maximize)
    return ParetoResult(table, front, hv, objectives, maximize, [str(c) for c in parsed], bounds=bounds)


def hypervolume_curve(result: ParetoResult) -> pd.DataFrame:
    """``HV_k`` for ``k = 1 .. n`` trial-epochs, in the order the checkpoints were stored.

    ``HV_k = normalized_hypervolume(front_k, result.bounds, result.maximize)``
    where ``front_k`` is the Pareto front of the feasible, finite checkpoints
    among the first ``k`` by ``created`` (:func:`mg_tune.pareto.hypervolume_over_time`).
    Its last value is the front's hypervolume (``pareto_hypervolume``).

    Returns:
        Columns ``trial_epochs`` (k), ``hypervolume``, ``trial_id``, ``epoch``
        (the k-th checkpoint).
    """
    table = result.table.sort_values(["created", "trial_id", "epoch"], kind="stable")
    points = table[result.objectives].to_numpy(dtype=float).reshape(-1, len(result.objectives))
    values = hypervolume_over_time(points, result.bounds, result.maximize, table["feasible"].to_numpy(dtype=bool))
    return pd.DataFrame(
        {"trial_epochs": np.arange(1, len(table) + 1), "hypervolume": values, "trial_id": table["trial_id"].to_numpy(), "epoch": table["epoch"].to_numpy()}
    )


def feasible_rows(table: pd.DataFrame, constraints: Sequence[Any], search_name: str = "") -> np.ndarray:
    """Whether each row meets every constraint (a NaN value never does); ``search_name`` names the search in errors."""
    ok = np.ones(len(table), dtype=bool)
    for constraint in constraints:
        if constraint.metric not in table.columns:
            if len(table):
                raise ValueError(f"constraint on {constraint.metric!r}: that metric was not logged by search {search_name!r}")
            continue
        values = table[constraint.metric].to_numpy(dtype=float)
        ok &= np.array([not math.isnan(v) and bool(constraint.holds(v)) for v in values], dtype=bool)
    return ok


def _tag_writes(data: SearchCheckpoints, result: ParetoResult) -> list[Callable[[], object]]:
    """The requests that make MLflow's front tags those of ``result``: only changes, one request each."""
    client = data.client
    names = result.tags
    writes: list[Callable[[], object]] = []
    front_epochs: dict[str, list[int]] = {}
    for run_id, epoch in zip(result.front["run_id"], result.front["epoch"]):
        front_epochs.setdefault(run_id, []).append(int(epoch))
    for run_id, run in data.runs.items():
        tags = run.data.tags
        if run_id in front_epochs:
            want = ",".join(str(e) for e in sorted(set(front_epochs[run_id])))
            if tags.get(names.pareto) != "true" or tags.get(names.epochs) != want:
                writes.append(partial(client.log_batch, run_id, tags=[RunTag(names.pareto, "true"), RunTag(names.epochs, want)]))
        else:
            writes += [partial(client.delete_tag, run_id, key) for key in (names.pareto, names.epochs) if key in tags]
    front_models = set(result.front["model_id"])
    models = data.models.values() if not data.from_index else iter_logged_models(client, data.experiment_id, f"tags.`{names.pareto}` = 'true'")
    tagged = set()
    for model in models:
        tags = model.tags or {}
        if tags.get(names.pareto) == "true":
            tagged.add(model.model_id)
        if model.model_id not in front_models and names.pareto in tags:
            writes.append(partial(client.delete_logged_model_tag, model.model_id, names.pareto))
    writes += [partial(client.set_logged_model_tags, model_id, {names.pareto: "true"}) for model_id in sorted(front_models - tagged)]
    return writes


def _write_back(data: SearchCheckpoints, result: ParetoResult, plot_dir: str | Path | None, progress: ProgressBars) -> None:
    client = data.client
    names = result.tags
    writes = _tag_writes(data, result)
    with progress.task(f"tagging the front ({len(result.front)} checkpoints) in MLflow", len(writes)) as advance:
        for write in writes:
            write()
            advance(1)
    if data.parent is None:
        return
    parent_id = data.parent.info.run_id
    finite = int(np.isfinite(result.table[result.objectives].to_numpy(dtype=float)).all(axis=1).sum())
    spec = ",".join(f"{o}:{'max' if m else 'min'}" for o, m in zip(result.objectives, result.maximize))
    client.log_batch(
        parent_id,
        metrics=[Metric(names.hypervolume, result.hypervolume, _now_ms(), finite)],
        tags=[RunTag(names.objectives, spec), RunTag(names.constraints, "; ".join(result.constraints))],
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(plot_dir) if plot_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        title = f"Pareto report of search {data.parent.info.run_name!r}"
        (folder / PARETO_HTML).write_text(report_html(result, title), encoding="utf-8")
        png = pareto_png(result.table, result.objectives, result.maximize, folder / PARETO_PNG)
        for name in (PARETO_HTML, PARETO_PNG):  # at the artifact root: the parent run's Artifacts tab shows them first
            client.log_artifact(parent_id, str(folder / name), names.plot_dir or None)
        if plot_dir is not None:
            result.plot_path = png
    if names == FrontTags():  # the search's own front: the parent run's description and the UI's front view show it
        set_report_description(client, data.experiment_id, data.parent)
        save_front_view(client, data.experiment_id, result.objectives, result.maximize)


def _now_ms() -> int:
    return int(time.time() * 1000)


def report_figures(result: ParetoResult) -> list:
    """The report's figures: pairwise plots, the 3-D view (three or more objectives), hypervolume over trial-epochs."""
    figures = [
        pareto_figure(result.table, result.objectives, result.maximize),
        pareto_3d_figure(result.table, result.objectives, result.maximize),
        hypervolume_figure(hypervolume_curve(result)),
    ]
    return [f for f in figures if f is not None]


def report_html(result: ParetoResult, title: str) -> str:
    """One self-contained HTML page (plotly.js inlined once) with :func:`report_figures`: opens offline and from the MLflow UI."""
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0) for i, fig in enumerate(report_figures(result))]
    summary = f"{len(result.table)} checkpoints, {len(result.front)} on the Pareto front, normalised hypervolume {result.hypervolume:.4f}"
    if result.constraints:
        summary += f"; constraints: {'; '.join(result.constraints)}"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f'<body style="font-family: sans-serif"><h2>{html.escape(title)}</h2><p>{html.escape(summary)}</p>\n'
        + "\n".join(parts)
        + "\n</body></html>\n"
    )

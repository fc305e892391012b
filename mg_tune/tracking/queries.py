"""Reading a search back from MLflow in pages: runs, LoggedModels, time slices, filter values, an epoch's metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, Run
from mlflow.store.entities.paged_list import PagedList

__all__ = ["PAGE_SIZE", "iter_logged_models", "iter_runs", "logged_models_in_slices", "model_metrics"]


PAGE_SIZE = 1000
"""Results per page of ``search_runs`` / ``search_logged_models``."""
_FLOAT_MAX = 1.7976931348623157e308  # how SQL stores ±inf


def _pages(fetch: Callable[[str | None], PagedList], advance: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Every item of every page; ``advance(len(page))`` after each page is read (a progress bar)."""
    token: str | None = None
    while True:
        page = fetch(token)
        if advance is not None:
            advance(len(page))
        yield from page
        token = page.token
        if not token:
            return


def iter_runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> Iterator[Run]:
    """All active runs of an experiment matching ``filter_string``, oldest first, in pages of :data:`PAGE_SIZE`."""
    return _pages(
        lambda token: client.search_runs(
            [experiment_id], filter_string, max_results=PAGE_SIZE, order_by=["attributes.start_time ASC"], page_token=token
        )
    )


def iter_logged_models(
    client: MlflowClient, experiment_id: str, filter_string: str | None = None, advance: Callable[[int], None] | None = None
) -> Iterator[LoggedModel]:
    """All LoggedModels of an experiment (with their tags and metrics), oldest first, in pages of :data:`PAGE_SIZE`.

    Ascending creation order keeps offset paging stable while trials keep
    adding models. ``advance(n)`` is called with each page's size as it arrives.
    """
    return _pages(
        lambda token: client.search_logged_models(
            [experiment_id],
            filter_string=filter_string,
            max_results=PAGE_SIZE,
            order_by=[{"field_name": "creation_timestamp", "ascending": True}],
            page_token=token,
        ),
        advance,
    )


def logged_models_in_slices(
    client: MlflowClient, experiment_id: str, boundaries: Sequence[int], workers: int = 4, advance: Callable[[int], None] | None = None
) -> list[LoggedModel]:
    """All LoggedModels of an experiment, read as concurrent time slices (for a tracking server).

    ``boundaries`` (ms, ascending) cut ``creation_timestamp`` into slices
    ``[-∞, b₁), [b₁, b₂), …, [b_k, +∞)``; each slice is paged like
    :func:`iter_logged_models`, and the slices are requested ``workers`` at a
    time, so the server builds one page while this process parses another.
    Requests: one per page of each slice, at most ``len(boundaries) + 1 +
    models / PAGE_SIZE``. Every model is in exactly one slice. ``advance(n)`` is
    called (from the slices' threads) with each page's size as it arrives.
    """
    edges = [None, *sorted(set(boundaries)), None]
    filters = [_time_slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(filters)))) as pool:
        slices = pool.map(lambda f: list(iter_logged_models(client, experiment_id, f, advance)), filters)
        return [model for part in slices for model in part]


def _time_slice(start: int | None, end: int | None) -> str | None:
    """A LoggedModel filter for ``start <= creation_timestamp < end`` (either side open when None)."""
    parts = ([f"creation_timestamp >= {start}"] if start is not None else []) + ([f"creation_timestamp < {end}"] if end is not None else [])
    return " AND ".join(parts) or None


def _quote(value: str) -> str:
    """A value for an MLflow filter string (single-quoted; quotes are not allowed in ids)."""
    if "'" in value or "\\" in value:
        raise ValueError(f"identifier {value!r} may not contain quotes or backslashes")
    return f"'{value}'"


def _prefer(a: LoggedModel | None, b: LoggedModel) -> LoggedModel:
    """Of two models of the same epoch keep the READY one, else the older one."""
    if a is None:
        return b
    a_ready, b_ready = a.status == LoggedModelStatus.READY, b.status == LoggedModelStatus.READY
    if a_ready != b_ready:
        return a if a_ready else b
    return a if a.creation_timestamp <= b.creation_timestamp else b


def _value(value: float) -> float:
    return math.copysign(math.inf, value) if abs(value) >= _FLOAT_MAX else value


def model_metrics(model: LoggedModel, epoch: int) -> dict[str, float]:
    """Metrics linked to ``model`` at ``step=epoch`` (latest timestamp wins; ±inf as SQL stored them restored)."""
    latest: dict[str, tuple[int, float]] = {}
    for metric in model.metrics or []:
        if metric.step == epoch and (metric.key not in latest or metric.timestamp >= latest[metric.key][0]):
            latest[metric.key] = (metric.timestamp, _value(metric.value))
    return {k: v for k, (_, v) in latest.items()}

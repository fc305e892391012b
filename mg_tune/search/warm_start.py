"""The points a search evaluates first: the paper's grid, or the Pareto front of an earlier search.

``warm_start: paper_grid`` (and ``sampler: grid``) enqueue
:func:`mg_tune.search.sampling.warm_start_points`. ``warm_start: <search>``
enqueues the hyperparameters of that search's Pareto front, read from MLflow
alone (:func:`mg_tune.front.search_pareto`, nothing written back)
under *this* spec's objectives, directions and constraints:

* every front checkpoint gives its trial's params, in the front's order
  (trial id, epoch); identical points (several front epochs of one trial)
  are enqueued once, and at most ``trials`` of them;
* only the parameters this spec searches (``space``) are kept: the others
  are fixed by this spec, or absent from the earlier search and sampled;
* a value outside this spec's space -- a choice not listed, a number outside
  its range or not an integer for ``int``, a λ outside its loss's range --
  is dropped, so the sampler draws that parameter; so is a λ whose trial
  searched another loss than the point's (λ's scale is per loss); one warning
  line names what was dropped or left out.

The points reach Ray Tune's OptunaSearch as ``points_to_evaluate`` in
Optuna's parameter names (:func:`mg_tune.search.sampling.optuna_params`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from mg_tune.front import search_pareto
from mg_tune.search.sampling import optuna_params, warm_start_points
from mg_tune.search.spec import Distribution, SearchSpec

__all__ = ["front_points", "initial_points"]

logger = logging.getLogger(__name__)

_SHOWN = 3
"""Dropped values named in the warning line."""


def initial_points(spec: SearchSpec, tracking_uri: str) -> list[dict[str, Any]]:
    """The points to evaluate first, in Optuna's parameter names: the paper grid, the front of ``warm_start``'s search, or none.

    Raises:
        ValueError: one line, for a ``warm_start`` search that cannot be used (see :func:`front_points`).
    """
    if spec.warm_start_search is None:
        return warm_start_points(spec)
    return [optuna_params(p, spec) for p in front_points(spec, tracking_uri)]


def front_points(spec: SearchSpec, tracking_uri: str) -> list[dict[str, Any]]:
    """The params (TrainConfig names, within ``spec.space``) of the front of search ``spec.warm_start``; see the module docstring.

    Raises:
        ValueError: ``warm_start: ...`` naming the search itself, an unknown
            search, or an objective or constraint metric it never logged.
    """
    name = spec.warm_start_search
    if name == spec.name:
        raise ValueError(f"warm_start: {name!r} is this search itself; name an earlier search")
    try:
        result = search_pareto(
            tracking_uri, name, spec.metric_names, [m == "max" for m in spec.modes], tag=False, constraints=spec.parsed_constraints
        )
    except ValueError as exc:
        raise ValueError(f"warm_start: {exc}") from None
    points: list[dict[str, Any]] = []
    dropped: list[str] = []
    for row in result.front.to_dict("records"):
        point = _in_space(spec, row, dropped)
        if point and point not in points:
            points.append(point)
    notes = []
    if dropped:
        named = ", ".join(dropped[:_SHOWN]) + (", …" if len(dropped) > _SHOWN else "")
        notes.append(f"dropped {len(dropped)} value(s) outside this spec's space, the sampler draws them: {named}")
    if len(points) > spec.trials:
        notes.append(f"enqueued the first {spec.trials} of {len(points)} front points (trials={spec.trials})")
    if not points:
        notes.append("no front point to enqueue")
    if notes:
        logger.warning(f"warm_start {name!r}: {'; '.join(notes)}")
    return points[: spec.trials]


def _in_space(spec: SearchSpec, row: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """The front row's params that ``spec.space`` holds, λ last (its range depends on the loss); values outside go to ``dropped``."""
    point: dict[str, Any] = {}
    for name in sorted(spec.space, key=lambda n: n == "lam"):
        raw = _param(row, name)
        if raw is None:
            continue
        if name == "lam":
            loss, searched_with = point.get("loss", spec.losses()[0]), _param(row, "loss")
            value = _number(raw, spec.lambda_range(loss)) if searched_with in (None, loss) else None
        else:
            value = _value(spec.space[name], raw)
        if value is None:
            dropped.append(f"{name}={raw!r} (trial {row['trial_id']})")
        else:
            point[name] = value
    return point


def _param(row: dict[str, Any], name: str) -> Any:
    """The row's ``params.<name>``, or None where its trial did not log it."""
    raw = row.get(f"params.{name}")
    return None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else raw


def _value(dist: Distribution, raw: Any) -> Any:
    """``raw`` (an MLflow param: a string, or a number where the column parsed) as a value of ``dist``, or None if it lies outside."""
    if dist.kind == "choice":
        return next((c for c in dist.choice if c == raw or str(c) == str(raw)), None)
    value = _number(raw, getattr(dist, dist.kind))
    if dist.kind == "int":
        return int(value) if value is not None and value == int(value) else None
    return value


def _number(raw: Any, bounds: tuple[float, float]) -> float | None:
    """``float(raw)`` if it parses and lies in ``[low, high]``, else None."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if bounds[0] <= value <= bounds[1] else None

"""Pareto dominance, non-dominated sorting and hypervolume for multi-objective search.

Pure numerical helpers (NumPy + ``moocore``); nothing here talks to MLflow.

Conventions
-----------
``points`` is an ``[n, m]`` array: one row per trial, one column per objective.
``maximize`` holds one bool per objective. Internally every objective is
*oriented* so that larger is better: ``o_j(x) = x_j`` if objective ``j`` is
maximised, ``o_j(x) = -x_j`` if it is minimised.

Dominance
    Row ``a`` dominates row ``b`` (``a ≻ b``) iff ``o_j(a) >= o_j(b)`` for every
    ``j`` and ``o_j(a) > o_j(b)`` for at least one ``j``. Equal rows do not
    dominate each other, so duplicates and ties of a front row are all kept.

Pareto front
    The rows that no other row dominates.

Non-dominated sorting
    Rank 0 is the Pareto front of all rows; rank ``r`` is the Pareto front of
    the rows left after removing ranks ``0 .. r-1`` (NSGA-II, Deb et al. 2002).

Hypervolume
    For a reference point ``ref``, the hypervolume of a set ``P`` is the
    Lebesgue measure of the region it dominates and that dominates ``ref``::

        HV(P, ref) = λ_m( ⋃_{p ∈ P} { z : o(ref) <= o(z) <= o(p) } )

    A row that does not strictly dominate ``ref`` in every objective spans a
    box of zero volume and contributes nothing. Larger is better.

Missing values
    A row containing NaN (a failed or unfinished trial) is never on the front,
    adds no hypervolume, and is ranked after every finite row.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import moocore
import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Constraint",
    "Objectives",
    "crowding_distance",
    "hypervolume",
    "hypervolume_over_time",
    "non_dominated_sort",
    "normalized_hypervolume",
    "pareto_front",
]


def _as_points(points: ArrayLike, n_objectives: int) -> np.ndarray:
    """Return ``points`` as a float ``[n, n_objectives]`` array (empty input → ``[0, m]``)."""
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, n_objectives)
    if arr.ndim != 2 or arr.shape[1] != n_objectives:
        raise ValueError(f"points must have shape [n, {n_objectives}], got {arr.shape}")
    return arr


def _as_maximize(maximize: Sequence[bool]) -> np.ndarray:
    """Return ``maximize`` as a 1-D bool array with at least one objective."""
    flags = np.asarray(maximize, dtype=bool)
    if flags.ndim != 1 or flags.size == 0:
        raise ValueError("maximize must be a non-empty sequence of bools, one per objective")
    return flags


def _finite_rows(points: np.ndarray) -> np.ndarray:
    """Boolean mask of rows that contain no NaN."""
    return ~np.isnan(points).any(axis=1)


def pareto_front(points: ArrayLike, maximize: Sequence[bool]) -> list[int]:
    """Indices (ascending) of the non-dominated rows of ``points``.

    Row ``i`` is kept iff no row ``k`` has ``o(k) >= o(i)`` everywhere and
    ``o(k) > o(i)`` somewhere (see the module docstring), so duplicates and
    ties of front rows are all kept. Rows with NaN are never on the front.
    Empty input gives ``[]``.
    """
    flags = _as_maximize(maximize)
    pts = _as_points(points, flags.size)
    finite = np.flatnonzero(_finite_rows(pts))
    if finite.size == 0:
        return []
    keep = moocore.is_nondominated(pts[finite], maximise=flags, keep_weakly=True)
    return finite[keep].tolist()


def hypervolume(points: ArrayLike, ref: ArrayLike, maximize: Sequence[bool]) -> float:
    """Hypervolume of ``points`` with respect to the reference point ``ref``.

    ``HV = λ_m(⋃_p {z : o(ref) <= o(z) <= o(p)})``: the volume of the union
    of the boxes spanned by ``ref`` and each row, in the original units.
    Rows that do not strictly dominate ``ref`` and NaN rows contribute 0;
    empty input gives 0.0.
    """
    flags = _as_maximize(maximize)
    pts = _as_points(points, flags.size)
    ref_arr = np.asarray(ref, dtype=float)
    if ref_arr.shape != (flags.size,):
        raise ValueError(f"ref must have shape ({flags.size},), got {ref_arr.shape}")
    pts = pts[_finite_rows(pts)]
    if pts.shape[0] == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref_arr, maximise=flags))


def normalized_hypervolume(
    points: ArrayLike,
    bounds: Sequence[tuple[float, float]],
    maximize: Sequence[bool],
) -> float:
    """Hypervolume in the unit cube spanned by fixed per-objective bounds; lies in ``[0, 1]``.

    With ``bounds[j] = (low_j, high_j)``, each objective is mapped to a
    "larger is better" score in ``[0, 1]``::

        s_j = (x_j - low_j) / (high_j - low_j)    if objective j is maximised
        s_j = (high_j - x_j) / (high_j - low_j)   if objective j is minimised

    clipped to ``[0, 1]``, and the hypervolume is taken with reference point
    ``s = 0`` (the worst corner of the box). The result is the fraction of
    the box dominated by the set: 0 when nothing beats the worst corner, 1
    when a row reaches the best corner. Because the bounds are fixed rather
    than taken from the data, the value is comparable across iterations and
    never decreases as trials are added, which makes it a convergence
    measure for a search.
    """
    flags = _as_maximize(maximize)
    pts = _as_points(points, flags.size)
    lim = np.asarray(bounds, dtype=float)
    if lim.shape != (flags.size, 2):
        raise ValueError(f"bounds must be {flags.size} (low, high) pairs, got shape {lim.shape}")
    low, high = lim[:, 0], lim[:, 1]
    if not np.all(high > low):
        raise ValueError("each bound needs low < high")
    scores = np.where(flags, pts - low, high - pts) / (high - low)
    scores = np.clip(scores, 0.0, 1.0)  # NaN passes through and is dropped below
    return hypervolume(scores, np.zeros(flags.size), [True] * flags.size)


def hypervolume_over_time(
    points: ArrayLike,
    bounds: Sequence[tuple[float, float]],
    maximize: Sequence[bool],
    feasible: Sequence[bool] | None = None,
) -> np.ndarray:
    """``HV_k`` for ``k = 1 .. n``: the normalised hypervolume of the first ``k`` rows, in row order.

    ``HV_k = normalized_hypervolume(front_k, bounds, maximize)`` where
    ``front_k`` is the Pareto front of the rows among the first ``k`` that
    are ``feasible`` (default: all) and finite. The front is updated
    incrementally (``front_k = pareto_front(front_{k-1} ∪ {x_k})``), and HV
    recomputed only when ``x_k`` joins it, so ``HV_k`` never decreases; with
    rows in the order a search stored them it is the search's convergence
    curve (:func:`mg_tune.front.hypervolume_curve`, the driver's
    :class:`mg_tune.search.callbacks.HypervolumeTracker`).
    """
    flags = _as_maximize(maximize)
    pts = _as_points(points, flags.size)
    ok = np.ones(len(pts), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    front = np.zeros((0, flags.size))
    hv, values = 0.0, np.zeros(len(pts))
    for k, (point, eligible) in enumerate(zip(pts, ok)):
        if eligible and np.isfinite(point).all():
            candidate = np.vstack([front, point])
            keep = pareto_front(candidate, flags.tolist())
            if len(front) in keep:
                front = candidate[keep]
                hv = normalized_hypervolume(front, bounds, flags.tolist())
        values[k] = hv
    return values


def non_dominated_sort(points: ArrayLike, maximize: Sequence[bool]) -> list[int]:
    """Front rank of every row: 0 = Pareto front, 1 = front once rank 0 is removed, ...

    Duplicate rows share a rank. Rows with NaN get the rank one past the
    worst finite front (0 if every row has NaN). Empty input gives ``[]``.
    """
    flags = _as_maximize(maximize)
    pts = _as_points(points, flags.size)
    finite = _finite_rows(pts)
    ranks = np.zeros(pts.shape[0], dtype=int)
    if finite.any():
        ranks[finite] = moocore.pareto_rank(pts[finite], maximise=flags)
        ranks[~finite] = ranks[finite].max() + 1
    return ranks.tolist()


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance of each row within one front.

    For each objective ``j`` the rows are sorted by ``x_j``; the two extreme
    rows get ``inf`` and an interior row at sorted position ``k`` gets::

        (x_j[k+1] - x_j[k-1]) / (max_j - min_j)

    (0 when the objective is constant). The distance is the sum over
    objectives; larger means a less crowded row. Orientation does not matter
    (the formula is symmetric), so there is no ``maximize`` argument. Fronts
    with at most two rows are all ``inf``. ``points`` must be finite.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise ValueError(f"points must have shape [n, m], got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("crowding_distance needs finite points")
    n = pts.shape[0]
    distance = np.zeros(n)
    if n <= 2:
        distance[:] = np.inf
        return distance
    order = np.argsort(pts, axis=0, kind="stable")
    for j in range(pts.shape[1]):
        sorted_j = pts[order[:, j], j]
        span = sorted_j[-1] - sorted_j[0]
        if span > 0:
            distance[order[1:-1, j]] += (sorted_j[2:] - sorted_j[:-2]) / span
        distance[order[[0, -1], j]] = np.inf
    return distance


@dataclass(frozen=True)
class Constraint:
    """A bound a point must meet to be eligible for the front: ``metric >= value`` or ``metric <= value``."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        """Parse ``"f1 >= 0.6"`` / ``"iou <= 0.9"``; ValueError on anything else."""
        for op in (">=", "<="):
            if op in text:
                metric, value = (part.strip() for part in text.split(op, 1))
                try:
                    return cls(metric, op, float(value))
                except ValueError:
                    break
        raise ValueError(f"constraint {text!r} must look like 'metric >= value' or 'metric <= value'")

    def holds(self, value: float) -> bool:
        """True when ``value`` meets the bound (a NaN never does)."""
        return value >= self.value if self.op == ">=" else value <= self.value

    def violation(self, value: float | None) -> float:
        """How far ``value`` misses the bound, in Optuna's convention (feasible iff ``v <= 0``)::

            m >= b:  v = b - m        m <= b:  v = m - b

        so ``v <= 0`` exactly when :meth:`holds`; a missing (``None``) or NaN value violates by ``+inf``.
        """
        if value is None or math.isnan(value):
            return math.inf
        return self.value - value if self.op == ">=" else value - self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Objectives:
    """What a front is computed on: objective metrics, their directions, the constraints a point must meet.

    Built once (from a search's spec, :func:`mg_tune.search.logged_spec.search_objectives`,
    or from ``--objectives`` with :meth:`parse`) and passed along. ``label`` is the
    ``"f1:max,epg:max"`` form that tags and messages use.
    """

    names: tuple[str, ...]
    maximize: tuple[bool, ...]
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Objectives":
        """``"f1,epg,train_loss:min"``: comma-separated metrics, each ``name`` (maximised), ``name:max`` or ``name:min``.

        Raises:
            ValueError: one line naming the item at fault (empty, a direction other than max/min, a repeated metric).
        """
        names, maximize = [], []
        for item in (part.strip() for part in text.split(",")):
            name, _, direction = (p.strip() for p in item.partition(":"))
            if not name or direction not in ("", "max", "min"):
                raise ValueError(f"--objectives {text!r}: {item!r} must be a metric name, optionally with :max or :min (e.g. f1,epg:max,train_loss:min)")
            if name in names:
                raise ValueError(f"--objectives {text!r}: {name!r} is given twice")
            names.append(name)
            maximize.append(direction != "min")
        return cls(tuple(names), tuple(maximize))

    @property
    def label(self) -> str:
        """``"f1:max,epg:max,iou:max"``."""
        return ",".join(f"{name}:{'max' if up else 'min'}" for name, up in zip(self.names, self.maximize))

    def describe(self) -> str:
        """``"f1 (max), epg (max)"``, then ``"; constraints: f1 >= 0.5"`` when there are any: the line saying what a front is on."""
        text = ", ".join(f"{name} ({'max' if up else 'min'})" for name, up in zip(self.names, self.maximize))
        return text + (f"; constraints: {'; '.join(str(c) for c in self.constraints)}" if self.constraints else "")

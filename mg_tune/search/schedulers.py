"""Multi-objective early stopping for Ray Tune: MO-ASHA.

Ray Tune's ASHA, HyperBand and PBT rank trials by one metric, so a search
over F1 / EPG / IoU cannot stop its bad trials early with them.
:class:`MOASHAScheduler` is asynchronous successive halving (ASHA; Li et al.
2020) whose promotion rule ranks trials by non-dominated sorting instead of
one metric, as in MO-ASHA (Schmucker et al. 2021, "Multi-objective
multi-fidelity hyperparameter optimization with application to fairness";
Syne Tune's ``MOASHA`` with ``NonDominatedPriority``).

Rule
----
Rungs sit at ``r_k = grace_period · η^k`` for ``k = 0, 1, ...`` with
``r_k < max_t`` (``η`` = ``reduction_factor``). When a trial first reports
``time_attr >= r_k`` for a rung it has not reached before, its objective
vector ``y`` is recorded at that rung, and with ``Y`` the ``n`` vectors
recorded there so far (``y`` included)::

    key(v)  = (front(v), -crowding(v))          front: non-dominated sort of Y (0 = Pareto front)
                                                crowding: NSGA-II crowding distance within v's front
    better  = #{v in Y \\ {y} : key(v) < key(y)} (lexicographic, strict)
    CONTINUE  iff  better < max(1, ⌈n / η⌉)      else STOP

i.e. the trial continues iff it is among the top ``⌈n/η⌉`` of its rung (ties
resolved in its favour, so equal keys never stop a trial). Objectives with
``mode="min"`` are oriented by :func:`mg_tune.pareto.non_dominated_sort`;
crowding distance is orientation-free. A vector with a NaN is ranked after
every finite one (crowding 0). Results between rungs, at or past ``max_t``,
and results without the objectives continue: a trial ends by itself after
its epochs, so its last epoch is never cut short.

Differences from Syne Tune's MOASHA: one bracket; the quota is
``⌈n/η⌉`` (Syne Tune continues iff ``better / n <= 1/η``, which promotes
one more trial at some ``n``); ties within a front are broken by crowding
distance, so a front's extreme points are promoted first.

Notes: the rungs live in the driver and are not restored by ``--resume``
(they refill from new results). A trial this scheduler stops is reported to
the searcher (OptunaSearch) as complete with its last values, as Ray does
for ASHA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from mg_tune.pareto import crowding_distance, non_dominated_sort

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = ["MOASHAScheduler", "promote"]


def promote(points: Sequence[Sequence[float]], maximize: Sequence[bool], reduction_factor: float) -> bool:
    """Whether the *last* row of ``points`` (the rung's vectors, newest last) continues; the rule above."""
    pts = np.asarray(points, dtype=float)
    n = pts.shape[0]
    ranks = np.asarray(non_dominated_sort(pts, maximize))
    crowd = np.zeros(n)
    finite = ~np.isnan(pts).any(axis=1)
    for rank in np.unique(ranks[finite]):
        members = np.flatnonzero((ranks == rank) & finite)
        crowd[members] = crowding_distance(pts[members])
    mine = (ranks[-1], -crowd[-1])
    better = sum(bool((ranks[i], -crowd[i]) < mine) for i in range(n - 1))
    return bool(better < max(1, math.ceil(n / reduction_factor)))


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA: asynchronous successive halving with non-dominated-sorting promotion.

    Args:
        metrics: the objectives, as reported by the trials.
        modes: ``"max"`` or ``"min"`` per objective.
        time_attr: the reported progress counter (mg-tune trials report ``epoch``).
        grace_period: first rung; no trial is stopped before it.
        reduction_factor: η; about ``1/η`` of the trials reaching a rung pass it.
        max_t: the length of a full trial; rungs lie strictly below it.
    """

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        time_attr: str = "epoch",
        grace_period: int = 1,
        reduction_factor: float = 3,
        max_t: int = 100,
    ) -> None:
        if not metrics or len(metrics) != len(modes) or any(m not in ("max", "min") for m in modes):
            raise ValueError(f"need one mode ('max' or 'min') per metric, got metrics={list(metrics)} modes={list(modes)}")
        if not 0 < grace_period < max_t:
            raise ValueError(f"need 0 < grace_period < max_t, got grace_period={grace_period} max_t={max_t}")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        super().__init__()
        self.metrics = list(metrics)
        self.maximize = [m == "max" for m in modes]
        self.time_attr = time_attr
        self.reduction_factor = reduction_factor
        self.max_t = max_t
        self.rungs: dict[float, dict[str, list[float]]] = {}
        milestone = grace_period
        while milestone < max_t:
            self.rungs[milestone] = {}
            milestone *= reduction_factor
        self.num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """The objectives come from the constructor; a single ``TuneConfig(metric=...)`` is refused."""
        return metric is None and mode is None and super().set_search_properties(None, None, **spec)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if self.time_attr not in result or any(m not in result for m in self.metrics):
            return TrialScheduler.CONTINUE
        t = result[self.time_attr]
        for milestone in sorted(self.rungs, reverse=True):
            recorded = self.rungs[milestone]
            if t < milestone or trial.trial_id in recorded:
                continue
            recorded[trial.trial_id] = [float(result[m]) for m in self.metrics]
            if promote(list(recorded.values()), self.maximize, self.reduction_factor):
                return TrialScheduler.CONTINUE
            self.num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m:g}: {len(r)}" for m, r in sorted(self.rungs.items()))
        return f"Using MO-ASHA: num_stopped={self.num_stopped}; trials per rung {{{rungs}}}"

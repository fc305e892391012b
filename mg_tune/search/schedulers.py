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

Promotion (``type="promotion"``; ASHA's Algorithm 2, Syne Tune's
``type="promotion"``): instead of deciding once, at arrival, a trial that
reaches a rung *pauses* there unless it is already among the top
``⌊n/η⌋`` of that rung (no ``max(1, ·)``: the first trials at a rung wait
for peers instead of being waved through). Whenever Ray has room for a
trial (:meth:`MOASHAScheduler.choose_trial_to_run`), the paused trial that
is now among the top ``⌊n/η⌋`` of its rung (highest rung first, best key
first) and was not promoted from it before is resumed; it continues from
its newest epoch in MLflow (mg-tune trials always do:
:func:`mg_tune.search.runner.run_trial`), so pausing costs no training. New
trials start while paused ones wait: the searcher's concurrency limit counts
running trials only (:class:`RunningTrialsLimiter`, told through Ray's
``on_pause`` / ``on_unpause``, as Ray's BOHB does). When nothing runs or
waits to start and the searcher has no more trials, the trials still paused
are ended: their runs end FINISHED with ``mg_tune.stopped_early`` and the
searcher is told their last values, exactly as for a stopped trial. If
nothing runs but the searcher is not finished (a limiter restored by
``--resume`` still counting paused trials), the best paused trial is
resumed, so a search never waits on itself.

Why promotion: with ``stopping`` the first trials to reach a rung are
judged against nearly empty rungs and go on (``max(1, ⌈n/η⌉)`` is 1 for
``n ≤ η``), so in a small search the trial-epochs saved are those of the
late trials only; promotion judges every trial against ``η`` peers at least
before it trains further.

Notes: the rungs live in the driver and are not restored by ``--resume``
(they refill from new results). A trial this scheduler stops is reported to
the searcher (OptunaSearch) as complete with its last values, as Ray does
for ASHA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from mg_tune.pareto import crowding_distance, non_dominated_sort

__all__ = ["MOASHAScheduler", "RunningTrialsLimiter", "promote"]

TYPES = ("stopping", "promotion")


def better_counts(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> np.ndarray:
    """For each row of ``points``, how many rows have a strictly better key ``(front, -crowding)`` (the rule above)."""
    pts = np.asarray(points, dtype=float)
    ranks = np.asarray(non_dominated_sort(pts, maximize))
    crowd = np.zeros(pts.shape[0])
    finite = ~np.isnan(pts).any(axis=1)
    for rank in np.unique(ranks[finite]):
        members = np.flatnonzero((ranks == rank) & finite)
        crowd[members] = crowding_distance(pts[members])
    keys = list(zip(ranks, -crowd))
    return np.array([sum(other < mine for other in keys) for mine in keys], dtype=int)


def promote(points: Sequence[Sequence[float]], maximize: Sequence[bool], reduction_factor: float) -> bool:
    """Whether the *last* row of ``points`` (the rung's vectors, newest last) continues; the stopping rule above."""
    n = len(points)
    return bool(better_counts(points, maximize)[-1] < max(1, math.ceil(n / reduction_factor)))


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA: asynchronous successive halving with non-dominated-sorting promotion.

    Args:
        metrics: the objectives, as reported by the trials.
        modes: ``"max"`` or ``"min"`` per objective.
        time_attr: the reported progress counter (mg-tune trials report ``epoch``).
        grace_period: first rung; no trial is stopped before it.
        reduction_factor: η; about ``1/η`` of the trials reaching a rung pass it.
        max_t: the length of a full trial; rungs lie strictly below it.
        type: ``"stopping"`` (decide at arrival, stop) or ``"promotion"`` (pause, resume the best later).
    """

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        time_attr: str = "epoch",
        grace_period: int = 1,
        reduction_factor: float = 3,
        max_t: int = 100,
        type: str = "stopping",
    ) -> None:
        if not metrics or len(metrics) != len(modes) or any(m not in ("max", "min") for m in modes):
            raise ValueError(f"need one mode ('max' or 'min') per metric, got metrics={list(metrics)} modes={list(modes)}")
        if not 0 < grace_period < max_t:
            raise ValueError(f"need 0 < grace_period < max_t, got grace_period={grace_period} max_t={max_t}")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        if type not in TYPES:
            raise ValueError(f"type must be one of {', '.join(TYPES)}, got {type!r}")
        super().__init__()
        self.metrics = list(metrics)
        self.maximize = [m == "max" for m in modes]
        self.time_attr = time_attr
        self.reduction_factor = reduction_factor
        self.max_t = max_t
        self.type = type
        self.rungs: dict[float, dict[str, list[float]]] = {}
        milestone = grace_period
        while milestone < max_t:
            self.rungs[milestone] = {}
            milestone *= reduction_factor
        self.promoted: dict[float, set[str]] = {m: set() for m in self.rungs}
        self.paused: dict[str, float] = {}  # trial id -> the rung it waits at (promotion)
        self._ranking: dict[float, tuple[int, np.ndarray]] = {}  # rung -> (its size, better_counts): Ray asks every step
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
            if self.type == "stopping":
                if promote(list(recorded.values()), self.maximize, self.reduction_factor):
                    return TrialScheduler.CONTINUE
                self.num_stopped += 1
                return TrialScheduler.STOP
            if trial.trial_id in self._promotable(milestone):
                self.promoted[milestone].add(trial.trial_id)
                return TrialScheduler.CONTINUE
            self.paused[trial.trial_id] = milestone
            tune_controller.search_alg.searcher.on_pause(trial.trial_id)
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def _better(self, milestone: float) -> np.ndarray:
        """:func:`better_counts` of ``milestone``'s rung, recomputed only when the rung has grown."""
        recorded = self.rungs[milestone]
        size, better = self._ranking.get(milestone, (-1, None))
        if size != len(recorded):
            better = better_counts(list(recorded.values()), self.maximize) if recorded else np.zeros(0, dtype=int)
            self._ranking[milestone] = (len(recorded), better)
        return better

    def _promotable(self, milestone: float) -> list[str]:
        """Trials of ``milestone``'s rung among its top ``⌊n/η⌋`` and not promoted from it yet, best first."""
        ids = list(self.rungs[milestone])
        better = self._better(milestone)
        quota = math.floor(len(ids) / self.reduction_factor)
        order = sorted(range(len(ids)), key=lambda i: better[i])
        return [ids[i] for i in order if better[i] < quota and ids[i] not in self.promoted[milestone]]

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """Promotion: a paused trial that earned its promotion first, then pending ones (Ray's FIFO); ends the search's pause."""
        if self.type == "stopping" or not self.paused:
            return super().choose_trial_to_run(tune_controller)
        trials = {t.trial_id: t for t in tune_controller.get_trials()}
        for milestone in sorted(self.rungs, reverse=True):
            waiting = [tid for tid in self._promotable(milestone) if self.paused.get(tid) == milestone]
            if waiting:
                return self._resume(tune_controller, trials[waiting[0]])
        pending = next((t for t in trials.values() if t.status == Trial.PENDING), None)
        if pending is not None or any(t.status == Trial.RUNNING for t in trials.values()):
            return pending
        if tune_controller.search_alg.is_finished():
            for tid in list(self.paused):
                del self.paused[tid]
                self.num_stopped += 1
                tune_controller.stop_trial(trials[tid])
            return None
        best_rung = max(self.paused.values())  # nothing runs, but the searcher waits: never deadlock
        waiting = [(better, tid) for tid, better in zip(self.rungs[best_rung], self._better(best_rung)) if self.paused.get(tid) == best_rung]
        return self._resume(tune_controller, trials[min(waiting, key=lambda w: w[0])[1]])  # ties: the first recorded

    def _resume(self, tune_controller: Any, trial: Trial) -> Trial:
        milestone = self.paused.pop(trial.trial_id)
        self.promoted[milestone].add(trial.trial_id)
        tune_controller.search_alg.searcher.on_unpause(trial.trial_id)
        return trial

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.paused.pop(trial.trial_id, None)
        super().on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m:g}: {len(r)}" for m, r in sorted(self.rungs.items()))
        waiting = f", paused {len(self.paused)}" if self.type == "promotion" else ""
        return f"Using MO-ASHA ({self.type}): num_stopped={self.num_stopped}{waiting}; trials per rung {{{rungs}}}"


class RunningTrialsLimiter(ConcurrencyLimiter):
    """Ray's ``ConcurrencyLimiter`` whose limit counts running trials only.

    A trial that a promotion scheduler pauses (``on_pause``) frees its slot, so
    the searcher proposes a new trial in its place, until it resumes
    (``on_unpause``). Without pauses it is Ray's limiter.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False) -> None:
        super().__init__(searcher, max_concurrent, batch)
        self.paused: set[str] = set()

    def suggest(self, trial_id: str) -> dict | None:
        if not self._limit_concurrency:  # the searcher limits itself
            return self.searcher.suggest(trial_id)
        if len(self.live_trials - self.paused) >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.paused.discard(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str) -> None:
        self.paused.add(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.paused.discard(trial_id)

"""A graceful stop of a running search: ``mg-tune jobs stop``, ``ray job stop`` or ``kill -TERM``.

Ray's job server stops a job by sending SIGTERM to its driver, then SIGKILL after
``RAY_JOB_STOP_WAIT_TIME_S`` seconds (``mg-tune submit`` sets it: :data:`mg_tune.jobs.client.STOP_GRACE_S`).
Inside :func:`stop_on_sigterm` the search driver turns SIGTERM into Ray Tune's own interrupt
(what Ctrl+C does): Tune stops the running trials, saves the experiment state with every
trial's newest checkpoint and ``fit`` returns. The runner then marks the stopped trials'
MLflow runs KILLED with :data:`STOP_REASON` and tells their Optuna trials FAIL (with a
``study_storage``, where the study is visible). ``--resume`` continues every stopped trial
from its newest checkpoint; :class:`ResumableOptunaSearch` records its result as a new Optuna
trial with the same parameters, the way Optuna's ``RetryFailedTrialCallback`` records a
retried trial (system attributes ``failed_trial`` and ``retry_history``). It is mg-tune's
OptunaSearch: it also sets the spec's constraint values on every completed trial.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from mg_tune.pareto import Constraint

STOP_REASON = "the search was stopped (SIGTERM: mg-tune jobs stop); mg-tune submit --resume continues it from this checkpoint"
"""Failure reason (tag ``mg_tune.failure_reason``) of a trial's run that a stop ended KILLED."""


@dataclass
class StopRequest:
    requested: bool = False


@contextmanager
def stop_on_sigterm() -> Iterator[StopRequest]:
    """Within the block, SIGTERM interrupts Ray Tune's loop as Ctrl+C does; the request is recorded.

    Tune installs its interrupt handler for SIGINT and SIGUSR1 when ``fit`` starts (Ray's jobs
    block SIGINT in the driver, so SIGUSR1's is the one used). A SIGTERM before that raises
    ``KeyboardInterrupt``: nothing runs yet. Outside the main thread signals cannot be handled
    and the block runs unchanged.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # a handler left by an earlier fit is stale

    def on_sigterm(signum: int, frame: Any) -> None:
        stop.requested = True
        tune_interrupt = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_interrupt):
            raise KeyboardInterrupt
        tune_interrupt(signum, frame)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGUSR1, previous_usr1)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna each completed trial's constraint values, and records the
    result of a trial whose Optuna trial a stop already told FAIL.

    ``constraints``: for every trial completed with a result, ``Trial.set_constraint("f1 >= 0.6",
    c.violation(result[c.metric]))`` for each (:meth:`mg_tune.pareto.Constraint.violation`;
    ``result`` is the trial's last reported metrics, the values told as its objectives), before
    the trial is told, so the sampler sees them (``FrozenTrial.constraints``). A trial that
    failed or stopped without a result gets none, as Optuna's own constrained samplers expect.

    A stopped trial's result becomes a new COMPLETE trial with the same parameters and
    distributions, its constraint values and system attributes ``failed_trial`` (the FAIL
    trial's number) and ``retry_history``, as ``optuna.storages.RetryFailedTrialCallback``
    writes them; other trials are told as usual. A trial Ray ends while it is PAUSED (a
    promotion scheduler's end, :mod:`mg_tune.search.schedulers`) is told with its last
    reported result, as a stopped trial is, instead of Ray's PRUNED without values.
    """

    constraints: Sequence[Constraint] = ()  # a searcher pickled before constraints reached Optuna resumes without them

    def __init__(self, *args: Any, constraints: Sequence[Constraint] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.constraints = list(dict.fromkeys(constraints))
        self.last_results: dict[str, dict] = {}

    def constraint_values(self, result: dict) -> dict[str, float]:
        """``{"f1 >= 0.6": c.violation(result["f1"]), ...}``: what is set on the trial of ``result`` (keys exact, ``repr`` of the bound)."""
        return {f"{c.metric} {c.op} {c.value!r}": c.violation(result.get(c.metric)) for c in self.constraints}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Remember the newest result: a paused trial that a promotion scheduler ends is completed without one."""
        if not hasattr(self, "last_results"):  # a searcher pickled before this attribute existed
            self.last_results = {}
        self.last_results[trial_id] = result
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        remembered = getattr(self, "last_results", {}).pop(trial_id, None)
        if not result and not error:  # Ray ends a PAUSED trial without its result: tell its last values, as for a stopped one
            result = remembered
        if trial_id in self._completed_trials or not result:
            super().on_trial_complete(trial_id, result, error)
            return
        constraints = self.constraint_values(result)
        failed = self._stopped_trial(trial_id)
        if failed is None:
            for key, value in constraints.items():
                self._ot_trials[trial_id].set_constraint(key, value)
            super().on_trial_complete(trial_id, result, error)
            return
        values = [result.get(metric) for metric in self.metric] if isinstance(self.metric, list) else [result.get(self.metric)]
        history = [*failed.system_attrs.get("retry_history", []), failed.number]
        retried = optuna.trial.create_trial(
            params=failed.params,
            distributions=failed.distributions,
            values=values,
            user_attrs=failed.user_attrs,
            system_attrs={"failed_trial": failed.number, "retry_history": history},
        )
        for key, value in constraints.items():
            retried.set_constraint(key, value)
        self._ot_study.add_trial(retried)
        self._completed_trials.add(trial_id)

    def _stopped_trial(self, trial_id: str) -> optuna.trial.FrozenTrial | None:
        """The FAIL Optuna trial behind Ray trial ``trial_id``, or None if it is not finished."""
        trial = self._ot_trials.get(trial_id)
        if trial is None:
            return None
        failed = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        return next((t for t in failed if t.number == trial.number), None)

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
retried trial (system attributes ``failed_trial`` and ``retry_history``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

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
    """OptunaSearch that records the result of a trial whose Optuna trial a stop already told FAIL.

    The result becomes a new COMPLETE trial with the same parameters and distributions and
    system attributes ``failed_trial`` (the FAIL trial's number) and ``retry_history``, as
    ``optuna.storages.RetryFailedTrialCallback`` writes them; other trials are told as usual.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        failed = self._stopped_trial(trial_id)
        if failed is None or not result or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        values = [result.get(metric) for metric in self.metric] if isinstance(self.metric, list) else [result.get(self.metric)]
        history = [*failed.system_attrs.get("retry_history", []), failed.number]
        self._ot_study.add_trial(
            optuna.trial.create_trial(
                params=failed.params,
                distributions=failed.distributions,
                values=values,
                user_attrs=failed.user_attrs,
                system_attrs={"failed_trial": failed.number, "retry_history": history},
            )
        )
        self._completed_trials.add(trial_id)

    def _stopped_trial(self, trial_id: str) -> optuna.trial.FrozenTrial | None:
        """The FAIL Optuna trial behind Ray trial ``trial_id``, or None if it is not finished."""
        trial = self._ot_trials.get(trial_id)
        if trial is None:
            return None
        failed = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        return next((t for t in failed if t.number == trial.number), None)

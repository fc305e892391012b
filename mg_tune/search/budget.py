"""The trial-epoch budget of a search (``budget: {trial_epochs: B}``): a Ray Tune ``Stopper``.

With ``S`` the set of distinct ``(trial, epoch)`` results seen so far (the
search's checkpoints already in MLflow when the driver starts, so a
``--resume`` continues the count, plus every result reported since) and
``s = |S|``::

    trial(result) stops  iff  s >= B      (after adding the result to S)
    stop_all             iff  s >= B      (no trial is launched; running ones are stopped)

Ray Tune asks the stopper about every result before the scheduler, and
``stop_all`` at every step of its loop, right after the step's result: the
search ends at the result that makes ``s = B``. Ray ends every trial still
running, that result's trial included (its STOP waits for the checkpoint save
the result asked for, ``stop_all`` comes first), TERMINATED without telling
the searcher; the runner then marks their MLflow runs KILLED with the budget
as the reason (:func:`mg_tune.tracking.mark_orphans`).

Bound: a trial logs an epoch to MLflow before reporting it, and Ray's
function trainables report synchronously (a trial trains its next epoch only
after the driver processed its last result and let it continue), so when
``s`` reaches ``B`` each of the at most ``c - 1`` other running trials
(``c`` = ``concurrency``) holds at most one epoch not yet in ``S``, and none
gets to start another: the search records at most ``B + c - 1`` trial-epochs.
The wall-time budget (``budget: {time_s: T}``) is Ray Tune's own
``TuneConfig(time_budget_s=T)``.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from mg_tune.checkpoint_table import checkpoint_table
from mg_tune.tracking import SearchRun

__all__ = ["TrialEpochBudget"]


class TrialEpochBudget(tune.Stopper):
    """Stops the search once ``trial_epochs`` distinct (trial, epoch) results were reported; see the module docstring.

    Pickles (into Ray's ``tuner.pkl``) with its search run (whose tracking URI
    holds no password) and without its count: the count is read from MLflow
    again when first needed.
    """

    def __init__(self, search_run: SearchRun, trial_epochs: int) -> None:
        self.search_run = search_run
        self.trial_epochs = trial_epochs
        self._seen: set[tuple[str, int]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_seen": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "search" in state and "search_run" not in state:  # pickled before the rename: --resume still works
            state["search_run"] = state.pop("search")
        self.__dict__.update(state)

    @property
    def seen(self) -> set[tuple[str, int]]:
        """``S``: the distinct (trial id, epoch) results so far."""
        if self._seen is None:
            table = checkpoint_table(self.search_run.tracking_uri, self.search_run.name)
            self._seen = {(trial, int(epoch)) for trial, epoch in zip(table["trial_id"], table["epoch"])}
        return self._seen

    @property
    def spent(self) -> bool:
        """``s >= B``."""
        return len(self.seen) >= self.trial_epochs

    def __call__(self, trial_id: str, result: dict) -> bool:
        if "epoch" in result:
            self.seen.add((trial_id, int(result["epoch"])))
        return self.spent

    def stop_all(self) -> bool:
        return self.spent

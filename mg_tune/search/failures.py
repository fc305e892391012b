"""Why trials failed, in one line each: what the console prints live and what the end of a search sums up.

A trial's exception reaches the driver wrapped by Ray (``RayTaskError`` around
the trainable's exception, whose traceback Ray prints over dozens of lines and
keeps in the trial's ``error.txt``). The one line a person needs is the
original exception's type and first line, e.g. ``DatasetError: …/000310.jpg:
not a readable image``. Two places hold it:

* the trial's MLflow run, tag ``mg_tune.failure_reason``, written by the trial
  itself (:func:`mg_tune.search.runner.run_trial`) for the *first* failure,
  before Ray retries (a retry of a diverged trial fails with ``not retried: …``);
* Ray's pickled error of the trial (``Trial.get_pickled_error``, ``Result.error``):
  the *last* failure, also for errors raised before the trial's run existed.

:func:`failure_causes` prefers the first, :func:`error_cause` reads the second.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ray import cloudpickle
from mlflow import MlflowClient

from mg_tune.textfiles import first_line
from mg_tune.tracking import FAILURE_TAG, PARENT_TAG, TRIAL_TAG, RetryPolicy, SearchRun, iter_runs, redact_text

__all__ = ["error_cause", "failure_causes", "failure_summary", "trial_error_cause"]


def error_cause(error: BaseException | None) -> str:
    """``Type: first line of the message`` of the exception under Ray's wrapping (``RayTaskError.cause``), secrets masked."""
    if error is None:
        return "unknown error (Ray kept no exception)"
    cause = getattr(error, "cause", None) or error
    line = first_line(str(cause))
    return redact_text(f"{type(cause).__name__}: {line}" if line else type(cause).__name__)


def trial_error_cause(trial: Any) -> str:
    """The cause of a Ray Tune trial's latest failure, from the files Ray has just written on the driver.

    Read from the trial's local directory (``Trial.pickled_error_file``, else the last line of
    ``error.txt``), not with ``Trial.get_pickled_error``: that reads the copy in ``storage_path``,
    which still holds an earlier failure (or nothing) when a callback runs.
    """
    error = None
    if trial.pickled_error_file and Path(trial.pickled_error_file).exists():
        try:
            error = cloudpickle.loads(Path(trial.pickled_error_file).read_bytes())
        except Exception:  # an exception class the driver cannot unpickle: fall back to Ray's text
            error = None
    if error is not None:
        return error_cause(error)
    text = Path(trial.error_file).read_text(errors="replace") if trial.error_file and Path(trial.error_file).exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return redact_text(lines[-1].strip()) if lines else "unknown error (Ray kept no exception)"


def failure_causes(search_run: SearchRun, errors: dict[str, BaseException | None]) -> dict[str, str]:
    """One cause per failed trial id: its MLflow run's ``mg_tune.failure_reason`` (the first failure), else Ray's exception.

    The search's FAILED trial runs are read in one paged query, not one request per failed trial.
    """
    if not errors:
        return {}
    client = MlflowClient(search_run.tracking_uri)
    query = f"tags.`{PARENT_TAG}` = '{search_run.run_id}' AND attributes.status = 'FAILED'"
    runs = RetryPolicy().call(lambda: list(iter_runs(client, search_run.experiment_id, query)))
    tagged = {r.data.tags.get(TRIAL_TAG): r.data.tags[FAILURE_TAG] for r in runs if FAILURE_TAG in r.data.tags}
    return {trial_id: tagged.get(trial_id) or error_cause(error) for trial_id, error in errors.items()}


def failure_summary(causes: dict[str, str], trials: int) -> str:
    """``2 of 6 trials failed: DivergedError: non-finite loss (2)``; the most frequent causes first, at most 3."""
    counts = Counter(causes.values()).most_common()
    shown = "; ".join(f"{cause} ({n})" for cause, n in counts[:3])
    more = f"; and {len(counts) - 3} other cause{'s' if len(counts) > 4 else ''}" if len(counts) > 3 else ""
    return f"{len(causes)} of {trials} trials failed: {shown}{more}"

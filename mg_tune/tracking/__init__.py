"""MLflow tracking of searches, trials and every epoch's checkpoint.

Layout in MLflow
----------------
* one **experiment** per search, named ``mg-tune/<name>``;
* one **parent run** in it (tag ``mg_tune.role=search``) holding the search:
  the spec as artifact ``spec.yaml``, the flattened spec as params, search
  metrics (hypervolume vs trial-epochs), the Pareto plot, and the search's
  checkpoint index ``checkpoint_index.parquet`` (one row per checkpoint;
  trusted only while tagged ``mg_tune.checkpoint_index=complete:<rows>``,
  see :mod:`mg_tune.tracking.checkpoint_index`);
* one **child run** per trial (tags ``mg_tune.role=trial``,
  ``mg_tune.trial_id``, ``mlflow.parentRunId``): the trial's params, its
  metrics with ``step=epoch`` (MLflow's charts), the attribution overlays
  ``overlays/epoch=NNN.png``;
* one MLflow 3 **LoggedModel** per (trial, epoch) -- the checkpoint. It has
  ``source_run_id`` = the trial run, tags ``mg_tune.trial_id``,
  ``mg_tune.epoch``, ``mg_tune.search``, the checkpoint file as its artifact
  ``checkpoint.pt``, and that epoch's metrics linked to it (``model_id``,
  ``step=epoch``). It is finalised ``READY`` only after its checkpoint and
  metrics are stored, so a READY model is a complete (epoch, metrics,
  checkpoint) record. ``checkpoint.pt`` holds no optimizer state (its
  weights in the spec's ``checkpoints.dtype``); the trial's newest epoch also
  holds ``resume.pt`` (:func:`mg_tune.checkpoint.split_for_storage`), deleted
  from an epoch once the next one is READY. A search's retention policy
  (:mod:`mg_tune.search.retention`) may delete the ``checkpoint.pt`` of a
  dominated epoch: its model keeps its metrics and gets the tag
  ``mg_tune.weights_deleted`` saying why.

Decision: LoggedModels, not run artifacts + metric histories
------------------------------------------------------------
Reading every (trial, epoch) point of a search must cost a bounded number of
requests. With run artifacts, the per-epoch values live only in each run's
metric history: MLflow's public client reads those with one
``get_metric_history(run, key)`` per run *and* metric (3,000 requests for
1,000 trials x 3 objectives); ``search_runs`` only returns the *latest* value
of each metric, and the bulk history endpoints are UI-internal (``ajax-api``)
and sample steps. With LoggedModels, ``search_logged_models`` returns each
model with its tags, params and **all its linked metrics** in pages (the
SQL store loads a page with a fixed number of queries; no server-side cap on
the page size, we ask for :data:`PAGE_SIZE`). So a whole search is read with

    1 (experiment) + 1 (parent run) + ceil(trials / PAGE_SIZE) (search_runs)
      + ceil(trials x epochs / PAGE_SIZE) (search_logged_models)

requests -- 13 instead of 3,002 for 1,000 trials x 10 epochs (measured by
``bench/pareto_from_mlflow.py``; docs/benchmarks.md) -- and every epoch's metrics sit
on the very object that holds its checkpoint (the MLflow UI shows them
together on the model page and under the run's "Logged models"). The cost is
~4 small requests per logged epoch instead of ~2; epochs take seconds to
hours, so this is negligible. Consequence: the checkpoint of an epoch is at
``<model artifact_location>/checkpoint.pt``, not under the run's artifacts;
use :func:`download_checkpoint` (or ``checkpoint_uri`` in
:func:`mg_tune.front.checkpoint_table`).

NaN metrics: MLflow stores a NaN metric linked to a LoggedModel as ``0`` (its
``is_nan`` flag exists only for run metrics). A NaN value is therefore logged
on the run only, and reads back as a missing -- i.e. NaN -- model metric.

Idempotency and restarts
------------------------
``log_epoch`` is idempotent per epoch: an epoch whose model is READY is
skipped (first write wins), a PENDING one (crash mid-epoch) is completed.
The metrics of an epoch are logged with the model's creation timestamp, so a
retried ``log_batch`` writes identical rows, which MLflow de-duplicates: no
duplicate points in the run's metric history either. Transient failures
(connection errors, 5xx / ``TEMPORARILY_UNAVAILABLE``, SQLite "database is
locked") are retried with bounded exponential backoff (:class:`RetryPolicy`),
on top of MLflow's own HTTP retries.

Nothing here imports Ray: the search layer passes a :class:`SearchRun`
(picklable) into trial processes and builds a :class:`TrialLogger` there.

Modules
-------
====================  ==========================================================
``layout``            tag, artifact, experiment and model names; params/tag values
``uris``              default URI, masking secrets, checking a store before use
``retry``             :class:`RetryPolicy`, :func:`is_transient`
``queries``           paging through runs and LoggedModels
``search_run``        the parent run: :func:`start_search` … :func:`mark_orphans`
``trial_logger``      :class:`TrialLogger`: a trial's run, epochs and checkpoints
``checkpoints``       download an epoch's checkpoint; delete its weights
``checkpoint_index``  a search's compact checkpoint index (parent run artifact)
``requests``          :func:`count_requests` (tests and benches)
====================  ==========================================================

The public names (each module's ``__all__``) are re-exported here: ``from mg_tune.tracking import X``.
They are imported on first use (PEP 562): ``from mg_tune.tracking import check_tracking_uri`` loads
``uris`` only, not MLflow, torch and pandas, so a command checks its tracking URI (or fails in one line)
within a second of starting; the modules are searched in :data:`_MODULES` order, light ones first.
"""

import importlib
import os
from typing import TYPE_CHECKING, Any

# MLflow prints "View run ... at: <tracking URI>/#/..." on every run it ends: that URI may carry a password.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

_MODULES = ("uris", "credentials", "retry", "layout", "requests", "queries", "checkpoints", "checkpoint_index", "search_run", "trial_logger")

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and readers
    from mg_tune.tracking.checkpoint_index import *  # noqa: F403
    from mg_tune.tracking.checkpoints import *  # noqa: F403
    from mg_tune.tracking.credentials import *  # noqa: F403
    from mg_tune.tracking.layout import *  # noqa: F403
    from mg_tune.tracking.queries import *  # noqa: F403
    from mg_tune.tracking.requests import *  # noqa: F403
    from mg_tune.tracking.retry import *  # noqa: F403
    from mg_tune.tracking.search_run import *  # noqa: F403
    from mg_tune.tracking.trial_logger import *  # noqa: F403
    from mg_tune.tracking.uris import *  # noqa: F403


def __getattr__(name: str) -> Any:
    """A public name of one of the modules (imported now), a module itself, or ``__all__``: the union of their ``__all__``."""
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "__all__":
        return [n for module in _MODULES for n in importlib.import_module(f"{__name__}.{module}").__all__]
    for module in _MODULES:
        found = importlib.import_module(f"{__name__}.{module}")
        if name in found.__all__:
            return getattr(found, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

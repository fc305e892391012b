"""A search's parent run: start (or reopen) it, its metrics and tags, finish it, and end the trial runs left behind."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException

from mg_tune.checkpoint import RESUME_FILE
from mg_tune.tracking.checkpoint_index import clear_index_tag
from mg_tune.tracking.checkpoints import _delete_artifact, find_checkpoint_model
from mg_tune.tracking.layout import (
    EXPERIMENT_KIND,
    FAILURE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SEARCH_TAG,
    SPEC_ARTIFACT,
    STOPPED_EARLY_TAG,
    TRIAL_TAG,
    _as_params,
    _log_params,
    _tag_value,
    experiment_name,
)
from mg_tune.tracking.queries import _quote, iter_runs
from mg_tune.tracking.retry import RetryPolicy
from mg_tune.tracking.uris import _local_artifact_location, redact_text, redact_uri

__all__ = [
    "SearchRun", "find_search_run", "find_trial_run", "finish_search", "finish_stopped_trial",
    "log_search_metrics", "mark_orphans", "set_search_tag", "start_search",
]


@dataclass
class SearchRun:
    """A search run: the handle of a search's parent run in MLflow (``name`` is the search name).

    Small and picklable: it travels into Ray trials and driver callbacks.
    """

    tracking_uri: str
    experiment_id: str
    run_id: str
    name: str


def find_search_run(client: MlflowClient, experiment_id: str) -> Run | None:
    """The parent run (``mg_tune.role=search``) of an experiment, or ``None``."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{ROLE_TAG}` = 'search'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    return runs[0] if runs else None


def start_search(search_name: str, spec: dict, spec_text: str, tracking_uri: str, resume: bool) -> SearchRun:
    """Create (or, with ``resume``, reopen) the experiment ``mg-tune/<search_name>`` and its parent run.

    A new parent run gets tags ``mg_tune.search=<search_name>``/``mg_tune.role=search``,
    the flattened ``spec`` as params (values redacted and truncated to
    MLflow's limits) and ``spec_text`` (redacted) as artifact ``spec.yaml``.
    Reopening one clears its checkpoint index's completeness tag
    (:mod:`mg_tune.tracking.checkpoint_index`) before anything else.

    Raises:
        ValueError: the search exists and ``resume`` is false, ``resume``
            is true and the search never ran (nothing is created then), or
            its experiment was deleted.
    """
    client = MlflowClient(tracking_uri)
    exp_name = experiment_name(search_name)
    experiment = client.get_experiment_by_name(exp_name)
    if experiment is not None and experiment.lifecycle_stage != "active":
        raise ValueError(f"search {search_name} was deleted in MLflow (experiment {exp_name!r}); restore it or use another --name")
    parent = find_search_run(client, experiment.experiment_id) if experiment is not None else None
    if resume and parent is None:  # a typo in --name must not start a whole new search
        raise ValueError(f"--resume: search {search_name} never ran in {redact_uri(tracking_uri)} (no experiment {exp_name!r} with a search run): check the name, or leave out --resume to start it")
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                exp_name, artifact_location=_local_artifact_location(tracking_uri, exp_name), tags={SEARCH_TAG: search_name, **EXPERIMENT_KIND}
            )
        except MlflowException as exc:  # created concurrently
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment_id = client.get_experiment_by_name(exp_name).experiment_id
    else:
        experiment_id = experiment.experiment_id

    if parent is not None:
        if not resume:
            raise ValueError(f"search {search_name} exists; use --resume or another --name")
        clear_index_tag(client, parent)  # trials may add checkpoints again: its index is no longer complete
        client.update_run(parent.info.run_id, status="RUNNING")
        return SearchRun(tracking_uri, experiment_id, parent.info.run_id, search_name)

    run = client.create_run(experiment_id, run_name=search_name, tags={SEARCH_TAG: search_name, ROLE_TAG: "search"})
    run_id = run.info.run_id
    _log_params(client, run_id, _as_params(spec))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SPEC_ARTIFACT
        path.write_text(redact_text(spec_text), encoding="utf-8")
        client.log_artifact(run_id, str(path))
    return SearchRun(tracking_uri, experiment_id, run_id, search_name)


def finish_search(search_run: SearchRun, status: str = "FINISHED") -> None:
    """Terminate the parent run with ``status`` (FINISHED, FAILED or KILLED)."""
    MlflowClient(search_run.tracking_uri).set_terminated(search_run.run_id, status)


def set_search_tag(search_run: SearchRun, key: str, value: str) -> None:
    """Set tag ``key`` of the search's parent run to ``value`` (redacted, cut to MLflow's limit)."""
    RetryPolicy().call(MlflowClient(search_run.tracking_uri).set_tag, search_run.run_id, key, _tag_value(value))


def log_search_metrics(search_run: SearchRun, metrics: Mapping[str, float], step: int) -> None:
    """Log search-level metrics (e.g. normalised hypervolume) on the parent run at ``step`` (e.g. trial-epochs so far)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
    RetryPolicy().call(MlflowClient(search_run.tracking_uri).log_batch, search_run.run_id, metrics=items)


def mark_orphans(search_run: SearchRun, reason: str) -> int:
    """Set every child run of the search still ``RUNNING`` to ``KILLED`` with tag ``mg_tune.failure_reason``.

    Called when a search resumes after its driver died (those trials will be
    restarted as new attempts, which reopen their runs) or when it ends.
    Returns the number of runs marked.
    """
    client = MlflowClient(search_run.tracking_uri)
    orphans = list(
        iter_runs(client, search_run.experiment_id, f"tags.`{PARENT_TAG}` = {_quote(search_run.run_id)} AND attributes.status = 'RUNNING'")
    )
    for child in orphans:
        client.set_tag(child.info.run_id, FAILURE_TAG, _tag_value(reason))
        client.set_terminated(child.info.run_id, "KILLED")
    return len(orphans)


def finish_stopped_trial(search_run: SearchRun, trial_id: str, epoch: int) -> bool:
    """End the trial run of ``trial_id`` FINISHED with tag ``mg_tune.stopped_early=<epoch>`` if it is still RUNNING.

    For trials a scheduler stopped after ``epoch``: Tune ends them inside
    ``tune.report``, so the trial never finishes its run itself. Their
    checkpoints stay (they are candidates for the front); the newest one's
    ``resume.pt`` goes, as for any finished trial. Returns whether the run
    was finished here.
    """
    client = MlflowClient(search_run.tracking_uri)
    trial_run = RetryPolicy().call(find_trial_run, client, search_run, trial_id)
    if trial_run is None or trial_run.info.status != "RUNNING":
        return False
    RetryPolicy().call(client.set_tag, trial_run.info.run_id, STOPPED_EARLY_TAG, str(int(epoch)))
    if FAILURE_TAG in trial_run.data.tags:  # left by an earlier attempt's stop: this one finished
        RetryPolicy().call(client.delete_tag, trial_run.info.run_id, FAILURE_TAG)
    RetryPolicy().call(client.set_terminated, trial_run.info.run_id, "FINISHED")
    model = RetryPolicy().call(find_checkpoint_model, client, trial_run.info.run_id, int(epoch))
    RetryPolicy().call(_delete_artifact, search_run.tracking_uri, model, RESUME_FILE)
    return True


def find_trial_run(client: MlflowClient, search_run: SearchRun, trial_id: str) -> Run | None:
    """The child run of ``trial_id`` under the search's parent run, or ``None``."""
    query = f"tags.`{TRIAL_TAG}` = {_quote(trial_id)} AND tags.`{PARENT_TAG}` = {_quote(search_run.run_id)}"
    found = client.search_runs([search_run.experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"])
    return found[0] if found else None

"""``mg-tune jobs list``: one row per search on a cluster, its newest Ray job and its progress in MLflow.

Ray gives the job (id, status, start, end); MLflow gives the progress: trials finished and
failed (child runs FINISHED / FAILED), the total (the spec's), and the Pareto front over
every checkpoint logged so far, on the search's own objectives and constraints
(:func:`mg_tune.search.logged_spec.objectives_of`), with its normalised hypervolume
(:func:`mg_tune.front.search_pareto`, read-only: nothing is tagged).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from mlflow import MlflowClient
from ray.job_submission import JobDetails, JobStatus

from mg_tune.front import search_pareto
from mg_tune.search.logged_spec import logged_spec, objectives_of
from mg_tune.search.runner import total_trials
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import ROLE_TAG, experiment_name, find_search_run, iter_runs


@dataclass
class Progress:
    finished: int
    failed: int
    total: int
    front: int
    hypervolume: float | None


@dataclass
class SearchRow:
    name: str
    job: JobDetails
    progress: Progress | None  # None: not in MLflow (yet), or MLflow not reachable

    @property
    def started(self) -> str:
        return datetime.fromtimestamp(self.job.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S") if self.job.start_time else "-"

    @property
    def running_s(self) -> float | None:
        """Seconds since the job started, only while it is RUNNING (for an ended job the column would read as still running)."""
        if self.job.status != JobStatus.RUNNING or not self.job.start_time:
            return None
        return time.time() - self.job.start_time / 1000


def search_progress(tracking_uri: str, name: str) -> Progress | None:
    """Progress of search ``name`` in MLflow, or None when MLflow has no such search."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(name))
    parent = find_search_run(client, experiment.experiment_id) if experiment is not None else None
    if parent is None:
        return None
    statuses = [run.info.status for run in iter_runs(client, experiment.experiment_id, f"tags.`{ROLE_TAG}` = 'trial'")]
    raw = logged_spec(tracking_uri, name)
    progress = Progress(statuses.count("FINISHED"), statuses.count("FAILED"), total_trials(SearchSpec.model_validate(raw)), front=0, hypervolume=None)
    try:
        objectives = objectives_of(raw)
        pareto = search_pareto(tracking_uri, name, list(objectives.names), list(objectives.maximize), tag=False, constraints=objectives.constraints, require_checkpoints=True)
    except ValueError:  # no checkpoint logged yet
        return progress
    progress.front, progress.hypervolume = len(pareto.front), pareto.hypervolume
    return progress


def search_rows(jobs: dict[str, list[JobDetails]], tracking_uri: str | None) -> list[SearchRow]:
    """One row per search (its newest job), newest first; progress read from ``tracking_uri`` when given."""
    rows = [SearchRow(name, history[-1], search_progress(tracking_uri, name) if tracking_uri else None) for name, history in jobs.items()]
    return sorted(rows, key=lambda r: r.job.start_time or 0, reverse=True)

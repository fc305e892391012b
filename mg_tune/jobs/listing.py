"""``mg-tune jobs list``: one row per search on a cluster, its newest Ray job and its progress in MLflow.

Ray gives the job (id, status, start, end); MLflow gives the progress: trials finished and
failed (child runs FINISHED / FAILED), the total (the spec's), and the Pareto front over
every checkpoint logged so far with its normalised hypervolume
(:func:`mg_tune.front.search_pareto`, read-only: nothing is tagged).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from mlflow import MlflowClient
from ray.job_submission import JobDetails, JobStatus

from mg_tune.front import search_pareto
from mg_tune.search.runner import total_trials
from mg_tune.search.spec import SearchSpec
from mg_tune.tracking import ROLE_TAG, SPEC_ARTIFACT, experiment_name, find_search_run, iter_runs


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
    with tempfile.TemporaryDirectory() as tmp:
        spec = SearchSpec.model_validate(yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, SPEC_ARTIFACT, tmp)).read_text()))
    progress = Progress(statuses.count("FINISHED"), statuses.count("FAILED"), total_trials(spec), front=0, hypervolume=None)
    try:
        pareto = search_pareto(tracking_uri, name, spec.metric_names, [m == "max" for m in spec.modes], tag=False, constraints=spec.parsed_constraints)
    except ValueError:  # no checkpoint logged yet
        return progress
    progress.front, progress.hypervolume = len(pareto.front), pareto.hypervolume
    return progress


def search_rows(jobs: dict[str, list[JobDetails]], tracking_uri: str | None) -> list[SearchRow]:
    """One row per search (its newest job), newest first; progress read from ``tracking_uri`` when given."""
    rows = [SearchRow(name, history[-1], search_progress(tracking_uri, name) if tracking_uri else None) for name, history in jobs.items()]
    return sorted(rows, key=lambda r: r.job.start_time or 0, reverse=True)

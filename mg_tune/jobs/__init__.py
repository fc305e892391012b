"""Searches as a service on a Ray cluster: ``mg-tune submit`` and ``mg-tune jobs`` (Ray's job server).

:mod:`mg_tune.jobs.client` submits, finds, follows and stops them; :mod:`mg_tune.jobs.listing`
reads their progress from MLflow (imported on its own: it needs Ray Tune and torch);
:mod:`mg_tune.jobs.preflight` is the job ``submit`` runs on the cluster first, to refuse in
one line what the cluster lacks.
"""

from mg_tune.jobs.client import check_no_secrets, connect, latest_job, search_jobs, stop_search, submit_search

__all__ = ["check_no_secrets", "connect", "latest_job", "search_jobs", "stop_search", "submit_search"]

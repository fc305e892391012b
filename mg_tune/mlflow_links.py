"""Deep links into MLflow's UI (3.17), in its model-training view.

MLflow 3.17 opens an experiment in its GenAI view unless told otherwise; the
experiment tag ``mlflow.experimentKind`` is only read when the UI's
workflow switch is off, while the URL parameter ``workflowType`` always
wins (and is remembered by the browser). So every link mg-tune prints
carries ``workflowType=machine_learning``, and searches also set the tag
(:data:`mg_tune.tracking.EXPERIMENT_KIND`) for UIs that read it. The UI uses a hash router:
``<base>/#/<route>?<query>``.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from mlflow import MlflowClient

from mg_tune.tracking import experiment_name

__all__ = ["default_mlflow_url", "models_link", "registered_model_link", "run_link", "runs_link", "where_to_look"]

_VIEW = {"workflowType": "machine_learning"}


def default_mlflow_url(tracking_uri: str) -> str:
    """The tracking server itself when it is one (http/https), else where ``mlflow ui`` listens by default.

    ``tracking_uri`` is one without a password (:func:`mg_tune.tracking.move_credentials`), as every command passes it.
    """
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def _link(base: str, route: str, **query: str) -> str:
    return f"{base.rstrip('/')}/#/{route}?{urlencode({**_VIEW, **query})}"


FRONT_FILTER = "tags.pareto = 'true'"
"""Runs search of the trials with an epoch on the front (tagged by ``mg-tune pareto``)."""


def runs_link(base: str, experiment_id: str, search_filter: str | None = None) -> str:
    """The search's runs (the parent run and its trials), optionally filtered (the UI's search box, e.g. :data:`FRONT_FILTER`)."""
    return _link(base, f"experiments/{experiment_id}/runs", **({"searchFilter": search_filter} if search_filter else {}))


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return _link(base, f"experiments/{experiment_id}/runs/{run_id}")


def models_link(base: str, experiment_id: str) -> str:
    """The Models tab: every (trial, epoch) LoggedModel; registered front checkpoints show their version."""
    return _link(base, f"experiments/{experiment_id}/models")


def registered_model_link(base: str, name: str) -> str:
    """The registered model's page: its versions, tags and aliases."""
    return _link(base, f"models/{quote(name, safe='')}")


def where_to_look(tracking_uri: str, search_name: str, registered: str | None = None, mlflow_url: str | None = None, front_tag: str = "pareto") -> list[str]:
    """Lines a command prints after a search, ``pareto`` or ``export``: how to open the UI and the deep links.

    ``front_tag``: the tag of the front just computed (``pareto.f1-max...`` for a front on other
    objectives than the search's, :class:`mg_tune.front.FrontTags`), which the "on front" link filters on.
    """
    base = mlflow_url or default_mlflow_url(tracking_uri)
    lines = [] if tracking_uri.startswith(("http://", "https://")) else [f"MLflow UI:     mlflow ui --backend-store-uri {tracking_uri}   (then open the links below)"]
    experiment = MlflowClient(tracking_uri).get_experiment_by_name(experiment_name(search_name))
    if experiment is not None:
        lines.append(f"MLflow runs:   {runs_link(base, experiment.experiment_id)}")
        front = FRONT_FILTER if front_tag == "pareto" else f"tags.`{front_tag}` = 'true'"
        lines.append(f"  on front:    {runs_link(base, experiment.experiment_id, front)}")
        lines.append(f"MLflow models: {models_link(base, experiment.experiment_id)}")
    if registered:
        lines.append(f"Registered:    {registered_model_link(base, registered)}")
    return lines

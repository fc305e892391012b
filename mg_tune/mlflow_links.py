"""Deep links into MLflow's UI (3.17), in its model-training view.

MLflow 3.17 opens an experiment in its GenAI view unless told otherwise; the
experiment tag ``mlflow.experimentKind`` is only read when the UI's
workflow switch is off, while the URL parameter ``workflowType`` always
wins (and is remembered by the browser). So every link mg-tune prints
carries ``workflowType=machine_learning``, and searches also set the tag
(:data:`mg_tune.tracking.EXPERIMENT_KIND`) for UIs that read it. The UI uses a hash router:
``<base>/#/<route>?<query>``.

What the URL alone cannot set (which runs table columns show, whether child
runs nest) a *shared view* can: :func:`front_link` opens the one
:func:`save_front_view` stores on the experiment. The Pareto report is linked
as the file itself (:func:`artifact_link`) and from the parent run's
description (:func:`report_description`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from mlflow import MlflowClient
from mlflow.entities import Run

from mg_tune.tracking import experiment_name
from mg_tune.tracking.search_run import find_search_run

__all__ = [
    "FRONT_FILTER", "FRONT_VIEW", "PARETO_HTML", "PARETO_PNG", "artifact_link", "default_mlflow_url", "front_link", "front_view_state",
    "models_link", "registered_model_link", "report_description", "run_link", "runs_link", "save_front_view", "set_report_description", "where_to_look",
]

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


PARETO_HTML = "pareto.html"
PARETO_PNG = "pareto.png"
"""The Pareto report (interactive, self-contained) and its static plot, at the artifact root of the search's parent run."""


def _artifact_route(experiment_id: str, run_id: str, path: str) -> str:
    # ``runs/<id>/artifactPath/<path>`` opens the file; ``runs/<id>/artifacts/<path>`` only the tab
    return f"experiments/{experiment_id}/runs/{run_id}/artifactPath/{quote(path)}"


def artifact_link(base: str, experiment_id: str, run_id: str, path: str) -> str:
    """A run's Artifacts tab with the file ``path`` open (the UI previews PNGs and renders HTML files)."""
    return _link(base, _artifact_route(experiment_id, run_id, path))


DESCRIPTION_TAG = "mlflow.note.content"
"""A run's description (markdown), shown on its Overview tab."""
_REPORT_HEADING = "**Pareto report**"


def report_description(experiment_id: str, run_id: str) -> str:
    """The parent run's description: links to :data:`PARETO_HTML` and :data:`PARETO_PNG`, one click from its Overview tab.

    The links are relative (``#/…``): they open on whichever host serves the UI.
    """
    links = (f"[{name}](#/{_artifact_route(experiment_id, run_id, name)}?{urlencode(_VIEW)})" for name in (PARETO_HTML, PARETO_PNG))
    return f"{_REPORT_HEADING}: " + " · ".join(links)


def set_report_description(client: MlflowClient, experiment_id: str, run: Run) -> None:
    """Write :func:`report_description` on the parent run ``run`` unless it holds a description of someone else's."""
    current = run.data.tags.get(DESCRIPTION_TAG, "")
    if not current or current.startswith(_REPORT_HEADING):
        client.set_tag(run.info.run_id, DESCRIPTION_TAG, report_description(experiment_id, run.info.run_id))


FRONT_VIEW = "mg-tune-front"
"""Key of the front's shared view: experiment tag ``mlflow.sharedViewState.mg-tune-front``, URL ``viewStateShareKey``."""

_SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow UI's prefix (the runs page's "Share" button writes the same)


def _column(kind: str, key: str) -> str:
    """A column id of MLflow's runs table (its ``makeCanonicalSortKey``): ``metrics.`f1```."""
    return f"{kind}.`{key}`"


def front_view_state(objectives: Sequence[str], maximize: Sequence[bool]) -> dict:
    """The runs table of the front's trials at a glance: what :func:`front_link` opens.

    URL parameters alone cannot do it in MLflow 3.17's UI: the table nests child
    runs under a collapsed parent unless it is both filtered and sorted by something
    other than the start time (``nestChildren = !orderByKey && !searchFilter ||
    orderByKey == start_time``), and its columns (default: Source, Models, Dataset)
    live in the browser's local storage. A *shared view* carries both: the UI reads
    the experiment tag ``mlflow.sharedViewState.<key>`` (JSON of search facets and
    table state) when the URL names ``viewStateShareKey=<key>``. This one filters to
    :data:`FRONT_FILTER`, sorts by the first objective (best first: rows flat, no
    parent row) and shows exactly the objectives and ``pareto_epochs`` (which epochs
    of the trial are on the front; the metric columns are each run's last epoch).
    """
    first = objectives[0]
    return {
        "searchFilter": FRONT_FILTER,
        "orderByKey": _column("metrics", first),
        "orderByAsc": not maximize[0],
        "selectedColumns": [_column("tags", "pareto_epochs"), *(_column("metrics", o) for o in objectives)],
    }


def save_front_view(client: MlflowClient, experiment_id: str, objectives: Sequence[str], maximize: Sequence[bool]) -> None:
    """Store :func:`front_view_state` on the experiment (rewritten when the objectives change), for :func:`front_link`."""
    client.set_experiment_tag(experiment_id, _SHARED_VIEW_TAG + FRONT_VIEW, json.dumps(front_view_state(objectives, maximize)))


def front_link(base: str, experiment_id: str) -> str:
    """The front's trial runs, flat, with the objective columns (the shared view :func:`save_front_view` stored)."""
    return _link(base, f"experiments/{experiment_id}/runs", viewStateShareKey=FRONT_VIEW)


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
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(search_name))
    if experiment is not None:
        eid = experiment.experiment_id
        own = front_tag == "pareto"
        has_view = own and _SHARED_VIEW_TAG + FRONT_VIEW in experiment.tags
        lines.append(f"MLflow runs:   {runs_link(base, eid)}")
        front = front_link(base, eid) if has_view else runs_link(base, eid, FRONT_FILTER if own else f"tags.`{front_tag}` = 'true'")
        lines.append(f"  on front:    {front}")
        lines.append(f"MLflow models: {models_link(base, eid)}")
        parent = find_search_run(client, eid) if has_view or not own else None  # the report is stored with the front (mg_tune.front)
        if parent is not None:
            report = PARETO_HTML if own else f"{front_tag}/{PARETO_HTML}"  # a front on other objectives: in its own folder
            lines.append(f"Pareto plot:   {artifact_link(base, eid, parent.info.run_id, report)}")
    if registered:
        lines.append(f"Registered:    {registered_model_link(base, registered)}")
    return lines

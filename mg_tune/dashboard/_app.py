"""The Pareto explorer page: a plotly Dash app over a :class:`~mg_tune.dashboard._data.Source`.

The page shows the figures of :func:`mg_tune.front.report_figures`
(pairwise objective plots, 3-D view, hypervolume over trial-epochs) for the
checkpoints the filters keep, with their Pareto front, and re-reads MLflow
every ``refresh_s`` seconds (``dcc.Interval``) so a running search fills in
live. Clicking a point shows its hyperparameters, validation and test
metrics, the attribution overlays of that epoch (run artifact
``overlays/epoch=NNN.png``, downloaded once into a cache directory and served
at ``/overlays/<run_id>/<epoch>.png``), a link to its MLflow run, the
``mg-tune export`` command for it and the registry way (``models:/<model_id>``,
``pareto --register`` and the aliases).

Stable element ids (the browser tests read them): ``count-checkpoints`` and
``count-pareto`` (numbers shown), ``filter-<key>`` (checklists), ``pairs``,
``scatter3d``, ``hypervolume`` (graphs), ``details``, ``overlay`` (image),
``mlflow-link``, ``export-command``, ``registry-uri``.
"""

from __future__ import annotations

import hashlib
import shlex
import tempfile
import time
from pathlib import Path

import dash
import flask
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mg_tune.dashboard._data import FILTERS, Snapshot, Source, overlay_artifact
from mg_tune.mlflow_links import default_mlflow_url, run_link
from mg_tune.pareto_plots import hypervolume_figure, pareto_3d_figure, pareto_figure
from mg_tune.front import hypervolume_curve

__all__ = ["build_app", "export_command"]

_BOX = {"border": "1px solid #ddd", "borderRadius": "6px", "padding": "8px 12px", "margin": "6px 0"}


def export_command(snapshot: Snapshot, trial_id: str, epoch: int) -> str:
    """The ``mg-tune export`` command line for one checkpoint (shell-quoted; the tracking URI holds no password: ``mg-tune dashboard`` moved it out)."""
    return shlex.join(
        [
            "mg-tune", "export", "--search", snapshot.search_name, "--trial", str(trial_id), "--epoch", str(int(epoch)),
            "--to", f"exported/{snapshot.search_name}-{trial_id}-epoch{int(epoch)}", "--tracking-uri", snapshot.tracking_uri,
        ]
    )


def registry_lines(tracking_uri: str, search_name: str, model_id: str) -> str:
    """The registry way for one checkpoint: the registered versions that hold it already (by alias and by version), else
    load it by its LoggedModel id or register the front and load by alias."""
    from mg_tune.model_registry import registered_versions

    held = registered_versions(MlflowClient(tracking_uri), model_id)
    if held:
        lines = []
        for name, version, aliases in held:
            lines.append(f"# registered as {name} v{version}" + (f" (aliases: {', '.join(aliases)})" if aliases else ""))
            uris = [f"models:/{name}@{alias}" for alias in aliases[:1]] + [f"models:/{name}/{version}"]
            lines += [f'mlflow.pyfunc.load_model("{uri}")' for uri in uris] + [f'mg_tune.load_model("{uris[-1]}")']
        return "\n".join(lines)
    return "\n".join(
        [
            f'mg_tune.load_model("models:/{model_id}")',
            "# as an MLflow Model (mlflow.pyfunc.load_model, mlflow models serve), register the front:",
            shlex.join(["mg-tune", "pareto", "--search", search_name, "--register", search_name, "--tracking-uri", tracking_uri]),
            f'mlflow.pyfunc.load_model("models:/{search_name}@knee")  # or @best-f1, @best-epg, @best-iou',
        ]
    )


def _fingerprint(snapshot: Snapshot) -> str:
    """Changes whenever the table, objectives or run status change: figures re-render only then."""
    digest = hashlib.sha1(pd.util.hash_pandas_object(snapshot.table.astype(str), index=False).to_numpy().tobytes())
    digest.update(f"{snapshot.objectives}{snapshot.maximize}{snapshot.constraints}{snapshot.status}".encode())
    return digest.hexdigest()


def _filters(values: list) -> dict[str, list[str]]:
    return {key: list(v or []) for key, v in zip(FILTERS, values)}


def _figures(snapshot: Snapshot, filters: dict[str, list[str]]):
    result = snapshot.select(filters)
    pairs = pareto_figure(result.table, result.objectives, result.maximize)
    cube = pareto_3d_figure(result.table, result.objectives, result.maximize) or go.Figure(layout={"title": "3-D view needs three objectives"})
    curve = hypervolume_figure(hypervolume_curve(result))
    for fig in (pairs, cube, curve):
        fig.update_layout(uirevision="keep", hovermode="closest", clickmode="event")
    pairs.update_layout(width=None, autosize=True)
    return result, pairs, cube, curve


def _rows(pairs: list[tuple[str, str]]) -> html.Table:
    return html.Table([html.Tr([html.Th(k, style={"textAlign": "left", "paddingRight": "12px"}), html.Td(v)]) for k, v in pairs])


def _fmt(value) -> str:
    if isinstance(value, float):
        return "NaN" if value != value else f"{value:.4g}"
    return str(value)


def _details(snapshot: Snapshot, selected: dict | None, mlflow_url: str):
    if not selected:
        return html.P("Click a point to see its hyperparameters, metrics, attribution overlays and export command.")
    row = snapshot.checkpoint(selected["trial_id"], selected["epoch"])
    if row is None:
        return html.P(f"trial {selected['trial_id']} epoch {selected['epoch']} is not in this search any more.")
    trial_id, epoch, run_id = str(row["trial_id"]), int(row["epoch"]), str(row["run_id"])
    params = [(c.removeprefix("params."), _fmt(row[c])) for c in snapshot.hyperparameters if not (isinstance(row[c], float) and row[c] != row[c])]
    params += [(label, row[key]) for key, label in FILTERS.items() if f"params.{key}" not in snapshot.hyperparameters]
    validation = [(m, _fmt(row[m])) for m in snapshot.metrics if not m.startswith("test_")]
    test = [(m, _fmt(row[m])) for m in snapshot.metrics if m.startswith("test_") and row[m] == row[m]]
    return html.Div(
        [
            html.H4(f"trial {trial_id}, epoch {epoch}", id="selected-title"),
            html.Div(f"run status: {row['status']}"),
            html.Div(
                [
                    html.Div([html.B("hyperparameters"), _rows(params)], style={"marginRight": "24px"}),
                    html.Div([html.B("validation metrics"), _rows(validation)], id="metrics-validation", style={"marginRight": "24px"}),
                    html.Div([html.B("test metrics"), _rows(test) if test else html.Div("not evaluated (mg-tune evaluate)")], id="metrics-test"),
                ],
                style={"display": "flex", "flexWrap": "wrap"},
            ),
            html.B("attribution overlays"),
            html.Div(html.Img(id="overlay", src=f"/overlays/{run_id}/{epoch}.png", alt=f"overlays of trial {trial_id} epoch {epoch}", style={"maxWidth": "100%", "maxHeight": "420px"})),
            html.Div(html.A("open the run in MLflow", id="mlflow-link", href=run_link(mlflow_url, snapshot.experiment_id, run_id), target="_blank")),
            html.B("export this checkpoint"),
            html.Pre(export_command(snapshot, trial_id, epoch), id="export-command", style={"whiteSpace": "pre-wrap", "background": "#f6f6f6", "padding": "6px"}),
            html.B("or load it from MLflow"),
            html.Pre(registry_lines(snapshot.tracking_uri, snapshot.search_name, str(row["model_id"])), id="registry-uri", style={"whiteSpace": "pre-wrap", "background": "#f6f6f6", "padding": "6px"}),
        ]
    )


def _filter_controls(snapshot: Snapshot) -> html.Div:
    options = snapshot.options()
    return html.Div(
        [
            html.Div([html.B(label + ":"), dcc.Checklist(id=f"filter-{key}", options=options[key], value=options[key], inline=True, inputStyle={"marginLeft": "10px", "marginRight": "3px"})])
            for key, label in FILTERS.items()
        ],
        style={**_BOX, "display": "flex", "flexWrap": "wrap", "gap": "8px 32px"},
    )


def build_app(source: Source, refresh_s: float = 10.0, mlflow_url: str | None = None, cache_dir: str | Path | None = None) -> dash.Dash:
    """The Dash app of one search. ``cache_dir`` keeps downloaded overlay images (default: a new temporary directory)."""
    mlflow_url = mlflow_url or default_mlflow_url(source.tracking_uri)
    cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="mg-tune-dashboard-"))
    cache.mkdir(parents=True, exist_ok=True)
    app = dash.Dash(__name__, title=f"mg-tune: {source.search_name}", update_title=None)
    app.layout = lambda: _layout(_reread(source), refresh_s)
    filter_ids = [f"filter-{key}" for key in FILTERS]

    @app.callback(
        Output("version", "data"),
        Output("status", "children"),
        *(Output(i, "options") for i in filter_ids),
        *(Output(i, "value") for i in filter_ids),
        Input("refresh", "n_intervals"),
        State("version", "data"),
        *(State(i, "options") for i in filter_ids),
        *(State(i, "value") for i in filter_ids),
        prevent_initial_call=True,
    )
    def refresh(_, version, *state):
        old_options, old_values = state[: len(FILTERS)], state[len(FILTERS) :]
        try:
            current = source.refresh()
        except (MlflowException, OSError, ValueError) as exc:
            message = f"could not read MLflow at {time.strftime('%H:%M:%S')}: {str(exc)[:300]}"
            return (dash.no_update, message, *([dash.no_update] * (2 * len(FILTERS))))
        status = _status(current)
        fingerprint = _fingerprint(current)
        if fingerprint == version:
            return (dash.no_update, status, *([dash.no_update] * (2 * len(FILTERS))))
        options = current.options()
        values = [
            [v for v in options[key] if v in (chosen or []) or v not in (known or [])]  # keep choices; new values start checked
            for key, known, chosen in zip(FILTERS, old_options, old_values)
        ]
        return (fingerprint, status, *(options[key] for key in FILTERS), *values)

    @app.callback(
        Output("pairs", "figure"),
        Output("scatter3d", "figure"),
        Output("hypervolume", "figure"),
        Output("count-checkpoints", "children"),
        Output("count-pareto", "children"),
        Output("count-note", "children"),
        Input("version", "data"),
        *(Input(i, "value") for i in filter_ids),
    )
    def figures(_, *values):
        current = source.current
        result, pairs, cube, curve = _figures(current, _filters(list(values)))
        note = f" (of {len(current.table)} in the search; filtered)" if len(result.table) != len(current.table) else ""
        return pairs, cube, curve, str(len(result.table)), str(int(result.table["pareto"].sum())), note

    @app.callback(Output("selected", "data"), Input("pairs", "clickData"), Input("scatter3d", "clickData"), prevent_initial_call=True)
    def select(*clicks):
        click = clicks[0] if dash.ctx.triggered_id == "pairs" else clicks[1]
        point = (click or {}).get("points", [{}])[0]
        data = point.get("customdata")
        return {"trial_id": data[0], "epoch": int(data[1])} if data else dash.no_update

    @app.callback(Output("details", "children"), Input("selected", "data"), Input("version", "data"))
    def details(selected, _):
        return _details(source.current, selected, mlflow_url)

    @app.server.route("/overlays/<run_id>/<int:epoch>.png")
    def overlay(run_id: str, epoch: int):
        if run_id not in set(source.current.table["run_id"]):
            flask.abort(404)
        target = cache / run_id / overlay_artifact(epoch)
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                try:
                    downloaded = MlflowClient(source.tracking_uri).download_artifacts(run_id, overlay_artifact(epoch), tmp)
                except (MlflowException, OSError):
                    flask.abort(404)
                target.parent.mkdir(parents=True, exist_ok=True)
                Path(downloaded).replace(target)
        return flask.send_file(target, mimetype="image/png", max_age=3600)

    return app


def _reread(source: Source) -> Snapshot:
    """A fresh read for a page load; the last one if MLflow cannot be read now."""
    try:
        return source.refresh()
    except (MlflowException, OSError, ValueError):
        return source.current


def _layout(snapshot: Snapshot, refresh_s: float) -> html.Div:
    """The page, built on every page load from a fresh read of MLflow."""
    return html.Div(
        [
            html.H2(f"Pareto explorer: search {snapshot.search_name!r}", style={"marginBottom": "4px"}),
            html.Div(_status(snapshot), id="status", style={"color": "#555"}),
            _filter_controls(snapshot),
            html.Div(
                [html.Span(id="count-checkpoints"), " checkpoints, ", html.Span(id="count-pareto"), " on the Pareto front", html.Span(id="count-note")],
                id="counts",
                style={"fontSize": "18px", "margin": "6px 0"},
            ),
            dcc.Graph(id="pairs", config={"displaylogo": False}),
            html.Div(
                [
                    html.Div(dcc.Graph(id="scatter3d", config={"displaylogo": False}), style={"flex": "1 1 480px", "minWidth": "420px"}),
                    html.Div(id="details", style={**_BOX, "flex": "1 1 480px"}),
                ],
                style={"display": "flex", "gap": "12px", "alignItems": "flex-start"},
            ),
            dcc.Graph(id="hypervolume", config={"displaylogo": False}),
            dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
            dcc.Store(id="version", data=_fingerprint(snapshot)),
            dcc.Store(id="selected"),
        ],
        style={"fontFamily": "sans-serif", "margin": "12px 24px"},
    )


def _status(snapshot: Snapshot) -> str:
    objectives = ", ".join(f"{o} ({'max' if m else 'min'})" for o, m in zip(snapshot.objectives, snapshot.maximize))
    constraints = f"; constraints: {'; '.join(snapshot.constraints)}" if snapshot.constraints else ""
    trials = snapshot.table["trial_id"].nunique()
    return f"search {snapshot.status.lower()}, {trials} trials with checkpoints; objectives {objectives}{constraints}; read from MLflow at {time.strftime('%H:%M:%S')}"

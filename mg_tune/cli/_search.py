"""``mg-tune search|pareto|evaluate|export|dashboard``: a search and what is done with its checkpoints.

Every user error is one line on stderr naming the file/field/value at fault
and exit code 2; nothing is written before the input has been validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mg_tune.cli._common import console, tracking_uri_option
from mg_tune.output import Column, check_output_format, fail, fixed, message, output_option, print_table, quiet_libraries, short


def pareto_columns(front, objectives: list[str]) -> list[Column]:
    """Columns of a table of Pareto checkpoints: trial, epoch, the hyperparameters the front has, the objectives."""
    hyper = [c for c in ("params.loss", "params.lam", "params.attribution", "params.layer", "params.lr") if c in front.columns]
    return [
        Column("trial_id", "trial", is_id=True), Column("epoch", format=lambda v: str(int(v))),
        *(Column(h, h.removeprefix("params."), format=short) for h in hyper),
        *(Column(o, format=fixed(3)) for o in objectives),
    ]


def print_pareto(front, objectives: list[str], title: str, output: str) -> None:
    """Print Pareto checkpoints (a ``search_pareto`` front) in the ``--output`` format."""
    print_table(title, pareto_columns(front, objectives), front.to_dict("records"), output)


def search(
    spec_path: Path = typer.Argument(..., help="search spec YAML (see search_spaces/)"),
    name: Optional[str] = typer.Option(None, "--name", help="search name (default: the spec's name)"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted search of this name"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (auto, HOST:PORT); default $RAY_ADDRESS, else a new local Ray"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI"),
    storage_path: Optional[str] = typer.Option(None, "--storage-path", help="where Ray Tune keeps the search state (dir or s3://)"),
    verbose: bool = typer.Option(False, "--verbose", help="also print Ray's, MLflow's and Optuna's routine lines (their warnings and errors always show)"),
) -> None:
    """Run a multi-objective search and print its Pareto front."""
    if verbose:
        quiet_libraries(verbose=True)
    from mg_tune.search.spec import SpecError, load_spec
    from mg_tune.mlflow_links import where_to_look
    from mg_tune.tracking import default_tracking_uri

    try:
        spec, text = load_spec(spec_path)
    except SpecError as exc:
        fail(str(exc))
    overrides = {"name": name, "storage_path": storage_path}
    spec = spec.model_copy(update={k: v for k, v in overrides.items() if v})
    uri = tracking_uri or spec.tracking_uri or default_tracking_uri()
    from mg_tune.search.runner import run_search

    try:
        outcome = run_search(spec, text, uri, address=address, resume=resume)
    except SpecError as exc:  # the spec asks for what the data on disk cannot give
        fail(f"{spec_path}: {exc}")
    except ValueError as exc:
        fail(str(exc))
    if outcome.pareto is None:
        console.print(f"search {spec.name!r} stopped ({outcome.trials} trials); continue it with: {_resume_command(spec_path, spec.name, tracking_uri and outcome.search_run.tracking_uri, storage_path, address)}", highlight=False, markup=False, soft_wrap=True)
        return
    print_pareto(outcome.pareto.front, spec.metric_names, f"Pareto front of search {spec.name!r} ({len(outcome.pareto.table)} checkpoints, {outcome.trials} trials, {outcome.errors} failed)", "table")
    console.print(f"hypervolume: {outcome.pareto.hypervolume:.4f}")
    for line in where_to_look(outcome.search_run.tracking_uri, spec.name):  # without the password run_search moved out
        message(line)
    if outcome.pareto.plot_path is not None:
        console.print(f"Pareto plot: {outcome.pareto.plot_path}")


def _resume_command(spec_path: Path, name: str, tracking_uri: str | None, storage_path: str | None, address: str | None) -> str:
    """The command that continues a stopped search: a submitted job's own (``submit --resume``, set by ``mg-tune submit``), else this one's with ``--resume``."""
    import os
    import shlex

    from mg_tune.jobs.client import RESUME_HINT_ENV

    given = {"--tracking-uri": tracking_uri, "--storage-path": storage_path, "--address": address}
    return os.environ.get(RESUME_HINT_ENV) or shlex.join(["mg-tune", "search", str(spec_path), "--name", name, "--resume", *(x for k, v in given.items() if v for x in (k, v))])


def pareto(
    search_name: str = typer.Option(..., "--search", help="search name"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    objectives: str = typer.Option("f1,epg,iou", "--objectives", help="comma-separated metrics, all maximised"),
    register: Optional[str] = typer.Option(
        None, "--register", help="register the front as versions of this MLflow registered model, with aliases best-<objective> and knee"
    ),
    output: str = output_option(),
) -> None:
    """Compute the Pareto front of a search from MLflow alone, tag it and print it (and register it with --register)."""
    check_output_format(output)
    from mg_tune.mlflow_links import where_to_look
    from mg_tune.model_registry import KNEE_ALIAS, register_front
    from mg_tune.front import search_pareto

    names = [o.strip() for o in objectives.split(",") if o.strip()]
    uri = tracking_uri_option(tracking_uri)
    try:
        result = search_pareto(uri, search_name, names, [True] * len(names))
        registered = register_front(uri, search_name, result.front, names, [True] * len(names), register) if register else None
    except ValueError as exc:
        fail(str(exc))
    print_pareto(result.front, names, f"Pareto front of search {search_name!r} ({len(result.table)} checkpoints)", output)
    message(f"hypervolume: {result.hypervolume:.4f}", output)
    if registered is not None:
        aliases = ", ".join(f"{alias} → v{version}" for alias, version in registered.aliases.items())
        message(f"registered {len(registered.versions)} front checkpoints as {register!r}: {aliases}", output)
        if registered.left:
            message(f"left the front (tagged pareto=false): versions {', '.join(registered.left)}", output)
        message(f"load: mlflow.pyfunc.load_model('models:/{register}@{KNEE_ALIAS}')", output)
    for line in where_to_look(uri, search_name, register):
        message(line, output)


def evaluation_columns(table, objectives: list[str]) -> list[Column]:
    """Columns of evaluated checkpoints: trial, epoch, validation and test value of every objective, test mAP, IoU threshold."""
    pairs = [(c, label) for o in objectives for c, label in ((o, f"val {o}"), (f"test_{o}", f"test {o}"))]
    pairs += [(c, label) for c, label in (("test_map", "test map"), ("test_iou_threshold", "IoU thr")) if c in table.columns and c not in dict(pairs)]
    return [Column("trial_id", "trial", is_id=True), Column("epoch", format=lambda v: str(int(v))), *(Column(c, label, format=fixed(3)) for c, label in pairs)]


def evaluate(
    search_name: str = typer.Option(..., "--search", help="search name"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    objectives: str = typer.Option("f1,epg,iou", "--objectives", help="comma-separated metrics, all maximised"),
    all_checkpoints: bool = typer.Option(False, "--all", help="evaluate every checkpoint, not only the Pareto front"),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cuda"),
    iou_threshold: str = typer.Option(
        "checkpoint", "--iou-threshold",
        help="checkpoint: each checkpoint's own threshold, as in training (its held-out split, or the spec's fixed iou_threshold); "
        "pooled: one threshold for all evaluated checkpoints, chosen on their pooled held-out splits",
    ),
    output: str = output_option(),
) -> None:
    """Evaluate the Pareto checkpoints of a search on the test split; log test_* metrics to MLflow."""
    check_output_format(output)
    from mg_tune.checkpoint_eval import TEST_METRICS_HINT, evaluate_pareto

    names = [o.strip() for o in objectives.split(",") if o.strip()]
    try:
        table = evaluate_pareto(
            tracking_uri_option(tracking_uri), search_name, names, [True] * len(names),
            pareto_only=not all_checkpoints, device=device, iou_threshold=iou_threshold,
        )
    except ValueError as exc:
        fail(str(exc))
    which = "every checkpoint" if all_checkpoints else "the Pareto checkpoints"
    print_table(f"Test metrics of {which} of search {search_name!r} ({len(table)})", evaluation_columns(table, names), table.to_dict("records"), output)
    message(TEST_METRICS_HINT, output)


def export(
    search_name: str = typer.Option(..., "--search", help="search name"),
    trial: str = typer.Option(..., "--trial", help="trial id (tag mg_tune.trial_id)"),
    epoch: int = typer.Option(..., "--epoch", help="epoch of the checkpoint"),
    to: str = typer.Option(..., "--to", help="a new directory or s3://bucket/prefix"),
    register: Optional[str] = typer.Option(None, "--register", help="also register in the MLflow Model Registry under this name"),
    alias: Optional[str] = typer.Option(None, "--alias", help="alias of the registered version (needs --register)"),
    s3_endpoint_url: Optional[str] = typer.Option(None, "--s3-endpoint-url", help="S3 endpoint (default $MLFLOW_S3_ENDPOINT_URL)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
) -> None:
    """Export one checkpoint as a model package (model.pt, config.json, dataset.json, metrics.json, MODEL_CARD.md)."""
    from mg_tune.export import export_checkpoint
    from mg_tune.mlflow_links import where_to_look

    tracking_uri = tracking_uri_option(tracking_uri)
    try:
        uri = export_checkpoint(
            tracking_uri, search_name, trial, epoch, to,
            s3_endpoint_url=s3_endpoint_url, register=register, alias=alias,
        )
    except ValueError as exc:
        fail(str(exc))
    console.print(f"exported to {uri}", highlight=False, markup=False, soft_wrap=True)
    console.print(f'load it with: mg_tune.load_model("{uri}")', highlight=False, markup=False, soft_wrap=True)
    if register:
        where = f"models:/{register}@{alias}" if alias else f"models:/{register}/<version>"
        console.print(f"registered in the MLflow Model Registry: {where}  (mlflow.pyfunc.load_model, mlflow models serve -m, mg_tune.load_model)", highlight=False, markup=False, soft_wrap=True)
        for line in where_to_look(tracking_uri, search_name, register):
            message(line)


def dashboard(
    search_name: str = typer.Option(..., "--search", help="search name"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    port: int = typer.Option(8050, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (default: this machine only)"),
    refresh: float = typer.Option(10.0, "--refresh", help="seconds between re-reads of MLflow (live while the search runs)"),
    objectives: Optional[str] = typer.Option(None, "--objectives", help="comma-separated metrics, all maximised (default: the search's)"),
    mlflow_url: Optional[str] = typer.Option(None, "--mlflow-url", help="MLflow UI for run links (default: the tracking server, else http://127.0.0.1:5000)"),
) -> None:
    """Serve the Pareto explorer of a search: plots, filters, checkpoint details; reads MLflow only."""
    from mg_tune.dashboard import serve

    names = [o.strip() for o in objectives.split(",") if o.strip()] if objectives else None

    def ready(url: str) -> None:
        console.print(f"Pareto explorer of search {search_name!r}: {url}   (Ctrl+C to stop)", highlight=False, markup=False)

    try:
        serve(tracking_uri_option(tracking_uri), search_name, host=host, port=port, refresh_s=refresh, objectives=names, mlflow_url=mlflow_url, on_ready=ready)
    except ValueError as exc:
        fail(str(exc))

"""``mg-tune search|pareto|evaluate|export|dashboard``: a search and what is done with its checkpoints.

Every user error is one line on stderr naming the file/field/value at fault
and exit code 2; nothing is written before the input has been validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mg_tune.cli._common import console, tracking_uri_option
from mg_tune.output import Column, check_output_format, fail, fixed, message, output_option, print_table, progress_bars, quiet_libraries, short, warnings_as_lines

if TYPE_CHECKING:
    from mg_tune.pareto import Objectives


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
    verbose: bool = typer.Option(False, "--verbose", help="also print Ray Tune's own reporter, the trials' output and Ray's, MLflow's and Optuna's routine lines (their warnings and errors always show)"),
) -> None:
    """Run a multi-objective search: print its progress (a live view on a terminal, one line per event otherwise), then its Pareto front."""
    if verbose:
        quiet_libraries(verbose=True)
    from mg_tune.search.spec_file import SpecError, read_spec_file
    from mg_tune.tracking import check_tracking_uri, default_tracking_uri

    try:  # the file and the tracking store first: a missing file or an unreachable server fails in seconds, before torch and Ray are imported
        raw, _ = read_spec_file(spec_path)
        uri = tracking_uri or (raw.get("tracking_uri") if isinstance(raw.get("tracking_uri"), str) else None) or default_tracking_uri()
        check_tracking_uri(uri)
        from mg_tune.search.spec import load_spec

        spec, text = load_spec(spec_path)
    except ValueError as exc:  # SpecError is one
        fail(str(exc))
    overrides = {"name": name, "storage_path": storage_path}
    spec = spec.model_copy(update={k: v for k, v in overrides.items() if v})
    from mg_tune.search.runner import run_search

    try:
        outcome = run_search(spec, text, uri, address=address, resume=resume, verbose=verbose)
    except SpecError as exc:  # the spec asks for what the data on disk cannot give
        fail(f"{spec_path}: {exc}")
    except ValueError as exc:
        fail(str(exc))
    if outcome.stopped:
        console.print(f"search {spec.name!r} stopped ({outcome.trials} trials); continue it with: {_resume_command(spec_path, spec.name, tracking_uri and outcome.search_run.tracking_uri, storage_path, address)}", highlight=False, markup=False, soft_wrap=True)
        return
    if outcome.all_failed:
        trial_id, cause = next(iter(outcome.failures.items()))
        fail(f"search {spec.name!r}: all {outcome.trials} trials failed; trial {trial_id}: {cause}", SEARCH_FAILED)
    print_search_summary(spec, outcome)


SEARCH_FAILED = 1
"""Exit code of a search that ran and whose every trial failed (input refused before the search starts: 2)."""


def print_search_summary(spec, outcome) -> None:
    """The end of a search: its front, hypervolume, failures (count and causes), the links, and the commands to run next."""
    from mg_tune.mlflow_links import where_to_look
    from mg_tune.model_registry import knee_index
    from mg_tune.search.console import next_steps
    from mg_tune.search.failures import failure_summary

    pareto = outcome.pareto
    front = pareto.front.reset_index(drop=True)
    title = f"Pareto front of search {spec.name!r}: {len(front)} of {len(pareto.table)} checkpoints ({outcome.trials} trials, {outcome.errors} failed)"
    print_pareto(front, spec.metric_names, title, "table")
    message(f"hypervolume: {pareto.hypervolume:.4f}")
    if outcome.failures:
        message(failure_summary(outcome.failures, outcome.trials))
    tracking_uri = outcome.search_run.tracking_uri  # without the password run_search moved out
    for line in where_to_look(tracking_uri, spec.name):
        message(line)
    maximize = [m == "max" for m in spec.modes]
    knee = None
    if len(front):
        row = front.iloc[knee_index(front[spec.metric_names].to_numpy(dtype=float), maximize)]
        knee = (str(row["trial_id"]), int(row["epoch"]))
    for line in next_steps(spec.name, tracking_uri, knee):
        message(line)


OBJECTIVES_HELP = "comma-separated metrics, each NAME, NAME:max or NAME:min (default: the search's own objectives and constraints, from its logged spec)"


def front_objectives(tracking_uri: str, search_name: str, override: str | None) -> tuple["Objectives", bool]:
    """:func:`mg_tune.search.logged_spec.front_objectives`, its refusal one error line and exit 2."""
    from mg_tune.search.logged_spec import front_objectives as chosen

    try:
        return chosen(tracking_uri, search_name, override)
    except ValueError as exc:
        fail(str(exc))


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
    objectives: Optional[str] = typer.Option(None, "--objectives", help=OBJECTIVES_HELP),
    register: Optional[str] = typer.Option(
        None, "--register", help="register the front as versions of this MLflow registered model, with aliases best-<objective> and knee"
    ),
    output: str = output_option(),
) -> None:
    """Compute the Pareto front of a search from MLflow alone, tag it and print it (and register it with --register).

    The front is on the search's own objectives and constraints unless --objectives names others;
    such a front is tagged pareto.<objective>-<direction>... and leaves the search's `pareto` tags alone.
    """
    check_output_format(output)
    uri = tracking_uri_option(tracking_uri)  # before the heavy imports: an unreachable server is one line within seconds
    from mg_tune.mlflow_links import where_to_look
    from mg_tune.model_registry import KNEE_ALIAS, register_front
    from mg_tune.front import search_pareto

    chosen, own = front_objectives(uri, search_name, objectives)
    names, maximize = list(chosen.names), list(chosen.maximize)
    try:
        result = search_pareto(uri, search_name, names, maximize, constraints=chosen.constraints, own=own, require_checkpoints=True, progress=progress_bars())
        registered = register_front(uri, search_name, result.front, names, maximize, register) if register else None
    except ValueError as exc:
        fail(str(exc))
    print_pareto(result.front, names, f"Pareto front of search {search_name!r} ({len(result.table)} checkpoints)", output)
    message(f"front on {chosen.describe()}" + ("" if own else f"; not the search's own objectives: tagged {result.tags.pareto}=true, the search's front (tag pareto) is unchanged"), output)
    if result.front.empty:
        message(f"no checkpoint has every objective measured{' and meets the constraints' if chosen.constraints else ''}: the front is empty", output)
    message(f"hypervolume: {result.hypervolume:.4f}", output)
    if registered is not None:
        aliases = ", ".join(f"{alias} → v{version}" for alias, version in registered.aliases.items())
        message(f"registered {len(registered.versions)} front checkpoints as {register!r}: {aliases}", output)
        if registered.left:
            message(f"left the front (tagged pareto=false): versions {', '.join(registered.left)}", output)
        message(f"load: mlflow.pyfunc.load_model('models:/{register}@{KNEE_ALIAS}')", output)
    for line in where_to_look(uri, search_name, register, front_tag=result.tags.pareto):
        message(line, output)


def evaluation_columns(table, objectives: list[str]) -> list[Column]:
    """Columns of evaluated checkpoints: trial, epoch, validation and test value of every objective, test mAP, IoU threshold."""
    pairs = [(c, label) for o in objectives for c, label in ((o, f"val {o}"), (f"test_{o}", f"test {o}"))]
    pairs += [(c, label) for c, label in (("test_map", "test map"), ("test_iou_threshold", "IoU thr")) if c in table.columns and c not in dict(pairs)]
    return [Column("trial_id", "trial", is_id=True), Column("epoch", format=lambda v: str(int(v))), *(Column(c, label, format=fixed(3)) for c, label in pairs)]


def evaluate(
    search_name: str = typer.Option(..., "--search", help="search name"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
    objectives: Optional[str] = typer.Option(None, "--objectives", help=OBJECTIVES_HELP),
    all_checkpoints: bool = typer.Option(False, "--all", help="evaluate every checkpoint, not only the Pareto front"),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cuda"),
    iou_threshold: str = typer.Option(
        "checkpoint", "--iou-threshold",
        help="checkpoint: each checkpoint's own threshold, as in training (its held-out split, or the spec's fixed iou_threshold); "
        "pooled: one threshold for all evaluated checkpoints, chosen on their pooled held-out splits",
    ),
    output: str = output_option(),
) -> None:
    """Evaluate the Pareto checkpoints of a search (its own objectives and constraints unless --objectives) on the test split; log test_* metrics to MLflow."""
    check_output_format(output)
    uri = tracking_uri_option(tracking_uri)
    from mg_tune.checkpoint_eval import TEST_METRICS_HINT, evaluate_pareto

    chosen, own = front_objectives(uri, search_name, objectives)
    names = list(chosen.names)
    try:
        with warnings_as_lines():  # e.g. a test split without boxes: no test EPG/IoU, and why
            table = evaluate_pareto(
                uri, search_name, names, list(chosen.maximize), constraints=chosen.constraints,
                pareto_only=not all_checkpoints, device=device, iou_threshold=iou_threshold, progress=progress_bars(),
            )
    except ValueError as exc:
        fail(str(exc))
    which = "every checkpoint" if all_checkpoints else "the Pareto checkpoints"
    print_table(f"Test metrics of {which} of search {search_name!r} ({len(table)})", evaluation_columns(table, names), table.to_dict("records"), output)
    if not all_checkpoints:
        message(f"front on {chosen.describe()}" + ("" if own else " (--objectives: not the search's own)"), output)
    message(TEST_METRICS_HINT, output)


def export(
    search_name: str = typer.Option(..., "--search", help="search name"),
    trial: str = typer.Option(..., "--trial", help="trial id (tag mg_tune.trial_id)"),
    epoch: int = typer.Option(..., "--epoch", help="epoch of the checkpoint"),
    to: str = typer.Option(..., "--to", help="a new (or empty) directory or s3://bucket/prefix"),
    force: bool = typer.Option(False, "--force", help="replace an earlier export at --to (never other files)"),
    register: Optional[str] = typer.Option(None, "--register", help="also register in the MLflow Model Registry under this name"),
    alias: Optional[str] = typer.Option(None, "--alias", help="alias of the registered version (needs --register)"),
    s3_endpoint_url: Optional[str] = typer.Option(None, "--s3-endpoint-url", help="S3 endpoint (default $MLFLOW_S3_ENDPOINT_URL)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
) -> None:
    """Export one checkpoint as a model package (model.pt, config.json, dataset.json, metrics.json, MODEL_CARD.md)."""
    tracking_uri = tracking_uri_option(tracking_uri)
    from mg_tune.export import export_checkpoint
    from mg_tune.mlflow_links import where_to_look

    try:
        uri = export_checkpoint(
            tracking_uri, search_name, trial, epoch, to,
            s3_endpoint_url=s3_endpoint_url, register=register, alias=alias, force=force, progress=progress_bars(),
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
    objectives: Optional[str] = typer.Option(None, "--objectives", help=OBJECTIVES_HELP),
    mlflow_url: Optional[str] = typer.Option(None, "--mlflow-url", help="MLflow UI for run links (default: the tracking server, else http://127.0.0.1:5000)"),
) -> None:
    """Serve the Pareto explorer of a search: plots, filters, checkpoint details; reads MLflow only."""
    uri = tracking_uri_option(tracking_uri)
    from mg_tune.dashboard import serve

    def ready(url: str) -> None:
        console.print(f"Pareto explorer of search {search_name!r}: {url}   (Ctrl+C to stop)", highlight=False, markup=False)

    try:
        serve(uri, search_name, host=host, port=port, refresh_s=refresh, objectives=objectives, mlflow_url=mlflow_url, on_ready=ready)
    except ValueError as exc:
        fail(str(exc))

"""``mg-tune submit`` and ``mg-tune jobs list|logs|stop``: searches as Ray jobs (see :mod:`mg_tune.jobs.client`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

import typer

from mg_tune.cli._common import console, tracking_uri_option
from mg_tune.output import Column, check_output_format, fail, message, output_option, print_table

ADDRESS_HELP = "the Ray dashboard's URL (default $RAY_ADDRESS), e.g. http://127.0.0.1:8265 forwarded by `ray dashboard cluster/cluster.yaml`"

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

T = TypeVar("T")

jobs_app = typer.Typer(no_args_is_help=True, help="Searches running on a Ray cluster as jobs: list, follow, stop.")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _on_cluster(address: str | None, call: Callable[[JobSubmissionClient], T]) -> tuple[JobSubmissionClient, T]:
    """Connect to the job server at ``address`` and ``call`` it with the client; a ValueError of either is the command's one error line."""
    from mg_tune.jobs.client import connect

    try:
        client = connect(address)
        return client, call(client)
    except ValueError as exc:
        fail(str(exc))
    except RuntimeError as exc:  # Ray's job SDK: "Request failed with status code 500: No available agent …"
        fail(f"the Ray job server at {address or os.environ.get('RAY_ADDRESS')} answered: {str(exc).strip().splitlines()[0]}")


def submit(
    spec_path: Path = typer.Argument(..., help="search spec YAML (see search_spaces/)"),
    name: Optional[str] = typer.Option(None, "--name", help="search name (default: the spec's name)"),
    resume: bool = typer.Option(False, "--resume", help="continue the stopped or failed search of this name"),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    wait: bool = typer.Option(False, "--wait", help="follow the job's logs until it ends; exit with its status"),
) -> None:
    """Submit a search to a Ray cluster as a Ray job and return at once (the search runs on without this process)."""
    import shlex

    from mg_tune.search.spec_file import SpecError, read_spec_file

    try:
        read_spec_file(spec_path)  # a missing or malformed file fails here, before Ray and the schema (torch) are imported
        from mg_tune.jobs.client import check_no_secrets, exit_code, follow_logs, resume_command, submit_search
        from mg_tune.search.spec import load_spec

        spec, text = load_spec(spec_path)
        check_no_secrets(spec, spec_path)
    except (SpecError, ValueError) as exc:
        fail(str(exc))
    if name:
        spec = spec.model_copy(update={"name": name})
    client, job_id = _on_cluster(address, lambda client: submit_search(client, spec, text, resume, spec_path))
    where = client.get_address()
    console.print(f"submitted search {spec.name!r} as Ray job {job_id} to {where}", highlight=False, markup=False)
    if not wait:  # every hint pastes as printed: the cluster's address included
        on = ["--address", where]
        lines = {
            "follow it:": f"{shlex.join(['mg-tune', 'jobs', 'logs', spec.name, '--follow', *on])}   (or: {shlex.join(['ray', 'job', 'logs', job_id, '--follow', *on])})",
            "list all:": shlex.join(["mg-tune", "jobs", "list", *on]),
            "stop it:": f"{shlex.join(['mg-tune', 'jobs', 'stop', spec.name, *on])}   (resume: {resume_command(str(spec_path.resolve()), spec.name, where)})",
        }
        for label, line in lines.items():
            console.print(f"{label:<11} {line}", highlight=False, markup=False, soft_wrap=True)
        return
    job = follow_logs(client, job_id, _write)
    console.print(f"job {job_id}: {job.status.value}", highlight=False, markup=False)
    raise typer.Exit(exit_code(job))


@jobs_app.command("list")
def list_jobs(
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow of the cluster (default $MLFLOW_TRACKING_URI), e.g. through the tunnel of the README"),
    output: str = output_option(),
) -> None:
    """One row per search on the cluster: its newest job, status, trials, Pareto front and hypervolume (from MLflow)."""
    check_output_format(output)
    from mg_tune.jobs.client import failure_line, search_jobs
    from mg_tune.jobs.listing import search_rows
    from mg_tune.tracking import check_tracking_uri

    client, jobs = _on_cluster(address, search_jobs)
    uri = tracking_uri_option(tracking_uri, check=False)  # an unreachable MLflow leaves columns empty here, it does not stop the listing
    try:
        check_tracking_uri(uri, timeout=5)
    except ValueError as exc:
        message(f"MLflow not read ({exc}): trials, front and hypervolume left empty", output)
        uri = None
    rows = []
    for row in search_rows(jobs, uri):
        p = row.progress
        rows.append({
            "search": row.name, "job": row.job.submission_id, "status": row.job.status.value,
            "trials": f"{p.finished}/{p.total}" if p else None, "failed": p.failed if p else None,
            "front": p.front if p else None, "hypervolume": p.hypervolume if p else None,
            "started": row.started, "running_s": row.running_s, "error": failure_line(row.job),
        })
    columns = [
        Column("search", justify="left", is_id=True), Column("job", justify="left", is_id=True), Column("status", justify="left"),
        Column("trials", format=_count), Column("failed", format=_count), Column("front", format=_count),
        Column("hypervolume", format=lambda v: "-" if v is None else f"{v:.4f}"), Column("started", justify="left"),
        Column("running_s", "running", format=lambda v: "-" if v is None else f"{v:.0f} s"),
        Column("error", "last error (FAILED)", justify="left", format=lambda v: v or "-", is_id=True),  # folds: the whole line shows
    ]
    print_table(f"Searches on {client.get_address()}", columns, rows, output)


def _count(value) -> str:
    """A cell of a count that MLflow may not have given (``-``)."""
    return "-" if value is None else str(value)


@jobs_app.command()
def logs(
    name: str = typer.Argument(..., help="search name, or a job id as `submit` printed it"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing until the job ends"),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Print the logs of the newest job of a search (its driver: Ray Tune's progress, the Pareto table)."""
    from mg_tune.jobs.client import follow_logs, latest_job

    client, job = _on_cluster(address, lambda client: latest_job(client, name))
    if follow:
        follow_logs(client, job.submission_id, _write)
    else:
        _write(client.get_job_logs(job.submission_id))


@jobs_app.command()
def stop(
    name: str = typer.Argument(..., help="search name"),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Stop a search gracefully: running trials end KILLED (checkpoints kept); `submit --resume` continues it."""
    from mg_tune.jobs.client import SEARCH_KEY, job_resume_command, stop_search

    client, job = _on_cluster(address, lambda client: stop_search(client, name))
    search = job.metadata[SEARCH_KEY]
    console.print(f"search {search!r}: job {job.submission_id} {job.status.value}; continue it with: {job_resume_command(client, job)}", highlight=False, markup=False, soft_wrap=True)


@jobs_app.command(hidden=True)
def preflight() -> None:
    """The pre-flight job `submit` runs on the cluster first (mg_tune.jobs.preflight); not for users."""
    from mg_tune.jobs.preflight import main

    main()

"""Searches as Ray jobs on a cluster's job server (Ray's ``JobSubmissionClient``).

A submitted search is a Ray job whose entrypoint is ``mg-tune search spec.yaml --name N``
on the cluster: the spec's text travels in the job's ``runtime_env`` (``env_vars``), nothing
else does. The job reads the tracking URI (and MLflow's credentials) from the cluster's
environment (``cluster/start-mlflow.sh`` writes them there) and keeps Ray Tune's state in
the spec's ``storage_path`` or, without one, in ``$MG_TUNE_STORAGE_PATH`` (default
``~/mg-tune-runs`` on the head). Each job carries metadata ``mg_tune.search=N``, so the
searches of a cluster are found again by name; Ray's own ``ray job list`` shows them too.

Token authentication works as for ``ray job submit``: ``RAY_AUTH_MODE=token`` and the
token in ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from mg_tune.tracking import S3_KEY_ENV, redact_uri

if TYPE_CHECKING:
    from mg_tune.search.spec import SearchSpec

SEARCH_KEY = "mg_tune.search"
"""Job metadata key holding the search name."""

STOP_GRACE_S = 120
"""Seconds a stopped job's driver gets to stop its trials and mark them (``RAY_JOB_STOP_WAIT_TIME_S``)."""

SPEC_FILE = "spec.yaml"
SPEC_ENV = "MG_TUNE_SPEC"
"""Environment variable of a job holding its spec's text."""
CLUSTER_STORAGE = '"${MG_TUNE_STORAGE_PATH:-$HOME/mg-tune-runs}"'
"""Ray Tune's storage path of a job whose spec names none (expanded by the job's shell on the cluster)."""

TOKEN_HELP = "RAY_AUTH_MODE=token and the token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token ('ray get-auth-token' on the head), as for 'ray job submit'"


def connect(address: str | None) -> JobSubmissionClient:
    """A client of the job server at ``address`` (default ``$RAY_ADDRESS``), checked with one request.

    Raises:
        ValueError: no address, not a URL, unreachable, or the token is missing or refused (one line).
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ValueError("no Ray cluster given: pass --address http://127.0.0.1:8265 or set RAY_ADDRESS (forward the dashboard with 'ray dashboard cluster/cluster.yaml')")
    if not address.startswith(("http://", "https://")):
        raise ValueError(f"--address {address}: give the URL of the Ray dashboard, e.g. http://127.0.0.1:8265 ('ray dashboard cluster/cluster.yaml' forwards it)")
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path and not os.environ.get("RAY_AUTH_TOKEN") and not _readable(token_path):
        raise ValueError(f"RAY_AUTH_TOKEN_PATH {token_path}: no token there (copy it from the head: 'ray get-auth-token')")
    try:
        client = JobSubmissionClient(address)
        client.list_jobs()
    except ConnectionError:
        raise ValueError(f"cannot reach the Ray job server at {address} (is 'ray dashboard cluster/cluster.yaml' forwarding it?)") from None
    except AuthenticationError:
        if not _token_given() or os.environ.get("RAY_AUTH_MODE", "").lower() != "token":  # Ray's clients send no token then
            raise ValueError(f"the Ray cluster at {address} requires a token: set {TOKEN_HELP}") from None
        raise ValueError(f"the Ray cluster at {address} refused the token: set the cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token ('ray get-auth-token' on the head)") from None
    return client


def _token_given() -> bool:
    """Whether this machine has a Ray token where Ray's clients look: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    return bool(os.environ.get("RAY_AUTH_TOKEN", "").strip()) or _readable(os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token")


def _readable(path: str) -> bool:
    try:
        return bool(Path(path).expanduser().read_text().strip())
    except OSError:
        return False


def search_jobs(client: JobSubmissionClient) -> dict[str, list[JobDetails]]:
    """The cluster's mg-tune jobs by search name, oldest first."""
    found: dict[str, list[JobDetails]] = {}
    for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
        name = (job.metadata or {}).get(SEARCH_KEY)
        if name:
            found.setdefault(name, []).append(job)
    return found


def latest_job(client: JobSubmissionClient, name: str) -> JobDetails:
    """The newest job of search ``name``.

    Raises:
        ValueError: no job of that name on the cluster.
    """
    jobs = search_jobs(client)
    if name not in jobs:
        known = ", ".join(sorted(jobs)) or "none"
        raise ValueError(f"no search {name!r} on the Ray cluster at {client.get_address()} (searches there: {known})")
    return jobs[name][-1]


def entrypoint(spec: SearchSpec, resume: bool, job_id: str) -> str:
    """The job's shell command: write the shipped spec to a new directory, run ``mg-tune search`` on it there."""
    command = ["mg-tune", "search", SPEC_FILE, "--name", shlex.quote(spec.name)]
    if resume:
        command.append("--resume")
    if not spec.storage_path or ("://" not in spec.storage_path and not Path(spec.storage_path).is_absolute()):
        command += ["--storage-path", CLUSTER_STORAGE]  # a relative path would name the job's new directory
    prepare = f'cd "$(mktemp -d -t {job_id}-XXXXXX)" && printf %s "${SPEC_ENV}" > {SPEC_FILE}'
    return f"{prepare} && {' '.join(command)}"


def check_no_secrets(spec: SearchSpec, spec_path: Path) -> None:
    """Refuse a spec whose URIs hold passwords: on a cluster they come from the cluster's environment.

    Raises:
        ValueError: names the field, the password masked.
    """
    from mg_tune.search.spec_credentials import URI_FIELDS

    for field in URI_FIELDS:
        value = getattr(spec, field)
        if value and (urlsplit(value).password is not None or S3_KEY_ENV.keys() & {k for k, _ in parse_qsl(urlsplit(value).query)}):
            raise ValueError(f"{spec_path}: {field}: {redact_uri(value)} holds a password; a submitted search must not carry one (the job reads MLflow's from the cluster's environment, databases' from ~/.pgpass)")


def submit_search(client: JobSubmissionClient, spec: SearchSpec, spec_text: str, resume: bool) -> str:
    """Submit search ``spec.name`` as a Ray job; return the job's submission id.

    The spec's text travels in the job's ``runtime_env`` (env var :data:`SPEC_ENV`); the
    entrypoint writes it to a new directory on the head and runs the search there. (Not a
    ``working_dir``: Ray deletes a job's working directory from a node once the last trial
    that used it there has ended, under the running driver's feet.)

    The spec was validated on this machine, passwords included (:func:`check_no_secrets`).

    Raises:
        ValueError: the search runs already, or exists and ``resume`` is false.
    """
    jobs = search_jobs(client).get(spec.name, [])
    running = [j for j in jobs if not j.status.is_terminal()]
    if running:
        raise ValueError(f"search {spec.name} is running as job {running[-1].submission_id}: follow it with 'mg-tune jobs logs {spec.name} --follow' or stop it with 'mg-tune jobs stop {spec.name}'")
    if jobs and not resume:
        raise ValueError(f"search {spec.name} was submitted before (job {jobs[-1].submission_id}, {jobs[-1].status.value}): add --resume to continue it, or choose another --name")
    job_id = f"mg-tune-{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    return client.submit_job(
        entrypoint=entrypoint(spec, resume, job_id),
        submission_id=job_id,
        runtime_env={"env_vars": {SPEC_ENV: spec_text, "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}},
        metadata={SEARCH_KEY: spec.name},
    )


def follow_logs(client: JobSubmissionClient, job_id: str, write: Callable[[str], None]) -> JobDetails:
    """Stream the job's logs through ``write`` until it ends; return its final details."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            write(lines)

    asyncio.run(tail())
    return wait_until_done(client, job_id, timeout_s=30)


def wait_until_done(client: JobSubmissionClient, job_id: str, timeout_s: float) -> JobDetails:
    """Poll the job until its status is terminal (or ``timeout_s`` passes); return its details."""
    deadline = time.monotonic() + timeout_s
    job = client.get_job_info(job_id)
    while not job.status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
        job = client.get_job_info(job_id)
    return job


def stop_search(client: JobSubmissionClient, name: str) -> JobDetails:
    """Stop the running job of search ``name`` gracefully and wait until it has stopped.

    Raises:
        ValueError: no such search, or its newest job is not running.
    """
    job = latest_job(client, name)
    if job.status.is_terminal():
        raise ValueError(f"search {name} is not running (job {job.submission_id} is {job.status.value}); continue it with 'mg-tune submit SPEC.yaml --name {name} --resume'")
    client.stop_job(job.submission_id)
    return wait_until_done(client, job.submission_id, timeout_s=STOP_GRACE_S + 30)


def exit_code(job: JobDetails) -> int:
    """The exit status of a finished job's driver: 0 when it succeeded, else its own code (or 1)."""
    if job.status == JobStatus.SUCCEEDED:
        return 0
    return job.driver_exit_code or 1

"""Searches as Ray jobs on a cluster's job server (Ray's ``JobSubmissionClient``).

A submitted search is a Ray job whose entrypoint is ``<python> -m mg_tune.cli search spec.yaml
--name N`` on the cluster, ``<python>`` being the head's interpreter that the pre-flight
(:mod:`mg_tune.jobs.preflight`) found running mg-tune at this machine's version: nothing is
submitted when the pre-flight finds something missing. The spec's text travels in the job's
``runtime_env`` (``env_vars``), nothing else does. The job reads the tracking URI (and MLflow's credentials) from the cluster's
environment (``cluster/start-mlflow.sh`` writes them there) and keeps Ray Tune's state in
the spec's ``storage_path`` or, without one, in ``$MG_TUNE_STORAGE_PATH`` (default
``~/mg-tune-runs`` on the head). Each job carries metadata ``mg_tune.search=N``, so the
searches of a cluster are found again by name; Ray's own ``ray job list`` shows them too.

Token authentication works as for ``ray job submit``: ``RAY_AUTH_MODE=token`` and the
token in ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from mg_tune.jobs.preflight import MARK, NAME_ENV, RESUME_ENV, SPEC_ENV, VERSION_ENV, version
from mg_tune.tracking import S3_KEY_ENV, redact_uri

if TYPE_CHECKING:
    from mg_tune.search.spec import SearchSpec

SEARCH_KEY = "mg_tune.search"
"""Job metadata key holding the search name."""
SPEC_PATH_KEY = "mg_tune.spec_path"
"""Job metadata key holding the spec file's absolute path on the submitting machine (for the resume command)."""
PREFLIGHT_KEY = "mg_tune.preflight"
"""Job metadata key of a pre-flight job (deleted once read)."""
PREFLIGHT_TIMEOUT_S = 180
"""Seconds the pre-flight job may take: the CLI's start on the head, one task per node, one request to MLflow."""
RESUME_HINT_ENV = "MG_TUNE_RESUME_COMMAND"
"""Environment variable of a job: the command that resumes it, which its driver prints when it is stopped."""

STOP_GRACE_S = 120
"""Seconds a stopped job's driver gets to stop its trials and mark them (``RAY_JOB_STOP_WAIT_TIME_S``)."""

SPEC_FILE = "spec.yaml"
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
    """The newest job of search ``name``, or the job whose submission id is ``name`` (as ``submit`` printed it).

    Raises:
        ValueError: no search and no mg-tune job of that name on the cluster.
    """
    jobs = search_jobs(client)
    if name in jobs:
        return jobs[name][-1]
    by_id = next((job for history in jobs.values() for job in history if job.submission_id == name), None)
    if by_id is None:
        known = ", ".join(sorted(jobs)) or "none"
        raise ValueError(f"no search or mg-tune job {name!r} on the Ray cluster at {client.get_address()} (searches there: {known})")
    return by_id


_RAY_LINE = re.compile(r"^(Running entrypoint for job |Job entrypoint command failed with exit code |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ \w+\.py:\d+ -- )")
"""Lines Ray's job supervisor adds to a job's log and message (not the entrypoint's own output; Ray writes them out of order)."""


def last_output_line(text: str) -> str | None:
    """The last line the entrypoint itself wrote in ``text`` (a job's log or Ray's message about it), or None."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip() and not _RAY_LINE.match(line)), None)


def failure_line(job: JobDetails) -> str | None:
    """Why a FAILED job failed: the driver's last line in Ray's message (which ends with its last log lines), else the message; None unless FAILED."""
    if job.status != JobStatus.FAILED or not job.message:
        return None
    return last_output_line(job.message) or job.message.splitlines()[0]


def resume_command(spec_path: str, name: str, address: str) -> str:
    """The command that continues search ``name`` on the cluster at ``address`` (shell-quoted)."""
    return shlex.join(["mg-tune", "submit", spec_path, "--name", name, "--resume", "--address", address])


def entrypoint(spec: SearchSpec, resume: bool, job_id: str, python: str) -> str:
    """The job's shell command: write the shipped spec to a new directory, run ``python -m mg_tune.cli search`` on it there."""
    command = [shlex.quote(python), "-m", "mg_tune.cli", "search", SPEC_FILE, "--name", shlex.quote(spec.name)]
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


def preflight(client: JobSubmissionClient, spec: SearchSpec, spec_text: str, resume: bool, job_id: str) -> str:
    """Run the pre-flight job (:mod:`mg_tune.jobs.preflight`) with the search's ``runtime_env``; return the head's Python.

    The pre-flight job is deleted once read (it is no search).

    Raises:
        ValueError: one line naming what the cluster lacks (mg-tune on the head's ``PATH``,
            mg-tune's version on a node, the tracking server, the storage path, the search
            for ``--resume``).
    """
    check_id = f"{job_id}-preflight"
    env = {SPEC_ENV: spec_text, VERSION_ENV: version(), RESUME_ENV: "1" if resume else "0", NAME_ENV: spec.name}
    client.submit_job(entrypoint="mg-tune jobs preflight", submission_id=check_id, runtime_env={"env_vars": env}, metadata={PREFLIGHT_KEY: spec.name})
    job = wait_until_done(client, check_id, timeout_s=PREFLIGHT_TIMEOUT_S)
    logs = client.get_job_logs(check_id)
    if not job.status.is_terminal():
        client.stop_job(check_id)
        job = wait_until_done(client, check_id, timeout_s=30)
    try:
        client.delete_job(check_id)
    except RuntimeError:  # still stopping: Ray keeps it in 'ray job list', harmless
        pass
    where = f"the Ray cluster at {client.get_address()}"
    results = [line.removeprefix(MARK) for line in logs.splitlines() if line.startswith(MARK)]
    if not results:
        last = last_output_line(logs) or failure_line(job) or f"no output, job {job.status.value}"
        if not job.status.is_terminal():
            raise ValueError(f"{where}: the pre-flight job did not end within {PREFLIGHT_TIMEOUT_S} s (last line: {last})")
        if "mg-tune: not found" in last or "mg-tune: command not found" in last:
            raise ValueError(f"{where} cannot run mg-tune ({last!r}): a job runs with the PATH of the head's 'ray start'; start Ray with mg-tune's environment active (README: a hand-started cluster)")
        raise ValueError(f"{where}: the pre-flight job failed: {last}")
    found = json.loads(results[-1])
    if found["problems"]:
        raise ValueError(f"{where} cannot run search {spec.name}: {'; '.join(found['problems'])}")
    return found["python"]


def submit_search(client: JobSubmissionClient, spec: SearchSpec, spec_text: str, resume: bool, spec_path: Path | None = None) -> str:
    """Submit search ``spec.name`` as a Ray job once the cluster passed the pre-flight; return the job's submission id.

    The spec's text travels in the job's ``runtime_env`` (env var :data:`SPEC_ENV`); the
    entrypoint writes it to a new directory on the head and runs the search there. (Not a
    ``working_dir``: Ray deletes a job's working directory from a node once the last trial
    that used it there has ended, under the running driver's feet.) ``spec_path`` (absolute)
    goes into the job's metadata and its resume command (:data:`RESUME_HINT_ENV`).

    The spec was validated on this machine, passwords included (:func:`check_no_secrets`).

    Raises:
        ValueError: the search runs already, or exists and ``resume`` is false, or the
            pre-flight found something missing (:func:`preflight`).
    """
    jobs = search_jobs(client).get(spec.name, [])
    running = [j for j in jobs if not j.status.is_terminal()]
    if running:
        raise ValueError(f"search {spec.name} is running as job {running[-1].submission_id}: follow it with 'mg-tune jobs logs {spec.name} --follow' or stop it with 'mg-tune jobs stop {spec.name}'")
    if jobs and not resume:
        raise ValueError(f"search {spec.name} was submitted before (job {jobs[-1].submission_id}, {jobs[-1].status.value}): add --resume to continue it, or choose another --name")
    job_id = f"mg-tune-{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    python = preflight(client, spec, spec_text, resume, job_id)
    path = str(spec_path.resolve()) if spec_path is not None else SPEC_FILE
    env = {SPEC_ENV: spec_text, "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S), RESUME_HINT_ENV: resume_command(path, spec.name, client.get_address())}
    return client.submit_job(
        entrypoint=entrypoint(spec, resume, job_id, python),
        submission_id=job_id,
        runtime_env={"env_vars": env},
        metadata={SEARCH_KEY: spec.name, SPEC_PATH_KEY: path},
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
    name = job.metadata[SEARCH_KEY]
    if job.status == JobStatus.SUCCEEDED:
        raise ValueError(f"search {name} is not running: its job {job.submission_id} SUCCEEDED, so there is nothing to stop or resume")
    if job.status.is_terminal():
        raise ValueError(f"search {name} is not running (job {job.submission_id} is {job.status.value}); continue it with: {job_resume_command(client, job)}")
    client.stop_job(job.submission_id)
    return wait_until_done(client, job.submission_id, timeout_s=STOP_GRACE_S + 30)


def job_resume_command(client: JobSubmissionClient, job: JobDetails) -> str:
    """The command that resumes the search of ``job``, with the spec path it was submitted from."""
    return resume_command((job.metadata or {}).get(SPEC_PATH_KEY, SPEC_FILE), job.metadata[SEARCH_KEY], client.get_address())


def exit_code(job: JobDetails) -> int:
    """The exit status of a finished job's driver: 0 when it succeeded, else its own code (or 1)."""
    if job.status == JobStatus.SUCCEEDED:
        return 0
    return job.driver_exit_code or 1

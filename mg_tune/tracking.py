"""MLflow tracking of searches, trials and every epoch's checkpoint.

Layout in MLflow
----------------
* one **experiment** per search, named ``mg-tune/<name>``;
* one **parent run** in it (tag ``mg_tune.role=search``) holding the search:
  the spec as artifact ``spec.yaml``, the flattened spec as params, search
  metrics (hypervolume vs trial-epochs), the Pareto plot;
* one **child run** per trial (tags ``mg_tune.role=trial``,
  ``mg_tune.trial_id``, ``mlflow.parentRunId``): the trial's params, its
  metrics with ``step=epoch`` (MLflow's charts), the attribution overlays
  ``overlays/epoch=NNN.png``;
* one MLflow 3 **LoggedModel** per (trial, epoch) -- the checkpoint. It has
  ``source_run_id`` = the trial run, tags ``mg_tune.trial_id``,
  ``mg_tune.epoch``, ``mg_tune.search``, the checkpoint file as its artifact
  ``checkpoint.pt``, and that epoch's metrics linked to it (``model_id``,
  ``step=epoch``). It is finalised ``READY`` only after its checkpoint and
  metrics are stored, so a READY model is a complete (epoch, metrics,
  checkpoint) record. ``checkpoint.pt`` holds no optimizer state (its
  weights in the spec's ``checkpoints.dtype``); the trial's newest epoch also
  holds ``resume.pt`` (:func:`mg_tune.checkpoint.split_for_storage`), deleted
  from an epoch once the next one is READY. A search's retention policy
  (:mod:`mg_tune.search.retention`) may delete the ``checkpoint.pt`` of a
  dominated epoch: its model keeps its metrics and gets the tag
  ``mg_tune.weights_deleted`` saying why.

Decision: LoggedModels, not run artifacts + metric histories
------------------------------------------------------------
Reading every (trial, epoch) point of a search must cost a bounded number of
requests. With run artifacts, the per-epoch values live only in each run's
metric history: MLflow's public client reads those with one
``get_metric_history(run, key)`` per run *and* metric (3,000 requests for
1,000 trials x 3 objectives); ``search_runs`` only returns the *latest* value
of each metric, and the bulk history endpoints are UI-internal (``ajax-api``)
and sample steps. With LoggedModels, ``search_logged_models`` returns each
model with its tags, params and **all its linked metrics** in pages (the
SQL store loads a page with a fixed number of queries; no server-side cap on
the page size, we ask for :data:`PAGE_SIZE`). So a whole search is read with

    1 (experiment) + 1 (parent run) + ceil(trials / PAGE_SIZE) (search_runs)
      + ceil(trials x epochs / PAGE_SIZE) (search_logged_models)

requests -- 13 instead of 3,002 for 1,000 trials x 10 epochs (measured by
``bench/pareto_from_mlflow.py``; docs/benchmarks.md) -- and every epoch's metrics sit
on the very object that holds its checkpoint (the MLflow UI shows them
together on the model page and under the run's "Logged models"). The cost is
~4 small requests per logged epoch instead of ~2; epochs take seconds to
hours, so this is negligible. Consequence: the checkpoint of an epoch is at
``<model artifact_location>/checkpoint.pt``, not under the run's artifacts;
use :func:`download_checkpoint` (or ``checkpoint_uri`` in
:func:`mg_tune.pareto_report.checkpoint_table`).

NaN metrics: MLflow stores a NaN metric linked to a LoggedModel as ``0`` (its
``is_nan`` flag exists only for run metrics). A NaN value is therefore logged
on the run only, and reads back as a missing -- i.e. NaN -- model metric.

Idempotency and restarts
------------------------
``log_epoch`` is idempotent per epoch: an epoch whose model is READY is
skipped (first write wins), a PENDING one (crash mid-epoch) is completed.
The metrics of an epoch are logged with the model's creation timestamp, so a
retried ``log_batch`` writes identical rows, which MLflow de-duplicates: no
duplicate points in the run's metric history either. Transient failures
(connection errors, 5xx / ``TEMPORARILY_UNAVAILABLE``, SQLite "database is
locked") are retried with bounded exponential backoff (:class:`RetryPolicy`),
on top of MLflow's own HTTP retries.

Nothing here imports Ray: the search layer passes a :class:`SearchRun`
(picklable) into trial processes and builds a :class:`TrialLogger` there.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.entities.paged_list import PagedList

from mg_tune.checkpoint import CHECKPOINT_FILE, RESUME_FILE, load_checkpoint

if TYPE_CHECKING:
    from mg_tune.train import EpochResult

# MLflow prints "View run ... at: <tracking URI>/#/..." on every run it ends: that URI may carry a password.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

__all__ = [
    "EPOCH_TAG",
    "FAILURE_TAG",
    "ROLE_TAG",
    "SEARCH_TAG",
    "STOPPED_EARLY_TAG",
    "TRIAL_TAG",
    "RequestCounter",
    "RetryPolicy",
    "SearchRun",
    "TrialLogger",
    "count_requests",
    "check_database",
    "check_tracking_uri",
    "default_tracking_uri",
    "delete_weights",
    "download_checkpoint",
    "download_resume_checkpoint",
    "error_line",
    "experiment_name",
    "find_checkpoint_model",
    "find_search_run",
    "finish_search",
    "finish_stopped_trial",
    "flatten",
    "is_transient",
    "iter_logged_models",
    "iter_runs",
    "log_search_metrics",
    "mark_orphans",
    "overlay_artifact",
    "model_epoch",
    "redact_text",
    "redact_uri",
    "start_search",
]

SEARCH_TAG = "mg_tune.search"
ROLE_TAG = "mg_tune.role"  # "search" | "trial"
TRIAL_TAG = "mg_tune.trial_id"
EPOCH_TAG = "mg_tune.epoch"
FAILURE_TAG = "mg_tune.failure_reason"
STOPPED_EARLY_TAG = "mg_tune.stopped_early"  # the last epoch of a trial a scheduler stopped
PARENT_TAG = "mlflow.parentRunId"
CHECKPOINT_ARTIFACT = CHECKPOINT_FILE
WEIGHTS_DELETED_TAG = "mg_tune.weights_deleted"  # on a LoggedModel whose checkpoint.pt a retention policy deleted: why
SPEC_ARTIFACT = "spec.yaml"
MODEL_TYPE = "mg-tune-checkpoint"
PAGE_SIZE = 1000
"""Results per page of ``search_runs`` / ``search_logged_models``."""

# MLflow's limits (mlflow.utils.validation): keys 250, param values 6000, tag
# values 8000 characters; 100 params/tags per log_batch.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
BATCH = 100

T = TypeVar("T")


# --------------------------------------------------------------------------- URIs


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Experiment tag marking a search's experiment as model training (not GenAI) for MLflow's UI (see :mod:`mg_tune.mlflow_links`)."""


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite file ``mlflow.db`` in the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|signature|sig$|credential|auth", re.IGNORECASE)
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
MASK = "***"


def redact_uri(uri: str) -> str:
    """``uri`` with its secrets replaced by ``***``.

    ``scheme://user:password@host`` keeps the user and masks the password; a
    bare ``scheme://token@host`` masks the whole user part (it is often a
    token); query parameters whose name looks secret (``password``,
    ``access_key``, ``token``, ``signature``, ...) are masked. Anything that
    does not parse as a URI is returned with the same rules applied to the
    URIs it contains.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc and not parts.query:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_KEY.search(k) for k, _ in pairs):
            query = "&".join(f"{quote(k, safe='')}={MASK if _SECRET_KEY.search(k) else quote(v, safe='')}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Apply :func:`redact_uri` to every URI inside ``text`` (used for the spec YAML and params)."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, in one line, when the tracking store cannot be used; writes nothing.

    An ``http(s)://`` server must answer one experiment search (connection
    refused, timeouts and 401/403 are reported at once, not after MLflow's
    minutes of retries); a ``sqlite:///`` file must lie in an existing
    directory; a PostgreSQL/MySQL store must accept a connection. Other
    stores are checked by their first request.

    Raises:
        ValueError: naming the (redacted) URI and the problem.
    """
    import requests

    shown = redact_uri(uri)
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        try:
            response = requests.post(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=timeout)
        except requests.RequestException as exc:
            reason = type(exc).__name__ if isinstance(exc, requests.ConnectionError) else redact_text(str(exc).splitlines()[0])
            raise ValueError(f"tracking URI {shown}: cannot connect ({reason})") from None
        if response.status_code in (401, 403):
            raise ValueError(f"tracking URI {shown}: refused (HTTP {response.status_code}); check the user and password")
        if response.status_code != 200:
            raise ValueError(f"tracking URI {shown}: the server answered HTTP {response.status_code}; is it an MLflow tracking server?")
    elif scheme == "sqlite":
        db = uri[len("sqlite:///") :].split("?", 1)[0]
        if db and db != ":memory:" and not Path(db).parent.is_dir():
            raise ValueError(f"tracking URI {shown}: directory {Path(db).parent} does not exist")
    elif scheme.split("+")[0] in ("postgresql", "mysql"):
        check_database(uri, "tracking URI", timeout)


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (of the driver's error for SQLAlchemy's), secrets masked; else its type."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_text(lines[0]) if lines else type(exc).__name__


def check_database(uri: str, label: str, timeout: float = 10.0) -> None:
    """Connect once to the database at ``uri`` (SQLAlchemy URL) and close again.

    Raises:
        ValueError: ``"<label> <redacted uri>: cannot connect (<reason>)"``.
    """
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # driver errors: refused, unknown host, authentication, missing driver
        raise ValueError(f"{label} {redact_uri(uri)}: cannot connect ({error_line(exc)})") from None


def overlay_artifact(epoch: int) -> str:
    """Run artifact path of an epoch's attribution overlays: ``overlays/epoch=NNN.png``."""
    return f"overlays/epoch={int(epoch):03d}.png"


def experiment_name(search: str) -> str:
    """The MLflow experiment of search ``search``: ``mg-tune/<search>``."""
    return f"mg-tune/{search}"


def _local_artifact_location(tracking_uri: str, name: str) -> str | None:
    """For a SQLite file store: artifacts next to the database (``<dir>/mlartifacts/<name>``).

    MLflow would otherwise default to ``./mlruns`` of whatever directory the
    *creating* process runs in (Ray trials run in their own directories).
    Servers (``http://``) and other stores choose their artifact root themselves.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not db or db == ":memory:":
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return (Path(db).resolve().parent / "mlartifacts" / slug).as_uri()


# --------------------------------------------------------------------------- retries


_PERMANENT = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "CUSTOMER_UNAUTHORIZED",
        "BAD_REQUEST",
        "ENDPOINT_NOT_FOUND",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FEATURE_DISABLED",
        "MALFORMED_REQUEST",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: network errors, timeouts, 5xx/429, locked or restarting databases.

    MLflow reports connection failures as ``MlflowException`` with the default
    ``INTERNAL_ERROR`` code, and database outages (including SQLite "database
    is locked") as ``TEMPORARILY_UNAVAILABLE``; client errors (bad value,
    missing resource, permissions) are permanent.
    """
    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - requests ships with mlflow
        return False
    return isinstance(exc, requests.RequestException)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: wait ``min(maximum, initial·2^k)·U(0.5, 1)`` after failure k.

    At most ``attempts`` calls; the defaults wait at most ~1 minute in total
    before giving up, on top of MLflow's own per-request HTTP retries.
    """

    attempts: int = 7
    initial: float = 0.5
    maximum: float = 20.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(self.attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt + 1 >= self.attempts or not is_transient(exc):
                    raise
                self.sleep(min(self.maximum, self.initial * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")  # pragma: no cover


NO_RETRY = RetryPolicy(attempts=1)


# --------------------------------------------------------------------------- paging helpers


def _pages(fetch: Callable[[str | None], PagedList]) -> Iterator[Any]:
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def iter_runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> Iterator[Run]:
    """All active runs of an experiment matching ``filter_string``, oldest first, in pages of :data:`PAGE_SIZE`."""
    return _pages(
        lambda token: client.search_runs(
            [experiment_id], filter_string, max_results=PAGE_SIZE, order_by=["attributes.start_time ASC"], page_token=token
        )
    )


def iter_logged_models(client: MlflowClient, experiment_id: str, filter_string: str | None = None) -> Iterator[LoggedModel]:
    """All LoggedModels of an experiment (with their tags and metrics), oldest first, in pages of :data:`PAGE_SIZE`.

    Ascending creation order keeps offset paging stable while trials keep
    adding models.
    """
    return _pages(
        lambda token: client.search_logged_models(
            [experiment_id],
            filter_string=filter_string,
            max_results=PAGE_SIZE,
            order_by=[{"field_name": "creation_timestamp", "ascending": True}],
            page_token=token,
        )
    )


def logged_models_in_slices(client: MlflowClient, experiment_id: str, boundaries: Sequence[int], workers: int = 4) -> list[LoggedModel]:
    """All LoggedModels of an experiment, read as concurrent time slices (for a tracking server).

    ``boundaries`` (ms, ascending) cut ``creation_timestamp`` into slices
    ``[-∞, b₁), [b₁, b₂), …, [b_k, +∞)``; each slice is paged like
    :func:`iter_logged_models`, and the slices are requested ``workers`` at a
    time, so the server builds one page while this process parses another.
    Requests: one per page of each slice, at most ``len(boundaries) + 1 +
    models / PAGE_SIZE``. Every model is in exactly one slice.
    """
    edges = [None, *sorted(set(boundaries)), None]
    filters = [_time_slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(filters)))) as pool:
        slices = pool.map(lambda f: list(iter_logged_models(client, experiment_id, f)), filters)
        return [model for part in slices for model in part]


def _time_slice(start: int | None, end: int | None) -> str | None:
    """A LoggedModel filter for ``start <= creation_timestamp < end`` (either side open when None)."""
    parts = ([f"creation_timestamp >= {start}"] if start is not None else []) + ([f"creation_timestamp < {end}"] if end is not None else [])
    return " AND ".join(parts) or None


def _quote(value: str) -> str:
    """A value for an MLflow filter string (single-quoted; quotes are not allowed in ids)."""
    if "'" in value or "\\" in value:
        raise ValueError(f"identifier {value!r} may not contain quotes or backslashes")
    return f"'{value}'"


# --------------------------------------------------------------------------- params


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings → dotted keys (``{"a": {"b": 1}}`` → ``{"a.b": 1}``); other values kept."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    text = redact_text(value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value))
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _as_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Flattened, redacted, truncated to MLflow's key/value limits."""
    return {k[:MAX_KEY]: _param_value(v) for k, v in flatten(params).items()}


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[i : i + BATCH])


def _tag_value(value: str) -> str:
    value = redact_text(value)
    return value if len(value) <= MAX_TAG_VALUE else value[: MAX_TAG_VALUE - 3] + "..."


# --------------------------------------------------------------------------- searches


@dataclass
class SearchRun:
    """Where a search lives in MLflow; small and picklable (it travels into Ray trials)."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    name: str


def find_search_run(client: MlflowClient, experiment_id: str) -> Run | None:
    """The parent run (``mg_tune.role=search``) of an experiment, or ``None``."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{ROLE_TAG}` = 'search'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    return runs[0] if runs else None


def start_search(name: str, spec: dict, spec_text: str, tracking_uri: str, resume: bool) -> SearchRun:
    """Create (or, with ``resume``, reopen) the experiment ``mg-tune/<name>`` and its parent run.

    A new parent run gets tags ``mg_tune.search=<name>``/``mg_tune.role=search``,
    the flattened ``spec`` as params (values redacted and truncated to
    MLflow's limits) and ``spec_text`` (redacted) as artifact ``spec.yaml``.

    Raises:
        ValueError: the search exists and ``resume`` is false, or its
            experiment was deleted.
    """
    client = MlflowClient(tracking_uri)
    exp_name = experiment_name(name)
    experiment = client.get_experiment_by_name(exp_name)
    if experiment is not None and experiment.lifecycle_stage != "active":
        raise ValueError(f"search {name} was deleted in MLflow (experiment {exp_name!r}); restore it or use another --name")
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                exp_name, artifact_location=_local_artifact_location(tracking_uri, exp_name), tags={SEARCH_TAG: name, **EXPERIMENT_KIND}
            )
        except MlflowException as exc:  # created concurrently
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment_id = client.get_experiment_by_name(exp_name).experiment_id
    else:
        experiment_id = experiment.experiment_id

    parent = find_search_run(client, experiment_id)
    if parent is not None:
        if not resume:
            raise ValueError(f"search {name} exists; use --resume or another --name")
        client.update_run(parent.info.run_id, status="RUNNING")
        return SearchRun(tracking_uri, experiment_id, parent.info.run_id, name)

    run = client.create_run(experiment_id, run_name=name, tags={SEARCH_TAG: name, ROLE_TAG: "search"})
    run_id = run.info.run_id
    _log_params(client, run_id, _as_params(spec))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SPEC_ARTIFACT
        path.write_text(redact_text(spec_text), encoding="utf-8")
        client.log_artifact(run_id, str(path))
    return SearchRun(tracking_uri, experiment_id, run_id, name)


def finish_search(run: SearchRun, status: str = "FINISHED") -> None:
    """Terminate the parent run with ``status`` (FINISHED, FAILED or KILLED)."""
    MlflowClient(run.tracking_uri).set_terminated(run.run_id, status)


def set_search_tag(run: SearchRun, key: str, value: str) -> None:
    """Set tag ``key`` of the search's parent run to ``value`` (redacted, cut to MLflow's limit)."""
    RetryPolicy().call(MlflowClient(run.tracking_uri).set_tag, run.run_id, key, _tag_value(value))


def log_search_metrics(run: SearchRun, metrics: Mapping[str, float], step: int) -> None:
    """Log search-level metrics (e.g. normalised hypervolume) on the parent run at ``step`` (e.g. trial-epochs so far)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
    RetryPolicy().call(MlflowClient(run.tracking_uri).log_batch, run.run_id, metrics=items)


def mark_orphans(run: SearchRun, reason: str) -> int:
    """Set every child run of the search still ``RUNNING`` to ``KILLED`` with tag ``mg_tune.failure_reason``.

    Called when a search resumes after its driver died (those trials will be
    restarted as new attempts, which reopen their runs) or when it ends.
    Returns the number of runs marked.
    """
    client = MlflowClient(run.tracking_uri)
    orphans = list(
        iter_runs(client, run.experiment_id, f"tags.`{PARENT_TAG}` = {_quote(run.run_id)} AND attributes.status = 'RUNNING'")
    )
    for child in orphans:
        client.set_tag(child.info.run_id, FAILURE_TAG, _tag_value(reason))
        client.set_terminated(child.info.run_id, "KILLED")
    return len(orphans)


def finish_stopped_trial(run: SearchRun, trial_id: str, epoch: int) -> bool:
    """End the trial run of ``trial_id`` FINISHED with tag ``mg_tune.stopped_early=<epoch>`` if it is still RUNNING.

    For trials a scheduler stopped after ``epoch``: Tune ends them inside
    ``tune.report``, so the trial never finishes its run itself. Their
    checkpoints stay (they are candidates for the front); the newest one's
    ``resume.pt`` goes, as for any finished trial. Returns whether the run
    was finished here.
    """
    client = MlflowClient(run.tracking_uri)
    trial_run = RetryPolicy().call(find_trial_run, client, run, trial_id)
    if trial_run is None or trial_run.info.status != "RUNNING":
        return False
    RetryPolicy().call(client.set_tag, trial_run.info.run_id, STOPPED_EARLY_TAG, str(int(epoch)))
    RetryPolicy().call(client.set_terminated, trial_run.info.run_id, "FINISHED")
    model = RetryPolicy().call(find_checkpoint_model, client, trial_run.info.run_id, int(epoch))
    RetryPolicy().call(_delete_artifact, run.tracking_uri, model, RESUME_FILE)
    return True


# --------------------------------------------------------------------------- trials


_BAD_MODEL_NAME_CHARS = re.compile(r"[/:.%\"']")


def readable_trial_name(config: Any, trial_id: str) -> str:
    """A trial run's name a person can read in MLflow's UI: loss, λ, layer, trial number.

    ``config`` is the trial's ``TrainConfig``; the number is the suffix of
    Ray's trial id (``a1b2c_00007`` → ``t7``), e.g. ``energy λ=0.5 input t7``.
    """
    number = trial_id.rpartition("_")[2]
    suffix = f"t{int(number)}" if number.isdigit() else trial_id
    return f"{config.loss} λ={config.lam:g} {config.layer} {suffix}"


def _model_name(run_name: str, epoch: int) -> str:
    """The LoggedModel of an epoch, URI-safe for ``runs:/<run_id>/<name>``: ``energy λ=0.5 input t7`` → ``energy-lam0p5-input-t7-epoch3``.

    (LoggedModel names may not contain ``/ : . % " '``.)
    """
    slug = run_name.replace("λ=", "lam").replace(" ", "-")
    safe = _BAD_MODEL_NAME_CHARS.sub(lambda m: "p" if m.group() == "." else "_", slug)
    return f"{safe}-epoch{epoch}"


def _prefer(a: LoggedModel | None, b: LoggedModel) -> LoggedModel:
    """Of two models of the same epoch keep the READY one, else the older one."""
    if a is None:
        return b
    a_ready, b_ready = a.status == LoggedModelStatus.READY, b.status == LoggedModelStatus.READY
    if a_ready != b_ready:
        return a if a_ready else b
    return a if a.creation_timestamp <= b.creation_timestamp else b


def model_epoch(model: LoggedModel) -> int | None:
    """The epoch a LoggedModel holds (tag ``mg_tune.epoch``), or ``None`` for models mg-tune did not write."""
    try:
        return int(model.tags[EPOCH_TAG])
    except (KeyError, TypeError, ValueError):
        return None


def _stage(src: Path, folder: Path, name: str) -> Path:
    """``folder/name`` pointing at ``src`` (hard link when possible: checkpoints can be large)."""
    dst = folder / name
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def find_trial_run(client: MlflowClient, search: SearchRun, trial_id: str) -> Run | None:
    """The child run of ``trial_id`` under the search's parent run, or ``None``."""
    query = f"tags.`{TRIAL_TAG}` = {_quote(trial_id)} AND tags.`{PARENT_TAG}` = {_quote(search.run_id)}"
    found = client.search_runs([search.experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"])
    return found[0] if found else None


class TrialLogger:
    """Logs one trial into its child run of a search; safe to rebuild after a crash.

    ``TrialLogger(search, trial_id, params)`` finds the child run tagged
    ``mg_tune.trial_id=trial_id`` under the search's parent run or creates it
    (named ``run_name``, default the trial id; tags ``mg_tune.role=trial``,
    ``mlflow.parentRunId``), sets it RUNNING and
    logs ``params`` (flattened) once: params already on the run are not
    re-logged. Every MLflow call is retried per ``retry``.
    """

    def __init__(self, search: SearchRun, trial_id: str, params: dict, *, retry: RetryPolicy | None = None, run_name: str | None = None) -> None:
        _quote(trial_id)
        self.search = search
        self.trial_id = trial_id
        self.run_name = run_name or trial_id
        self.retry = retry or RetryPolicy()
        self.client = MlflowClient(search.tracking_uri)
        self.run_id: str = self.retry.call(self._open_run, _as_params(params))
        self._models: dict[int, LoggedModel] = {}
        self.retry.call(self._refresh_models)
        self._with_resume = set(self._models)  # epochs that may still hold resume.pt (an earlier process of this trial)

    # -- setup
    def _open_run(self, params: dict[str, str]) -> str:
        run = find_trial_run(self.client, self.search, self.trial_id)
        if run is not None:
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            missing = {k: v for k, v in params.items() if k not in run.data.params}
            _log_params(self.client, run.info.run_id, missing)
            return run.info.run_id
        tags = {TRIAL_TAG: self.trial_id, PARENT_TAG: self.search.run_id, SEARCH_TAG: self.search.name, ROLE_TAG: "trial"}
        run = self.client.create_run(self.search.experiment_id, run_name=self.run_name, tags=tags)
        _log_params(self.client, run.info.run_id, params)
        return run.info.run_id

    def _refresh_models(self) -> None:
        models: dict[int, LoggedModel] = {}
        for model in iter_logged_models(self.client, self.search.experiment_id, f"source_run_id = {_quote(self.run_id)}"):
            epoch = model_epoch(model)
            if epoch is not None and model.status != LoggedModelStatus.FAILED:
                models[epoch] = _prefer(models.get(epoch), model)
        self._models = models

    # -- public API
    def logged_epochs(self) -> set[int]:
        """Epochs whose checkpoint and metrics are completely stored (READY models), read from MLflow."""
        self.retry.call(self._refresh_models)
        return {e for e, m in self._models.items() if m.status == LoggedModelStatus.READY}

    def log_epoch(self, result: EpochResult) -> None:
        """Store one epoch: metrics (``step=epoch``, plus ``epoch``), checkpoint, overlay. Idempotent.

        Steps, each safe to repeat: create the epoch's LoggedModel (PENDING)
        unless one exists; upload ``result.checkpoint`` as its
        ``checkpoint.pt`` (and ``resume.pt`` beside it, if there is one;
        older epochs' ``resume.pt`` are deleted once this epoch is READY); upload ``result.overlay`` as run artifact
        ``overlays/epoch=NNN.png``; ``log_batch`` the metrics on the run,
        linked to the model, timestamped with the model's creation time;
        finalise the model READY. An epoch already READY is skipped.
        """
        self.retry.call(self._log_epoch_once, result)

    def _log_epoch_once(self, result: EpochResult) -> None:
        epoch = int(result.epoch)
        model = self._models.get(epoch)
        if model is not None and model.status == LoggedModelStatus.READY:
            return
        if model is None:
            model = self.client.create_logged_model(
                self.search.experiment_id,
                name=_model_name(self.run_name, epoch),
                source_run_id=self.run_id,
                tags={TRIAL_TAG: self.trial_id, EPOCH_TAG: str(epoch), SEARCH_TAG: self.search.name},
                model_type=MODEL_TYPE,
            )
            self._models[epoch] = model
        with tempfile.TemporaryDirectory() as tmp:
            if result.checkpoint is not None:
                folder = Path(tmp) / "model"
                folder.mkdir()
                _stage(Path(result.checkpoint), folder, CHECKPOINT_ARTIFACT)
                resume = Path(result.checkpoint).with_name(RESUME_FILE)
                if resume.exists():
                    _stage(resume, folder, RESUME_FILE)
                    self._with_resume.add(epoch)
                self.client.log_model_artifacts(model.model_id, str(folder))
            if result.overlay is not None:
                folder, name = overlay_artifact(epoch).split("/")
                self.client.log_artifact(self.run_id, str(_stage(Path(result.overlay), Path(tmp), name)), folder)
        stamp = model.creation_timestamp
        values = {**{k: float(v) for k, v in result.metrics.items()}, "epoch": float(epoch)}
        metrics = [
            Metric(key, value, stamp, epoch, model_id=None if math.isnan(value) else model.model_id, run_id=self.run_id)
            for key, value in values.items()
        ]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self._models[epoch] = self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        for older in sorted(e for e in self._with_resume if e < epoch and e in self._models):
            _delete_artifact(self.search.tracking_uri, self._models[older], RESUME_FILE)
            self._with_resume.discard(older)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set extra tags on the trial run (values stringified, redacted, truncated to MLflow's limit)."""
        items = [RunTag(str(k)[:MAX_KEY], _tag_value(str(v))) for k, v in tags.items()]
        for i in range(0, len(items), BATCH):
            self.retry.call(self.client.log_batch, self.run_id, tags=items[i : i + BATCH])

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Terminate the trial run; with ``reason``, tag ``mg_tune.failure_reason`` (use it with FAILED/KILLED).

        Models of epochs left incomplete (PENDING) are finalised FAILED. A
        FINISHED trial is never run again, so its newest epoch's ``resume.pt``
        is deleted; a FAILED or KILLED one keeps it for a retry or ``--resume``.
        """

        def _finish() -> None:
            if reason is not None:
                self.client.set_tag(self.run_id, FAILURE_TAG, _tag_value(reason))
            for epoch, model in list(self._models.items()):
                if model.status == LoggedModelStatus.PENDING:
                    self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
                    del self._models[epoch]
            if status == "FINISHED":
                for epoch in sorted(self._with_resume & set(self._models)):
                    _delete_artifact(self.search.tracking_uri, self._models[epoch], RESUME_FILE)
                self._with_resume.clear()
            self.client.set_terminated(self.run_id, status)

        self.retry.call(_finish)


# --------------------------------------------------------------------------- checkpoints


def find_checkpoint_model(client: MlflowClient, run_id: str, epoch: int) -> LoggedModel:
    """The READY LoggedModel of ``(run_id, epoch)``; ``FileNotFoundError`` if there is none."""
    experiment_id = client.get_run(run_id).info.experiment_id
    query = f"source_run_id = {_quote(run_id)} AND tags.`{EPOCH_TAG}` = '{int(epoch)}'"
    best: LoggedModel | None = None
    for model in iter_logged_models(client, experiment_id, query):
        if model.status == LoggedModelStatus.READY:
            best = _prefer(best, model)
    if best is None:
        raise FileNotFoundError(f"no checkpoint logged for run {run_id} epoch {epoch}")
    return best


def download_checkpoint(tracking_uri: str, run_id: str, epoch: int, dst: Path) -> Path:
    """Download the checkpoint of ``epoch`` of trial run ``run_id`` and return its local path.

    ``dst`` is a directory (the file lands in ``dst/checkpoint.pt``) or, if it
    ends in ``.pt``, the file path itself. The file is moved into place
    atomically. Load it with :func:`mg_tune.checkpoint.load_checkpoint`.

    Raises:
        FileNotFoundError: no READY model of that epoch, or its weights were
            deleted by the search's retention policy (the message says why).
    """
    model = find_checkpoint_model(MlflowClient(tracking_uri), run_id, epoch)
    if WEIGHTS_DELETED_TAG in model.tags:
        raise FileNotFoundError(f"the weights of run {run_id} epoch {epoch} were deleted by the search's retention policy: {model.tags[WEIGHTS_DELETED_TAG]}")
    dst = Path(dst)
    target = dst if dst.suffix == ".pt" else dst / CHECKPOINT_ARTIFACT
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _download(tracking_uri, model, CHECKPOINT_ARTIFACT, Path(tmp)).replace(target)
    return target


def download_resume_checkpoint(tracking_uri: str, run_id: str, epoch: int, dst: Path) -> Path:
    """Download ``checkpoint.pt`` and ``resume.pt`` of ``epoch`` into the directory ``dst``; the path of ``checkpoint.pt``.

    :func:`mg_tune.checkpoint.load_resumable` (the trainer's ``resume_from``) joins the two.

    Raises:
        FileNotFoundError: the epoch has no ``resume.pt`` and no optimizer
            state in ``checkpoint.pt`` (only a trial's newest epoch keeps it).
    """
    stored = download_checkpoint(tracking_uri, run_id, epoch, Path(dst))
    model = find_checkpoint_model(MlflowClient(tracking_uri), run_id, epoch)
    with tempfile.TemporaryDirectory(dir=stored.parent) as tmp:
        try:
            _download(tracking_uri, model, RESUME_FILE, Path(tmp)).replace(stored.with_name(RESUME_FILE))
        except (OSError, MlflowException):  # not there: a checkpoint of an older layout holds its optimizer state, or none does
            if load_checkpoint(stored)["optimizer"] is None:
                raise FileNotFoundError(f"run {run_id} epoch {epoch} has no {RESUME_FILE}: only a trial's newest epoch keeps the state to continue training from") from None
    return stored


def delete_weights(tracking_uri: str, model: LoggedModel, reason: str) -> None:
    """Delete ``checkpoint.pt`` (and any ``resume.pt``) of a LoggedModel, keeping its metrics; tag it :data:`WEIGHTS_DELETED_TAG` = ``reason`` first."""
    MlflowClient(tracking_uri).set_logged_model_tags(model.model_id, {WEIGHTS_DELETED_TAG: _tag_value(reason)})
    for name in (CHECKPOINT_ARTIFACT, RESUME_FILE):
        _delete_artifact(tracking_uri, model, name)


def _download(tracking_uri: str, model: LoggedModel, name: str, folder: Path) -> Path:
    import mlflow.artifacts

    uri = f"{model.artifact_location.rstrip('/')}/{name}"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking_uri))


def _delete_artifact(tracking_uri: str, model: LoggedModel, name: str) -> None:
    """Delete one artifact file of a LoggedModel; a file that is not there is no error."""
    repository = get_artifact_repository(model.artifact_location, tracking_uri=tracking_uri)
    try:
        repository.delete_artifacts(name)
    except MlflowException as exc:
        if exc.get_http_status_code() != 404:
            raise


# --------------------------------------------------------------------------- request counting


@dataclass
class RequestCounter:
    """Tracking-store calls made inside :func:`count_requests`.

    ``store`` counts outermost public calls on the tracking store (one per
    REST request against a server; one per query batch against a SQL store),
    ``http`` the HTTP requests actually sent (0 with a SQL store).
    """

    calls: Counter = field(default_factory=Counter)
    http: int = 0

    @property
    def store(self) -> int:
        return sum(self.calls.values())


_COUNT_LOCK = threading.Lock()
_MISSING = object()


@contextlib.contextmanager
def count_requests() -> Iterator[RequestCounter]:
    """Count MLflow tracking-store calls and HTTP requests made (by any thread) inside the block.

    Patches the public methods of MLflow's SQL and REST tracking stores and
    ``mlflow.utils.rest_utils.http_request`` for the duration; nested store
    calls (a store method calling another) count once. For tests and benches.
    """
    import mlflow.utils.rest_utils as rest_utils
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    counter = RequestCounter()
    depth = threading.local()
    saved: list[tuple[Any, str, Any]] = []

    def wrap(name: str, fn: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "level", 0)
            if level == 0:
                with _COUNT_LOCK:
                    counter.calls[name] += 1
            depth.level = level + 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth.level = level

        return counted

    def http(*args: Any, **kwargs: Any) -> Any:
        with _COUNT_LOCK:
            counter.http += 1
        return original_http(*args, **kwargs)

    classes: list[type] = []
    todo: list[type] = [SqlAlchemyStore, RestStore]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    for cls in classes:
        for name in dir(cls):
            if name.startswith("_"):
                continue
            static = inspect.getattr_static(cls, name)
            if isinstance(static, (staticmethod, classmethod, property, type)) or not callable(static):
                continue
            saved.append((cls, name, vars(cls).get(name, _MISSING)))
            setattr(cls, name, wrap(name, static))
    original_http = rest_utils.http_request
    rest_utils.http_request = http
    try:
        yield counter
    finally:
        rest_utils.http_request = original_http
        for cls, name, attr in reversed(saved):
            if attr is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, attr)

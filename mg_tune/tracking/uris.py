"""Tracking URIs: the default store, secrets masked in URIs and text, checking a store before use.

Passwords leave URIs at the boundary (:func:`mg_tune.tracking.credentials.move_credentials`);
:func:`redact_uri` remains for text mg-tune does not control (a driver's error message, a
URI given to a function without passing the boundary).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from mg_tune.textfiles import first_line

__all__ = ["REACHABILITY_TIMEOUT_S", "check_database", "check_tracking_uri", "default_tracking_uri", "error_line", "redact_text", "redact_uri"]

REACHABILITY_TIMEOUT_S = 10.0
"""Seconds :func:`check_tracking_uri` waits for a tracking server's (or database's) first answer.

One request, no retries: an unreachable server is reported in one line within this bound instead of
after MLflow's own HTTP retries (minutes by default; they follow ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, ``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER`` and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` and still apply to every request after the check)."""


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite file ``mlflow.db`` in the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|signature|sig$|credential|auth", re.IGNORECASE)
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
MASK = "***"
_DATABASE_SCHEMES = ("postgresql", "postgres", "mysql")


def redact_uri(uri: str) -> str:
    """``uri`` with its secrets replaced by ``***``.

    ``scheme://user:password@host`` keeps the user and masks the password; a
    bare ``scheme://token@host`` masks the whole user part (it is often a
    token), but for a database (``postgresql://user@host/db``, the form a URI
    has after :func:`~mg_tune.tracking.move_credentials`) it is a user name and stays; query parameters whose name looks secret (``password``,
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
        database = parts.scheme.split("+")[0].lower() in _DATABASE_SCHEMES  # there a bare user is a role name, not a token
        netloc = f"{user}:{MASK}@{host}" if sep else netloc if database else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_KEY.search(k) for k, _ in pairs):
            query = "&".join(f"{quote(k, safe='')}={MASK if _SECRET_KEY.search(k) else quote(v, safe='')}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Apply :func:`redact_uri` to every URI inside ``text`` (used for the spec YAML and params)."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def check_tracking_uri(uri: str, timeout: float = REACHABILITY_TIMEOUT_S) -> None:
    """Fail fast, in one line, when the tracking store cannot be used; writes nothing.

    An ``http(s)://`` server must answer one experiment search within
    ``timeout`` seconds, without retries (connection refused, unknown host,
    no answer, 401/403 are reported at once, not after MLflow's minutes of
    retries); a ``sqlite:///`` file must lie in an existing directory; a
    PostgreSQL/MySQL store must accept a connection. Other stores are checked
    by their first request. Every command that talks to MLflow passes here
    first (``mg-tune search`` before Ray starts).

    Raises:
        ValueError: naming the (redacted) URI and the problem.
    """
    import requests

    shown = redact_uri(uri)
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        url, auth = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search", None
        try:
            response = requests.post(url, json={"max_results": 1}, timeout=timeout)
            if response.status_code == 401:  # MLflow (slow to import) is asked for the credentials only when the server wants them
                from mlflow.utils.credentials import read_mlflow_creds

                creds = read_mlflow_creds()  # what MLflow's client sends: $MLFLOW_TRACKING_USERNAME/PASSWORD, else ~/.mlflow/credentials
                if creds.username and creds.password:
                    auth = (creds.username, creds.password)
                    response = requests.post(url, json={"max_results": 1}, timeout=timeout, auth=auth)
        except requests.RequestException as exc:
            raise ValueError(f"tracking URI {shown}: cannot connect ({_connection_problem(exc, timeout)})") from None
        if response.status_code in (401, 403):
            given = "the credentials given were refused" if auth else "no credentials were given"
            raise ValueError(
                f"tracking URI {shown}: refused (HTTP {response.status_code}, {given}); set $MLFLOW_TRACKING_USERNAME and "
                "$MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials"
            )
        if response.status_code != 200:
            raise ValueError(f"tracking URI {shown}: the server answered HTTP {response.status_code}; is it an MLflow tracking server?")
    elif scheme == "sqlite":
        db = uri[len("sqlite:///") :].split("?", 1)[0]
        if db and db != ":memory:" and not Path(db).parent.is_dir():
            raise ValueError(f"tracking URI {shown}: directory {Path(db).parent} does not exist")
    elif scheme.split("+")[0] in ("postgresql", "mysql"):
        check_database(uri, "tracking URI", timeout)


def _connection_problem(exc: BaseException, timeout: float) -> str:
    """What went wrong under a ``requests`` error, in words: connection refused, unknown host, no answer in time."""
    import socket

    import requests

    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    stack, seen = [exc], set()
    while stack:  # requests wraps urllib3's MaxRetryError, whose reason wraps the socket's error
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return "unknown host"
        if isinstance(error, (TimeoutError, socket.timeout)):
            return f"no answer within {timeout:g} s"
        stack += [getattr(error, "reason", None), error.__cause__, error.__context__, *(a for a in error.args if isinstance(a, BaseException))]
    return redact_text(first_line(str(exc))) or type(exc).__name__


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (of the driver's error for SQLAlchemy's), secrets masked; else its type."""
    line = first_line(str(getattr(exc, "orig", None) or exc))
    return redact_text(line) if line else type(exc).__name__


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

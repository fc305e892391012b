"""Credentials out of URIs: the one boundary where a password a user typed into a URI leaves it.

A user may write ``http://admin:pw@host:5000`` (an MLflow server with basic
auth), ``postgresql://optuna:pw@db/optuna`` (an Optuna study or MLflow SQL
store) or ``s3://bucket/ray?access_key=A&secret_key=S`` (Ray Tune's storage).
:func:`move_credentials` takes such a URI, returns it without the secret and
hands the secret to the mechanism the library that opens the URI reads:

=====================================  ==========================================  ===========================
URI                                    what is kept                                where the secret goes
=====================================  ==========================================  ===========================
``http(s)://user:pw@host``             ``http(s)://host``                          ``MLFLOW_TRACKING_USERNAME`` /
                                                                                   ``MLFLOW_TRACKING_PASSWORD``
``postgresql[+drv]://user:pw@h:p/db``  ``postgresql[+drv]://user@h:p/db``          line ``h:p:db:user:pw`` of a
                                                                                   private ``$PGPASSFILE``
``s3://b/p?access_key=A&secret_key=S`` ``s3://b/p`` (other parameters kept)        ``AWS_ACCESS_KEY_ID`` /
                                                                                   ``AWS_SECRET_ACCESS_KEY`` /
                                                                                   ``AWS_SESSION_TOKEN``
=====================================  ==========================================  ===========================

Everything else (no secret, ``sqlite:``, a path) comes back unchanged, and a
URI already stripped is a fixed point: the function is idempotent.

So the URIs mg-tune keeps (spec fields, :class:`~mg_tune.tracking.SearchRun`,
Optuna's ``RDBStorage``, Ray Tune's ``storage_path``) never hold a password,
and whatever pickles them (Ray's ``tuner.pkl`` and searcher state, the object
store) or logs them (params, ``spec.yaml``) holds none either.

The password file: libpq (psycopg) reads one file, ``$PGPASSFILE`` or else
``~/.pgpass``, and takes the first line matching ``host:port:db:user`` (each
field may be ``*``). Passwords are moved into a file of this process (mode
0600, in ``$XDG_RUNTIME_DIR`` or the temp directory, deleted at exit): its
lines first, then those of the file libpq read before, so a URI that relied
on ``~/.pgpass`` still connects. Being keyed by host, port, database and user,
one file serves a tracking store and a study storage with different
passwords, which one ``PGPASSWORD`` (used for every connection) could not.

Ray's workers see the moved secrets only when they inherit this process's
environment: a Ray started by this process after the move (``mg-tune search``
on one machine). A cluster started elsewhere needs them in its own
environment (a submitted search refuses passwords in URIs,
:func:`mg_tune.jobs.client.check_no_secrets`).

MySQL: no MySQL driver is installed with mg-tune, and neither PyMySQL nor
mysqlclient reads a password from the environment, so a MySQL URI with a
password is refused (:class:`ValueError`) rather than carried along.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["MLFLOW_PASSWORD_ENV", "MLFLOW_USERNAME_ENV", "S3_KEY_ENV", "move_credentials", "password_file"]

MLFLOW_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
S3_KEY_ENV = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN"}
"""Query parameters of an ``s3://`` URI (pyarrow's ``FileSystem.from_uri``) → the AWS credential chain's variables."""

_PASSFILE: Path | None = None
"""This process's password file, once a PostgreSQL password was moved into it."""


def move_credentials(uri: str, label: str = "URI") -> str:
    """``uri`` without its secret, the secret handed to the library's own mechanism; see the module docstring.

    Args:
        uri: a URI as the user typed it.
        label: what ``uri`` is (``"tracking_uri"``, ``"--backend-store-uri"``), for the error message.

    Raises:
        ValueError: a secret no library here can read from elsewhere (a MySQL
            password); the message holds the URI without the secret.
    """
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URI (a bad port, brackets): nothing this function can strip
        return uri
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and password is not None:
        os.environ[MLFLOW_USERNAME_ENV] = unquote(parts.username or "")
        os.environ[MLFLOW_PASSWORD_ENV] = unquote(password)
        return urlunsplit(parts._replace(netloc=_host_part(parts.netloc)))
    if scheme.split("+")[0] in ("postgresql", "postgres") and password is not None:
        _add_pgpass_line(parts, unquote(password))
        return urlunsplit(parts._replace(netloc=f"{_user_part(parts.netloc)}@{_host_part(parts.netloc)}"))
    if scheme.split("+")[0] == "mysql" and password is not None:
        stripped = urlunsplit(parts._replace(netloc=f"{_user_part(parts.netloc)}@{_host_part(parts.netloc)}"))
        raise ValueError(f"{label} {stripped}: a MySQL password in the URI is not supported (no MySQL driver reads it from elsewhere); use PostgreSQL or SQLite")
    if scheme in ("s3", "s3a") and parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        secrets = {k: v for k, v in pairs if k in S3_KEY_ENV}
        if secrets:
            for key, value in secrets.items():
                os.environ[S3_KEY_ENV[key]] = value
            query = urlencode([(k, v) for k, v in pairs if k not in S3_KEY_ENV], safe=":/")
            return urlunsplit(parts._replace(query=query))
    return uri


def password_file() -> Path | None:
    """The password file :func:`move_credentials` wrote in this process (``$PGPASSFILE``), or None."""
    return _PASSFILE


def _user_part(netloc: str) -> str:
    return netloc.rpartition("@")[0].partition(":")[0]


def _host_part(netloc: str) -> str:
    return netloc.rpartition("@")[2]


def _pgpass_field(value: str | None) -> str:
    """A field of a password-file line: ``*`` when absent; ``\\`` and ``:`` escaped (libpq's rules)."""
    return "*" if not value else value.replace("\\", "\\\\").replace(":", "\\:")


def _add_pgpass_line(parts, password: str) -> None:
    """Put ``host:port:db:user:password`` first in this process's password file and point ``$PGPASSFILE`` at it."""
    global _PASSFILE
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # several hosts (h1:5432,h2:5433): match any
        host, port = None, None
    database = unquote(parts.path.lstrip("/")).split("/")[0]
    line = ":".join(_pgpass_field(v) for v in (host, str(port) if port else None, database, unquote(parts.username or ""))) + ":" + _pgpass_field(password)
    previous = os.environ.get("PGPASSFILE") or str(Path.home() / ".pgpass")
    if _PASSFILE is None:
        directory = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        fd, name = tempfile.mkstemp(prefix="mg-tune-pgpass-", dir=directory if os.path.isdir(directory) else None)  # mode 0600
        os.close(fd)
        _PASSFILE = Path(name)
        atexit.register(_PASSFILE.unlink, missing_ok=True)
    inherited = [] if previous == str(_PASSFILE) else _read_lines(Path(previous))
    lines = list(dict.fromkeys([line, *_read_lines(_PASSFILE), *inherited]))  # libpq takes the first match: the newest first
    _PASSFILE.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    os.chmod(_PASSFILE, 0o600)
    os.environ["PGPASSFILE"] = str(_PASSFILE)


def _read_lines(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, UnicodeDecodeError):
        return []


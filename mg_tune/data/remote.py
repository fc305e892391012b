"""Real data sets stored in S3: ``DataConfig.root = "s3://bucket/prefix"``.

Every process that builds a split of such a data set first mirrors the prefix
into a local cache on its node, then loads from there exactly as from a local
copy (the loaders never see the URI)::

    s3://<bucket>/<prefix>  ->  <cache>/datasets/<bucket>/<prefix>
    <cache> = $MG_TUNE_CACHE, else ~/.cache/mg-tune

The mirror (:func:`sync_s3`) lists the prefix and downloads only the objects
that are missing locally or whose size or modification time differs from the
listing; each file is written to a temporary name and renamed into place, so
a reader never sees half a file. A lock file next to the cache directory
(``filelock`` when installed, else ``fcntl``) serialises the processes of one
node: the first trial downloads, the others wait and then find everything
present (one listing each, no downloads). Within a process the result is
remembered, so the four splits of a trial list the bucket once. Local files
whose object was deleted from S3 are left in place.

Endpoint: the ``endpoint_url`` argument, else ``$MLFLOW_S3_ENDPOINT_URL``, else
``$AWS_ENDPOINT_URL``, else AWS. Credentials come from boto3's usual chain.
A bucket, prefix or credential problem raises :class:`DatasetError` with one
line naming the URI.

Waterbirds: only the prefix is mirrored, so its bird boxes must lie under it
(``boxes.csv`` or ``CUB_200_2011/`` inside the data set directory), not next to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mg_tune.data.errors import DatasetError

SCHEME = "s3://"
ENDPOINT_VARIABLES = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
DOWNLOAD_THREADS = 8
MULTIPART_BYTES = 64 * 2**20
CHUNK_BYTES = 2**20

_synced: dict[tuple[str, str | None], Path] = {}
_synced_lock = threading.Lock()


@dataclass(frozen=True)
class SyncStats:
    """What one :func:`sync_s3` did."""

    listed: int
    downloaded: int
    bytes: int


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is an ``s3://`` URI."""
    return str(root).startswith(SCHEME)


def split_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix without surrounding slashes; may be empty)."""
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise DatasetError(uri, "S3 URI has no bucket (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def cache_dir() -> Path:
    """``$MG_TUNE_CACHE`` or ``~/.cache/mg-tune``."""
    return Path(os.environ.get("MG_TUNE_CACHE") or Path.home() / ".cache" / "mg-tune").expanduser()


def cache_path(uri: str) -> Path:
    """Where ``s3://bucket/prefix`` is mirrored: ``<cache>/datasets/<bucket>/<prefix>``."""
    bucket, prefix = split_uri(uri)
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise DatasetError(uri, "S3 prefix may not contain '.' or '..' components")
    return cache_dir().joinpath("datasets", bucket, *parts)


def endpoint(endpoint_url: str | None = None) -> str | None:
    """``endpoint_url``, else the first of ``$MLFLOW_S3_ENDPOINT_URL`` / ``$AWS_ENDPOINT_URL`` that is set."""
    if endpoint_url:
        return endpoint_url
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)


def local_root(root: str | os.PathLike[str], endpoint_url: str | None = None) -> Path:
    """A local directory holding the data set at ``root``.

    Local paths pass through (``~`` expanded); an ``s3://`` URI is mirrored into
    :func:`cache_path` by :func:`sync_s3` once per process and the cache
    directory is returned.
    """
    root = str(root)
    if not is_remote(root):
        return Path(root).expanduser()
    key = (root.rstrip("/"), endpoint(endpoint_url))
    with _synced_lock:
        if key not in _synced:
            dest = cache_path(root)
            sync_s3(root, dest, key[1])
            _synced[key] = dest
        return _synced[key]


def forget_synced() -> None:
    """Forget which URIs this process has mirrored (the next :func:`local_root` lists the bucket again)."""
    with _synced_lock:
        _synced.clear()


@contextlib.contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on the file ``path`` (``filelock``, else ``fcntl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock
    except ImportError:
        import fcntl

        with open(path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    with FileLock(str(path)):
        yield


def _problem(exc: Exception) -> str:
    """A short description of a boto3/botocore error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        err = response["Error"]
        code = err.get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return "no such bucket"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}; check the AWS credentials)"
        return f"S3 error {code}: {err.get('Message', '')}".strip()
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no AWS credentials found (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
    return f"cannot read from S3 ({name}: {exc})"


def _objects(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int, float]]:
    """``(relative path, size, mtime)`` of every object under ``prefix/`` (directory markers skipped)."""
    start = f"{prefix}/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(start) :]
            if not rel or rel.endswith("/"):
                continue
            yield rel, int(obj["Size"]), obj["LastModified"].timestamp()


def _fresh(path: Path, size: int, mtime: float) -> bool:
    """The cached file has the object's size and modification time (whole seconds)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == size and int(st.st_mtime) == int(mtime)


def sync_s3(uri: str, dest: str | os.PathLike[str], endpoint_url: str | None = None) -> SyncStats:
    """Mirror ``s3://bucket/prefix`` into ``dest`` (see module doc); raises DatasetError naming ``uri``."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    dest = Path(dest)
    config = Config(max_pool_connections=DOWNLOAD_THREADS, retries={"max_attempts": 3, "mode": "standard"})
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint(endpoint_url), config=config)  # fresh credentials
    except (BotoCoreError, ClientError, ValueError) as exc:
        raise DatasetError(uri, _problem(exc)) from None

    def fetch(item: tuple[str, int, float]) -> int:
        rel, size, mtime = item
        parts = PurePosixPath(rel).parts
        if any(p in (".", "..") for p in parts):
            raise DatasetError(f"{uri.rstrip('/')}/{rel}", "object key has '.' or '..' components")
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            key = f"{prefix}/{rel}" if prefix else rel
            if size > MULTIPART_BYTES:  # managed transfer: parallel ranged GETs (after a HEAD)
                client.download_file(bucket, key, str(tmp))
            else:  # one GET per file
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(body, f, CHUNK_BYTES)
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    with node_lock(dest.with_name(f".{dest.name}.lock")):
        try:
            listing = list(_objects(client, bucket, prefix))
            if not listing:
                raise DatasetError(uri, "no objects under this S3 prefix")
            stale = [item for item in listing if not _fresh(dest.joinpath(*PurePosixPath(item[0]).parts), item[1], item[2])]
            if stale:
                with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
                    sizes = list(pool.map(fetch, stale))
            else:
                sizes = []
        except (BotoCoreError, ClientError) as exc:
            raise DatasetError(uri, _problem(exc)) from None
    return SyncStats(listed=len(listing), downloaded=len(sizes), bytes=sum(sizes))

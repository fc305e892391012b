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
``$AWS_ENDPOINT_URL``, else AWS (:func:`mg_tune.s3.endpoint`). Credentials come from
boto3's usual chain.
A bucket, prefix or credential problem raises :class:`DatasetError` with one
line naming the URI.

Waterbirds: only the prefix is mirrored, so its bird boxes must lie under it
(``boxes.csv`` or ``CUB_200_2011/`` inside the data set directory), not next to it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mg_tune import s3
from mg_tune.data.errors import DatasetError
from mg_tune.s3 import endpoint

DOWNLOAD_THREADS = 8

_synced: dict[tuple[str, str | None], Path] = {}
_synced_lock = threading.Lock()


@dataclass(frozen=True)
class SyncStats:
    """What one :func:`sync_s3` did."""

    listed: int
    downloaded: int
    bytes: int


is_remote = s3.is_s3
"""Whether a root is an ``s3://`` URI."""


def split_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix without surrounding slashes; may be empty)."""
    bucket, prefix = s3.split_uri(uri)
    if not bucket:
        raise DatasetError(uri, "S3 URI has no bucket (expected s3://bucket/prefix)")
    return bucket, prefix


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


def _fresh(path: Path, size: int, mtime: float) -> bool:
    """The cached file has the object's size and modification time (whole seconds)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == size and int(st.st_mtime) == int(mtime)


def sync_s3(uri: str, dest: str | os.PathLike[str], endpoint_url: str | None = None) -> SyncStats:
    """Mirror ``s3://bucket/prefix`` into ``dest`` (see module doc); raises DatasetError naming ``uri``."""
    bucket, prefix = split_uri(uri)
    dest = Path(dest)
    errors = s3.boto_errors()
    try:
        client = s3.client(endpoint_url, max_pool_connections=DOWNLOAD_THREADS, max_attempts=3)  # fresh credentials
    except (*errors, ValueError) as exc:
        raise DatasetError(uri, s3.describe_error(exc)) from None

    def fetch(item: tuple[str, int, float]) -> int:
        rel, size, mtime = item
        parts = PurePosixPath(rel).parts
        if any(p in (".", "..") for p in parts):
            raise DatasetError(f"{uri.rstrip('/')}/{rel}", "object key has '.' or '..' components")
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            s3.download(client, bucket, s3.key(prefix, rel), tmp, size)
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    with node_lock(dest.with_name(f".{dest.name}.lock")):
        try:
            listing = list(s3.list_objects(client, bucket, prefix))
            if not listing:
                raise DatasetError(uri, "no objects under this S3 prefix")
            stale = [item for item in listing if not _fresh(dest.joinpath(*PurePosixPath(item[0]).parts), item[1], item[2])]
            if stale:
                with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
                    sizes = list(pool.map(fetch, stale))
            else:
                sizes = []
        except errors as exc:
            raise DatasetError(uri, s3.describe_error(exc)) from None
    return SyncStats(listed=len(listing), downloaded=len(sizes), bytes=sum(sizes))

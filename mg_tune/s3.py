"""The S3 plumbing mg-tune shares: ``s3://`` URIs, the endpoint, the client, error texts, prefixes.

Two features talk to S3, each with its own messages and policy on top of this module:
the data cache (:mod:`mg_tune.data.remote`: mirrors ``DataConfig.root = "s3://..."``)
and exports (:mod:`mg_tune.export._targets`: ``mg-tune export --to s3://...``).

Endpoint (:func:`endpoint`): the ``endpoint_url`` argument, else
``$MLFLOW_S3_ENDPOINT_URL``, else ``$AWS_ENDPOINT_URL``, else AWS. Credentials come from
boto3's usual chain; every :func:`client` comes from a fresh ``boto3`` session, so it
reads them anew. ``boto3`` is imported when a client is made, never at import time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

SCHEME = "s3://"
ENDPOINT_VARIABLES = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
MULTIPART_BYTES = 64 * 2**20
"""Objects larger than this are downloaded by boto3's managed transfer (parallel ranged GETs after a HEAD)."""
CHUNK_BYTES = 2**20


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is an ``s3://`` URI."""
    return str(uri).startswith(SCHEME)


def split_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix``: the prefix without surrounding slashes; either may be empty."""
    bucket, _, prefix = uri.removeprefix(SCHEME).partition("/")
    return bucket, prefix.strip("/")


def key(prefix: str, name: str) -> str:
    """The key of ``name`` under ``prefix`` (``prefix/name``, or ``name`` at the bucket's root)."""
    return f"{prefix}/{name}" if prefix else name


def endpoint(endpoint_url: str | None = None) -> str | None:
    """``endpoint_url``, else the first of ``$MLFLOW_S3_ENDPOINT_URL`` / ``$AWS_ENDPOINT_URL`` that is set (None: AWS)."""
    if endpoint_url:
        return endpoint_url
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)


def client(endpoint_url: str | None = None, *, max_pool_connections: int | None = None, max_attempts: int | None = None) -> Any:
    """A boto3 S3 client from a fresh session, at :func:`endpoint` ``(endpoint_url)``.

    ``max_pool_connections`` and ``max_attempts`` (botocore's ``standard`` retry mode)
    set the client's ``Config`` where given; otherwise botocore's defaults apply.
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {}
    if max_pool_connections is not None:
        options["max_pool_connections"] = max_pool_connections
    if max_attempts is not None:
        options["retries"] = {"max_attempts": max_attempts, "mode": "standard"}
    return boto3.session.Session().client("s3", endpoint_url=endpoint(endpoint_url), config=Config(**options) if options else None)


def boto_errors() -> tuple[type[Exception], ...]:
    """The exceptions a boto3 call raises for S3, network and credential problems."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def error_detail(exc: Exception) -> str:
    """S3's own words for a boto error: ``"<Code> <Message>"`` of a service error, else the exception's text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # a service error (ClientError)
        error = response.get("Error", {})
        return f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
    return str(exc)


def describe_error(exc: Exception) -> str:
    """A short description of a boto error for a user: what is wrong and, for credentials, what to set."""
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


def list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int, float]]:
    """``(path relative to prefix, size, mtime)`` of every object under ``prefix/`` (directory markers skipped)."""
    start = f"{prefix}/" if prefix else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(start) :]
            if not rel or rel.endswith("/"):
                continue
            yield rel, int(obj["Size"]), obj["LastModified"].timestamp()


def download(s3: Any, bucket: str, object_key: str, path: str | os.PathLike[str], size: int | None = None) -> None:
    """Download one object to ``path``: one GET when its ``size`` is known and small, else boto3's managed transfer."""
    if size is None or size > MULTIPART_BYTES:
        s3.download_file(bucket, object_key, str(path))
        return
    body = s3.get_object(Bucket=bucket, Key=object_key)["Body"]
    with open(path, "wb") as f:
        shutil.copyfileobj(body, f, CHUNK_BYTES)


def download_files(s3: Any, bucket: str, prefix: str, names: Iterable[str], folder: Path) -> None:
    """Download the objects ``prefix/<name>`` into ``folder/<name>``, in order."""
    for name in names:
        download(s3, bucket, key(prefix, name), folder / name)


def upload_files(s3: Any, folder: Path, names: Iterable[str], bucket: str, prefix: str, sent: Callable[[int], None] | None = None) -> None:
    """Upload ``folder/<name>`` to ``prefix/<name>``, in order (so the last name can mark a complete upload).

    ``sent(n)``: boto3's transfer ``Callback``, called (from its threads) with each chunk's bytes as it is sent.
    """
    for name in names:
        s3.upload_file(str(folder / name), bucket, key(prefix, name), Callback=sent)

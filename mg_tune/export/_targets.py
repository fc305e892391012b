"""Where a package goes: a new local directory (one rename) or an ``s3://`` prefix (``metrics.json`` last)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mg_tune import s3
from mg_tune.checkpoint import CHECKPOINT_FILE
from mg_tune.export._package import EXPORT_FILES, METRICS_FILE
from mg_tune.output import NO_PROGRESS, ProgressBars
from mg_tune.rebuild import CONFIG_FILE, MODEL_FILE
from mg_tune.tracking import redact_uri


def _exported_model_id(text: str) -> str | None:
    """The ``model_id`` recorded in a ``metrics.json`` text (None if it is not one)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record.get("model_id") if isinstance(record, dict) else None


def _refuse_foreign(uri: str, names: list[str], model_id: str | None, wanted: str, force: bool) -> None:
    """Refuse a non-empty target: always if it holds anything but package files; an earlier export unless ``force``."""
    if not names:
        return
    if set(names) - set(EXPORT_FILES):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(f"target {uri} is not empty and holds no export (found {shown}); choose a new or empty location")
    if not force:
        which = "of this checkpoint" if model_id == wanted else f"of model {model_id}" if model_id else "without metrics.json"
        raise ValueError(f"target {uri} holds an earlier export ({which}); add --force to replace it")


@dataclass(frozen=True)
class _LocalTarget:
    """A local package directory (absolute, not resolved: the path the user named)."""

    path: Path

    @classmethod
    def parse(cls, target: str | os.PathLike[str]) -> _LocalTarget:
        """Refuse ``..`` components and relative targets that symlinks lead out of the current directory."""
        path = Path(target).expanduser()
        if ".." in path.parts:
            raise ValueError(f"target {target} contains '..'; name the directory without parent references")
        if not path.is_absolute():
            root = Path.cwd().resolve()
            resolved = (root / path).resolve()
            if not resolved.is_relative_to(root):
                raise ValueError(f"target {target} leads to {resolved} through a symlink, outside the current directory {root}")
            path = root / path
        return cls(path)

    @property
    def uri(self) -> str:
        return str(self.path)

    def check(self, model_id: str, force: bool = False) -> None:
        """Refuse a symlink, a file, or a non-empty directory (an earlier export is replaced with ``force``)."""
        if self.path.is_symlink():
            raise ValueError(f"target {self.path} is a symlink (to {os.readlink(self.path)}); name a real directory")
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise ValueError(f"target {self.path} exists and is not a directory")
        entries = list(self.path.iterdir())
        links = [e.name for e in entries if e.is_symlink() or not e.is_file()]
        if links:
            raise ValueError(f"target {self.path} holds {links[0]}, which is not a regular file; refusing to write there")
        metrics = self.path / METRICS_FILE
        model_id_found = _exported_model_id(metrics.read_text(encoding="utf-8", errors="replace")) if metrics.is_file() else None
        _refuse_foreign(self.uri, [e.name for e in entries], model_id_found, model_id, force)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory next to the target (same file system, so publishing is a rename)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        except OSError as exc:
            raise ValueError(f"cannot write target {self.path}: {exc.strerror or exc}") from None
        try:
            folder.chmod(0o755)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path) -> None:
        """Rename the staged directory into place, or replace the files of an earlier export (``check(force=True)``)."""
        if not self.path.exists() or not any(self.path.iterdir()):
            staged.replace(self.path)
            return
        for name in EXPORT_FILES:
            (staged / name).replace(self.path / name)


@dataclass(frozen=True)
class _S3Location:
    """``s3://bucket/prefix`` and the endpoint to reach it."""

    bucket: str
    prefix: str
    endpoint_url: str | None

    @classmethod
    def parse(cls, uri: str, endpoint_url: str | None) -> _S3Location:
        bucket, prefix = s3.split_uri(uri)
        if not bucket:
            raise ValueError(f"{uri} names no bucket; use s3://bucket/prefix")
        return cls(bucket, prefix, s3.endpoint(endpoint_url))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, name: str) -> str:
        return s3.key(self.prefix, name)

    def client(self) -> Any:
        return s3.client(self.endpoint_url)

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn boto errors into one-line ``ValueError``s naming the URI."""
        try:
            yield
        except s3.boto_errors() as exc:
            raise ValueError(f"cannot {doing} {self.uri}: {s3.error_detail(exc)}") from None

    def download(self, folder: Path) -> Path:
        """Download the package (or, for a ``.pt`` key, the single checkpoint) into ``folder``; return the local path."""
        client = self.client()
        with self.errors("read"):
            if self.prefix.endswith(".pt"):
                local = folder / CHECKPOINT_FILE
                s3.download(client, self.bucket, self.prefix, local)
                return local
            s3.download_files(client, self.bucket, self.prefix, (CONFIG_FILE, MODEL_FILE), folder)
        return folder


@dataclass(frozen=True)
class _S3Target:
    """A package under ``s3://bucket/prefix``; ``progress`` shows the bytes uploaded."""

    location: _S3Location
    progress: ProgressBars = field(default=NO_PROGRESS, compare=False)

    @property
    def uri(self) -> str:
        return self.location.uri

    def check(self, model_id: str, force: bool = False) -> None:
        """Refuse a prefix holding objects (an earlier export is replaced with ``force``; also checks access)."""
        location = self.location
        client = location.client()
        with location.errors("write"):
            listed = client.list_objects_v2(Bucket=location.bucket, Prefix=location.key(""), MaxKeys=100)
            names = [item["Key"].removeprefix(location.key("")) for item in listed.get("Contents", [])]
            found = None
            if METRICS_FILE in names:
                found = _exported_model_id(client.get_object(Bucket=location.bucket, Key=location.key(METRICS_FILE))["Body"].read().decode("utf-8", "replace"))
        _refuse_foreign(self.uri, names, found, model_id, force)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="mg-tune-export-") as tmp:
            yield Path(tmp)

    def publish(self, staged: Path) -> None:
        """Upload every file, ``metrics.json`` last (its presence marks a complete package)."""
        location = self.location
        size = sum((staged / name).stat().st_size for name in EXPORT_FILES)
        with location.errors("write"), self.progress.task(f"uploading to {self.uri}", size, unit="bytes") as advance:
            s3.upload_files(location.client(), staged, EXPORT_FILES, location.bucket, location.prefix, sent=advance)


def _target(target: str | os.PathLike[str], s3_endpoint_url: str | None, progress: ProgressBars = NO_PROGRESS) -> _LocalTarget | _S3Target:
    """Where ``target`` names; an ``s3://`` one shows its upload on ``progress`` (a local one is one rename)."""
    text = os.fspath(target)
    if s3.is_s3(text):
        return _S3Target(_S3Location.parse(text, s3_endpoint_url), progress)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        raise ValueError(f"target {redact_uri(text)}: only local directories and s3://bucket/prefix are supported")
    return _LocalTarget.parse(text)

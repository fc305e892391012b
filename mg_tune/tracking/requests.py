"""Counting the tracking-store calls and HTTP requests a block of code makes (tests and benches)."""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestCounter", "count_requests"]


@dataclass
class RequestCounter:
    """Tracking-store calls made inside :func:`count_requests`.

    ``store`` counts outermost public calls on the tracking store (one per
    REST request against a server; one per query batch against a SQL store),
    ``http`` the HTTP requests actually sent (0 with a SQL store), artifact
    transfers through the server's proxy included.
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
    ``http_request`` (of ``mlflow.utils.rest_utils`` and of the proxied
    artifact repository) for the duration; nested store
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
    import mlflow.store.artifact.http_artifact_repo as artifact_http  # imports http_request by name: artifact up- and downloads

    original_http = rest_utils.http_request
    rest_utils.http_request = http
    artifact_http.http_request = http
    try:
        yield counter
    finally:
        rest_utils.http_request = original_http
        artifact_http.http_request = original_http
        for cls, name, attr in reversed(saved):
            if attr is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, attr)

"""Retrying MLflow calls: which failures are transient (:func:`is_transient`), and bounded exponential backoff (tenacity)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity
from mlflow.exceptions import MlflowException

__all__ = ["RetryPolicy", "is_transient"]


T = TypeVar("T")


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

    def wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds to wait after failure ``k = state.attempt_number - 1``: ``min(maximum, initial·2^k)·U(0.5, 1)``."""
        return min(self.maximum, self.initial * 2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried while it raises a transient error; the last error is re-raised as it is."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self.wait,
            retry=tenacity.retry_if_exception(is_transient),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)

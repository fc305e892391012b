"""mg-tune: multi-objective hyperparameter search for model guidance.

Package-level API (imported lazily, so ``import mg_tune.train`` stays free of
MLflow and boto3): :func:`load_model` rebuilds an exported model
(:mod:`mg_tune.export`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from mg_tune.export import load_model

        return load_model
    raise AttributeError(f"module 'mg_tune' has no attribute {name!r}")

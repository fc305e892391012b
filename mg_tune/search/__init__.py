"""A multi-objective search: a spec (pydantic) run as a Ray Tune ``Tuner`` whose searcher is Optuna.

Package-level API, imported lazily (``import mg_tune.search.spec`` stays free of
Ray): :class:`SearchSpec`, :func:`load_spec` and :class:`SpecError` (:mod:`mg_tune.search.spec`),
:func:`run_search` and :class:`SearchOutcome` (:mod:`mg_tune.search.runner`),
:data:`SAMPLERS` and :func:`register_sampler` (:mod:`mg_tune.search.samplers`).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "SAMPLERS": "samplers",
    "SearchOutcome": "runner",
    "SearchSpec": "spec",
    "SpecError": "spec",
    "load_spec": "spec",
    "register_sampler": "samplers",
    "run_search": "runner",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"mg_tune.search.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'mg_tune.search' has no attribute {name!r}")

"""Spec → Optuna: the define-by-run search space, the sampler and warm-start points.

λ is conditional on the loss: Optuna samples ``lam_<loss>`` (a distinct
parameter per loss, as Optuna's conditional spaces require) from that loss's
log-uniform range, and :func:`trial_params` maps it back to ``lam``.
"""

from __future__ import annotations

from typing import Any

import optuna

from mg_tune.search.samplers import SAMPLERS
from mg_tune.search.spec import SearchSpec

LAMBDA_PREFIX = "lam_"


class DefineByRun:
    """The define-by-run function OptunaSearch calls for every new trial.

    A class rather than a closure: Ray Tune pickles the searcher (and so this
    function) into its experiment checkpoint for ``--resume``.
    """

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec

    def __call__(self, trial: optuna.Trial) -> None:
        spec = self.spec
        for name, dist in spec.space.items():
            if name == "lam":
                continue
            if dist.kind == "choice":
                trial.suggest_categorical(name, dist.choice)
            elif dist.kind == "int":
                trial.suggest_int(name, *dist.int)
            else:
                trial.suggest_float(name, *getattr(dist, dist.kind), log=dist.kind == "loguniform")
        if "lam" in spec.space:
            loss = trial.params.get("loss", spec.losses()[0])
            trial.suggest_float(LAMBDA_PREFIX + loss, *spec.lambda_range(loss), log=True)


def trial_params(sampled: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameter names → TrainConfig field names (``lam_energy`` → ``lam``)."""
    return {("lam" if k.startswith(LAMBDA_PREFIX) else k): v for k, v in sampled.items()}


def optuna_params(point: dict[str, Any], spec: SearchSpec) -> dict[str, Any]:
    """TrainConfig field names → Optuna's (``lam`` → ``lam_<loss>``, the point's loss or else the spec's first); the inverse of :func:`trial_params`."""
    return {(LAMBDA_PREFIX + point.get("loss", spec.losses()[0]) if k == "lam" else k): v for k, v in point.items()}


def warm_start_points(spec: SearchSpec) -> list[dict[str, Any]]:
    """Points enqueued before sampling: the paper's grid for ``sampler: grid`` or ``warm_start: paper_grid``."""
    if spec.sampler != "grid" and spec.warm_start != "paper_grid":
        return []
    return [optuna_params(p, spec) for p in spec.grid_points()]


def build_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by the spec (its builder in :data:`mg_tune.search.samplers.SAMPLERS`), seeded by ``spec.seed``; every one is safe to pickle."""
    return SAMPLERS[spec.sampler](spec)

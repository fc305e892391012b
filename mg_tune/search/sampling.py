"""Spec → Optuna: the define-by-run search space, the sampler and warm-start points.

λ is conditional on the loss: Optuna samples ``lam_<loss>`` (a distinct
parameter per loss, as Optuna's conditional spaces require) from that loss's
log-uniform range, and :func:`trial_params` maps it back to ``lam``.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

from mg_tune.search.spec import SearchSpec

LAMBDA_PREFIX = "lam_"


class define_by_run:
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


_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


class PicklableLocks:
    """Mixin for an Optuna sampler: pickles without its thread locks and makes new ones when unpickled.

    Ray Tune pickles the searcher, and so its sampler, into the experiment
    state (``tuner.pkl``, ``OptunaSearch.save``) for ``--resume``. Optuna
    5.1.0's ``BaseGASampler.__init__`` (the base of NSGA-II/III) keeps a
    ``threading.Lock`` and defines no ``__getstate__``, so cloudpickle raises
    ``TypeError: cannot pickle '_thread.lock' object``. A lock guards state
    within one process only, so a fresh unlocked one is the right thing to
    restore. Samplers without locks pickle unchanged.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() or self.__dict__)
        locks = {k: isinstance(v, _RLOCK) for k, v in state.items() if isinstance(v, (_LOCK, _RLOCK))}
        for name in locks:
            del state[name]
        return {**state, "_mg_tune_locks": locks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        locks = state.pop("_mg_tune_locks", {})
        self.__dict__.update(state)
        for name, reentrant in locks.items():
            setattr(self, name, threading.RLock() if reentrant else threading.Lock())


class NSGAIISampler(PicklableLocks, optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II, safe to pickle (see :class:`PicklableLocks`)."""


class NSGAIIISampler(PicklableLocks, optuna.samplers.NSGAIIISampler):
    """Optuna's NSGA-III, safe to pickle (see :class:`PicklableLocks`)."""


class TPESampler(PicklableLocks, optuna.samplers.TPESampler):
    """Optuna's TPE, safe to pickle (see :class:`PicklableLocks`)."""


class RandomSampler(PicklableLocks, optuna.samplers.RandomSampler):
    """Optuna's random sampler, safe to pickle (see :class:`PicklableLocks`)."""


class GPSampler(PicklableLocks, optuna.samplers.GPSampler):
    """Optuna's Gaussian-process sampler, safe to pickle (see :class:`PicklableLocks`).

    After its startup trials it fits one GP (Matérn-5/2, ARD) per objective,
    and per constraint when trials carry constraint values, and proposes the
    point maximising log expected hypervolume improvement (log-EHVI; with
    constraints, log-EHVI + Σ log P(constraint feasible)). Trials still
    RUNNING (Ray's concurrent trials) enter as a pending batch: q-log-EHVI
    samples their objectives from the GP and credits a candidate only with the
    improvement beyond those fantasised values, so a pending point, whose
    improvement is already counted, is not proposed again.

    It models the parameters every trial has (Optuna's intersection search
    space); a conditional one (``lam_<loss>`` when ``loss`` is searched) is
    drawn by its independent sampler (random, same seed).
    """


def build_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by the spec, seeded by ``spec.seed``; every one is safe to pickle.

    NSGA-II/III use a population of max(4, min(50, trials // 2)) so small
    searches still get past random initialisation; TPE is multivariate with
    max(2, trials // 4) random startup trials; GP starts with
    min(10, max(2, trials // 4)) random trials (Optuna's default 10 would
    leave a search of tens of trials mostly random) and does not warn for
    every conditional parameter it leaves to its random sampler.
    """
    population = max(4, min(50, spec.trials // 2))
    if spec.sampler == "nsga2":
        return NSGAIISampler(seed=spec.seed, population_size=population)
    if spec.sampler == "nsga3":
        return NSGAIIISampler(seed=spec.seed, population_size=population)
    if spec.sampler == "tpe":
        return TPESampler(seed=spec.seed, multivariate=True, n_startup_trials=max(2, spec.trials // 4))
    if spec.sampler == "gp":
        return GPSampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 4)), warn_independent_sampling=False)
    return RandomSampler(seed=spec.seed)  # random, and grid (all points enqueued)

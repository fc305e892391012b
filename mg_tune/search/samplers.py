"""The Optuna samplers a spec can name (``sampler:``), by name: one decorated builder each.

Adding a sampler is one function here::

    @register_sampler("qmc")
    def _qmc(spec: SamplerSettings) -> optuna.samplers.BaseSampler:
        return QMCSampler(seed=spec.seed)

The spec's ``sampler`` field (:class:`mg_tune.search.spec.SearchSpec`) accepts exactly the
names registered in :data:`SAMPLERS`, in the order they are registered here, and
:func:`mg_tune.search.sampling.build_sampler` calls the builder. A builder gets the spec
(only ``seed`` and ``trials`` are read by the ones below) and returns a sampler that is safe
to pickle: Ray Tune pickles the searcher for ``--resume`` (:class:`PicklableLocks`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import optuna


class SamplerSettings(Protocol):
    """What a builder may read of a spec."""

    seed: int
    trials: int


SamplerBuilder = Callable[[SamplerSettings], optuna.samplers.BaseSampler]
SAMPLERS: dict[str, SamplerBuilder] = {}
"""Every sampler a spec can name, in registration order."""


def register_sampler(*names: str) -> Callable[[SamplerBuilder], SamplerBuilder]:
    """Decorator: register ``builder`` under each of ``names`` (a name may be registered once)."""

    def register(builder: SamplerBuilder) -> SamplerBuilder:
        for name in names:
            if name in SAMPLERS:
                raise ValueError(f"sampler {name!r} is registered twice")
            SAMPLERS[name] = builder
        return builder

    return register


def sampler_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(SAMPLERS)


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


def _population(spec: SamplerSettings) -> int:
    """NSGA-II/III population: max(4, min(50, trials // 2)), so small searches still get past random initialisation."""
    return max(4, min(50, spec.trials // 2))


@register_sampler("nsga2")
def _nsga2(spec: SamplerSettings) -> optuna.samplers.BaseSampler:
    return NSGAIISampler(seed=spec.seed, population_size=_population(spec))


@register_sampler("nsga3")
def _nsga3(spec: SamplerSettings) -> optuna.samplers.BaseSampler:
    return NSGAIIISampler(seed=spec.seed, population_size=_population(spec))


@register_sampler("tpe")
def _tpe(spec: SamplerSettings) -> optuna.samplers.BaseSampler:
    """Multivariate TPE with max(2, trials // 4) random startup trials."""
    return TPESampler(seed=spec.seed, multivariate=True, n_startup_trials=max(2, spec.trials // 4))


@register_sampler("gp")
def _gp(spec: SamplerSettings) -> optuna.samplers.BaseSampler:
    """GP with min(10, max(2, trials // 4)) random startup trials (Optuna's default 10 would leave a search of tens
    of trials mostly random); no warning for every conditional parameter it leaves to its random sampler."""
    return GPSampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 4)), warn_independent_sampling=False)


@register_sampler("random", "grid")
def _random(spec: SamplerSettings) -> optuna.samplers.BaseSampler:
    """Random; also ``grid``, whose points are all enqueued before sampling (:func:`mg_tune.search.sampling.warm_start_points`)."""
    return RandomSampler(seed=spec.seed)

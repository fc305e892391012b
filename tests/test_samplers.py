"""Every sampler a spec offers survives pickling: Ray Tune pickles the searcher for ``--resume``.

Optuna 5.1.0's NSGA-II/III keep a ``threading.Lock`` (issue 15): these tests fail on a bare
``optuna.samplers.NSGAIISampler`` there and pass with :func:`mg_tune.search.sampling.build_sampler`.
"""

import sys
import typing

import cloudpickle
import optuna
import pytest
import ray.cloudpickle
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from mg_tune.search.runner import build_searcher
from mg_tune.search.sampling import build_sampler, define_by_run
from mg_tune.search.spec import SearchSpec

SAMPLERS = typing.get_args(SearchSpec.model_fields["sampler"].annotation)
SPACE = {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 1.0], "l1": [0.01, 1.0]}}, "lr": {"loguniform": [1e-4, 1e-2]}}
GRID_SPACE = {**SPACE, "lr": {"choice": [1e-4, 1e-3, 1e-2]}}  # the grid needs a choice list for all but λ


def spec_for(sampler: str, name: str = "pickle", trials: int = 6) -> SearchSpec:
    return SearchSpec.model_validate({"name": name, "sampler": sampler, "trials": trials, "seed": 3, "space": GRID_SPACE if sampler == "grid" else SPACE})


def run_trials(study: optuna.Study, spec: SearchSpec, n: int) -> None:
    define = define_by_run(spec)
    for _ in range(n):
        trial = study.ask()
        define(trial)
        study.tell(trial, [trial.params["lr"] * 10, 1 - trial.params["lr"] * 10, 0.5])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_survives_a_cloudpickle_round_trip_before_and_after_suggesting(sampler):
    spec = spec_for(sampler)
    built = build_sampler(spec)
    fresh = cloudpickle.loads(cloudpickle.dumps(built))
    assert type(fresh) is type(built)

    study = optuna.create_study(directions=["maximize"] * 3, sampler=built)
    run_trials(study, spec, 8)  # past NSGA's population of 4: the generation cache and its lock are in use
    assert type(cloudpickle.loads(cloudpickle.dumps(study.sampler))) is type(built)
    # The unpickled study (as OptunaSearch.save/restore pickle it) proposes what the original would have.
    twin = cloudpickle.loads(cloudpickle.dumps(study))
    original_next, restored_next = study.ask(), twin.ask()
    define_by_run(spec)(original_next)
    define_by_run(spec)(restored_next)
    assert restored_next.params == original_next.params


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module


def objectives(config):
    lam = next(v for k, v in config.items() if k.startswith("lam_"))
    tune.report({"f1": 1.0 - config["lr"], "epg": lam / (1.0 + lam), "iou": 0.5, "epoch": 1})


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_tuner_with_each_sampler_fits_two_trials_and_restores(sampler, ray_local, tmp_path):
    spec = spec_for(sampler, name=f"tuner-{sampler}", trials=2)
    searcher = build_searcher(spec)
    tuner = tune.Tuner(
        objectives,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=1), num_samples=2),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()  # Ray pickles the searcher into tuner.pkl and its searcher state
    assert len(results) == 2 and not results.errors
    path = tmp_path / spec.name
    assert tune.Tuner.can_restore(str(path))
    restored = tune.Tuner.restore(str(path), trainable=objectives, resume_unfinished=True)
    again = restored.fit()  # nothing left to run: the same two trials come back
    assert sorted(r.metrics["f1"] for r in again) == sorted(r.metrics["f1"] for r in results)

    state = next(path.glob("searcher-state-*.pkl"))
    loaded = build_searcher(spec)
    loaded.restore(str(state))  # OptunaSearch.restore: the study with both trials and its sampler
    study = loaded._ot_study
    assert type(study.sampler) is type(build_sampler(spec))
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.values[0] for t in done) == sorted(r.metrics["f1"] for r in results)
    # grid (and warm start) enqueue their points up front: what is not COMPLETE is still WAITING
    assert all(t.state == optuna.trial.TrialState.WAITING for t in study.trials if t not in done)

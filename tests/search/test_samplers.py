"""Every sampler a spec offers survives pickling: Ray Tune pickles the searcher for ``--resume``.

Optuna 5.1.0's NSGA-II/III keep a ``threading.Lock`` (issue 15): these tests fail on a bare
``optuna.samplers.NSGAIISampler`` there and pass with :func:`mg_tune.search.sampling.build_sampler`.

Every sampler also receives the spec's constraint values of each completed trial (issue 21), and
GP treats Ray's running trials as pending.
"""

import sys

import cloudpickle
import optuna
import pytest
import ray.cloudpickle
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from mg_tune.search.runner import build_searcher
from mg_tune.search.samplers import sampler_names
from mg_tune.search.sampling import build_sampler, DefineByRun
from mg_tune.search.spec import SearchSpec

SAMPLERS = sampler_names()  # every sampler a spec can name (the registry the `sampler` field validates against)
assert {"nsga2", "nsga3", "tpe", "gp", "random", "grid"} <= set(SAMPLERS)
SPACE = {"loss": {"choice": ["energy", "l1"]}, "lam": {"loguniform_by_loss": {"energy": [0.01, 1.0], "l1": [0.01, 1.0]}}, "lr": {"loguniform": [1e-4, 1e-2]}}
GRID_SPACE = {**SPACE, "lr": {"choice": [1e-4, 1e-3, 1e-2]}}  # the grid needs a choice list for all but λ


def spec_for(sampler: str, name: str = "pickle", trials: int = 6, **fields) -> SearchSpec:
    return SearchSpec.model_validate({"name": name, "sampler": sampler, "trials": trials, "seed": 3, "space": GRID_SPACE if sampler == "grid" else SPACE, **fields})


def run_trials(study: optuna.Study, spec: SearchSpec, n: int) -> None:
    define = DefineByRun(spec)
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
    DefineByRun(spec)(original_next)
    DefineByRun(spec)(restored_next)
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


CONSTRAINTS = ["f1 >= 0.6", "iou <= 0.9"]
RESULTS = [  # the trials' last reported metrics, and their constraint values by hand: f1 >= 0.6 → 0.6 - f1, iou <= 0.9 → iou - 0.9
    ({"f1": 0.5, "epg": 0.3, "iou": 0.95, "epoch": 2}, {"f1 >= 0.6": 0.1, "iou <= 0.9": 0.05}),
    ({"f1": 0.75, "epg": 0.2, "iou": 0.4, "epoch": 2}, {"f1 >= 0.6": -0.15, "iou <= 0.9": -0.5}),
    ({"f1": 0.6, "epg": 0.9, "iou": 0.9, "epoch": 2}, {"f1 >= 0.6": 0.0, "iou <= 0.9": 0.0}),
]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_constraint_values_of_completed_trials_reach_the_sampler(sampler, monkeypatch):
    spec = spec_for(sampler, trials=8, constraints=CONSTRAINTS)
    searcher = build_searcher(spec)
    seen = []
    after_trial = searcher._ot_study.sampler.after_trial
    monkeypatch.setattr(searcher._ot_study.sampler, "after_trial", lambda study, trial, state, values: (seen.append(trial), after_trial(study, trial, state, values)))
    for i, (result, _) in enumerate(RESULTS):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", result)
    searcher.suggest("failed")
    searcher.on_trial_complete("failed", None, error=True)  # no result: no constraint values (Optuna's samplers skip FAIL)
    done = searcher._ot_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.values for t in done] == [[r["f1"], r["epg"], r["iou"]] for r, _ in RESULTS]
    for trial, (_, expected) in zip(done, RESULTS):
        assert trial.constraints == pytest.approx(expected, abs=1e-12)
    # the sampler itself is handed the trials with their constraints (what NSGA's constrained domination,
    # c-TPE and GP's constrained log-EHVI read: FrozenTrial.constraints), not through a deprecated constraints_func
    assert [t.constraints for t in seen[:3]] == [t.constraints for t in done] and seen[3].constraints == {}
    assert getattr(searcher._ot_study.sampler, "_constraints_func", None) is None
    assert searcher.suggest("next") is not None  # and samples with them


def test_constraints_can_stay_out_of_the_sampler_and_still_filter_the_front():
    """constraints_in_sampler: false: Optuna's trials carry no constraint values; the spec's constraints stay for the front."""
    spec = spec_for("tpe", constraints=CONSTRAINTS, constraints_in_sampler=False)
    searcher = build_searcher(spec)
    for i, (result, _) in enumerate(RESULTS):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", result)
    done = searcher._ot_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3 and all(t.constraints == {} for t in done)
    assert [str(c) for c in spec.parsed_constraints] == CONSTRAINTS  # what search_pareto and retention apply


def test_a_resumed_stopped_trial_keeps_its_constraint_values():
    spec = spec_for("tpe", constraints=CONSTRAINTS)
    searcher = build_searcher(spec)
    searcher.suggest("t0")
    study = searcher._ot_study
    study.tell(study.trials[0].number, state=optuna.trial.TrialState.FAIL)  # what a stop (fail_lost_trials) does
    result, expected = RESULTS[0]
    searcher.on_trial_complete("t0", result)  # the trial ran on after --resume
    retried = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(retried) == 1 and retried[0].system_attrs["failed_trial"] == 0
    assert retried[0].constraints == pytest.approx(expected, abs=1e-12)


def test_gp_takes_rays_running_trials_as_pending_and_proposes_new_points(monkeypatch):
    spec = spec_for("gp", trials=8)  # 2 random startup trials
    searcher = build_searcher(spec)
    sampler = searcher._ot_study.sampler
    pending = []
    acqf = sampler._get_acqf_and_best_params
    monkeypatch.setattr(sampler, "_get_acqf_and_best_params", lambda *a: (pending.append(a[4]), acqf(*a))[1])
    for i in range(2):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"f1": 0.3 + 0.2 * i, "epg": 0.6 - 0.2 * i, "iou": 0.5, "epoch": 1})
    proposed = [searcher.suggest(f"run{i}") for i in range(3)]  # three concurrent trials, none complete
    # the GP part of the space (loss, lr; λ is conditional): the trials already running enter as a pending batch
    assert [0 if p is None else len(p) for p in pending] == [0, 1, 2]
    points = [(p["loss"], p["lr"]) for p in proposed]
    assert len(set(points)) == 3

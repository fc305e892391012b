"""MO-ASHA on synthetic trial curves: exact CONTINUE / STOP decisions at every rung."""

import math

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from mg_tune.search.schedulers import MOASHAScheduler, promote

C, S = TrialScheduler.CONTINUE, TrialScheduler.STOP


def trials(*ids):
    return {i: Trial("__fake", trial_id=i, stub=True) for i in ids}


def feed(scheduler, trial, epoch, f1, epg):
    return scheduler.on_trial_result(None, trial, {"epoch": epoch, "f1": f1, "epg": epg, "iou": 0.1})


def test_rungs_are_grace_times_powers_of_eta_below_max_t():
    assert list(MOASHAScheduler(["f1"], ["max"], grace_period=1, reduction_factor=3, max_t=10).rungs) == [1, 3, 9]
    assert list(MOASHAScheduler(["f1"], ["max"], grace_period=2, reduction_factor=2, max_t=8).rungs) == [2, 4]
    assert list(MOASHAScheduler(["f1"], ["max"], grace_period=1, reduction_factor=2, max_t=2).rungs) == [1]


def test_dominated_trials_stop_and_non_dominated_ones_are_promoted():
    """η = 2, rungs at epochs 1 and 2 (max_t 4); decisions worked out by hand in the comments."""
    s = MOASHAScheduler(["f1", "epg"], ["max", "max"], grace_period=1, reduction_factor=2, max_t=4)
    t = trials("a", "b", "c", "d")
    for trial in t.values():
        s.on_trial_add(None, trial)
    # rung 1: a alone (n=1, quota 1) -> continue
    assert feed(s, t["a"], 1, 0.5, 0.5) == C
    # b is dominated by a: front 1; n=2, quota ⌈2/2⌉=1, one better row -> stop
    assert feed(s, t["b"], 1, 0.4, 0.4) == S
    # c trades off with a: both on front 0 (crowding inf, a tie); n=3, quota 2, nobody strictly better -> continue
    assert feed(s, t["c"], 1, 0.6, 0.3) == C
    # d is dominated by a: front 1 (b drops to front 2); n=4, quota 2, a and c better -> stop
    assert feed(s, t["d"], 1, 0.45, 0.45) == S
    # between rungs: no decision
    # rung 2: a first (continue); c dominated by a, n=2, quota 1 -> stop
    assert feed(s, t["a"], 2, 0.7, 0.6) == C
    assert feed(s, t["c"], 2, 0.65, 0.5) == S
    # past the last rung and at max_t: the trial finishes by itself
    assert feed(s, t["a"], 3, 0.1, 0.1) == C
    assert feed(s, t["a"], 4, 0.1, 0.1) == C
    assert s.num_stopped == 3
    assert {k: sorted(v) for k, v in s.rungs.items()} == {1: ["a", "b", "c", "d"], 2: ["a", "c"]}


def test_crowding_distance_breaks_ties_within_the_front():
    """η = 3: every point is non-dominated; the crowded middle point stops, a new extreme goes on."""
    s = MOASHAScheduler(["f1", "epg"], ["max", "max"], grace_period=1, reduction_factor=3, max_t=3)
    t = trials("x", "y", "z", "w")
    assert feed(s, t["x"], 1, 0.1, 0.9) == C  # n=1
    assert feed(s, t["y"], 1, 0.9, 0.1) == C  # n=2, quota 1, both extremes (inf): tie -> continue
    # n=3, quota 1: z=(0.5,0.5) is interior in both objectives, crowding 2·0.8/0.8 = 2 < inf -> stop
    assert feed(s, t["z"], 1, 0.5, 0.5) == S
    # n=4, quota 2: w=(0.95,0.05) is the new extreme of both objectives (inf, tie with x) -> continue;
    # y became interior: crowding (0.95-0.5)/0.85 + (0.5-0.05)/0.85 = 1.059, z = 1.882
    assert feed(s, t["w"], 1, 0.95, 0.05) == C


def test_minimised_objectives_are_oriented():
    """epg minimised: (0.5, 0.2) dominates (0.5, 0.3)."""
    s = MOASHAScheduler(["f1", "epg"], ["max", "min"], grace_period=1, reduction_factor=2, max_t=2)
    t = trials("a", "b", "c")
    assert feed(s, t["a"], 1, 0.5, 0.3) == C
    assert feed(s, t["b"], 1, 0.5, 0.2) == C  # dominates a: front 0 alone
    assert feed(s, t["c"], 1, 0.5, 0.35) == S  # n=3, quota 2: dominated by a and b (front 2), two better
    # maximising both instead would stop b: it is dominated by a's epg
    s2 = MOASHAScheduler(["f1", "epg"], ["max", "max"], grace_period=1, reduction_factor=2, max_t=2)
    assert feed(s2, t["a"], 1, 0.5, 0.3) == C
    assert feed(s2, t["b"], 1, 0.5, 0.2) == S


def test_three_objectives_and_nan():
    rung = [[0.5, 0.5, 0.5], [0.6, 0.4, 0.5]]
    assert promote(rung + [[0.4, 0.4, 0.4]], [True] * 3, 3) is False  # dominated, quota 1
    assert promote(rung + [[0.4, 0.4, 0.9]], [True] * 3, 3) is True  # best IoU: front 0, extreme
    assert promote(rung + [[math.nan, 0.9, 0.9]], [True] * 3, 3) is False  # NaN ranks last
    assert promote([[math.nan, 0.9, 0.9]], [True] * 3, 3) is True  # alone at its rung


def test_results_without_the_objectives_continue():
    s = MOASHAScheduler(["f1", "epg"], ["max", "max"], grace_period=1, reduction_factor=2, max_t=4)
    t = trials("a")
    assert s.on_trial_result(None, t["a"], {"epoch": 1, "f1": 0.5}) == C
    assert s.rungs[1] == {}


def test_refuses_a_single_tune_metric_and_bad_settings():
    s = MOASHAScheduler(["f1", "epg"], ["max", "max"], max_t=4)
    assert s.set_search_properties(None, None) is True
    assert s.set_search_properties("f1", "max") is False
    with pytest.raises(ValueError, match="grace_period"):
        MOASHAScheduler(["f1"], ["max"], grace_period=4, max_t=4)
    with pytest.raises(ValueError, match="reduction_factor"):
        MOASHAScheduler(["f1"], ["max"], reduction_factor=1, max_t=4)
    with pytest.raises(ValueError, match="one mode"):
        MOASHAScheduler(["f1", "epg"], ["max"], max_t=4)


# --- type: promotion (ASHA's Algorithm 2 with the same key) ---

P = TrialScheduler.PAUSE


class FakeController:
    """What a scheduler sees of Ray's TuneController: trials with a status, the searcher, stop_trial."""

    def __init__(self, trials, finished=False):
        from mg_tune.search.schedulers import RunningTrialsLimiter

        self.trials = trials
        self.limiter = RunningTrialsLimiter(_NullSearcher(), max_concurrent=2)
        self.finished = finished
        self.stopped = []
        ctl = self

        class SearchAlg:
            searcher = self.limiter

            def is_finished(self):
                return ctl.finished

        self.search_alg = SearchAlg()

    def get_trials(self):
        return list(self.trials.values())

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        trial.set_status(Trial.TERMINATED)


class _NullSearcher(Searcher):
    def suggest(self, trial_id):
        return {"x": 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def promoting(eta=3, max_t=4):
    return MOASHAScheduler(["f1", "epg"], ["max", "max"], grace_period=1, reduction_factor=eta, max_t=max_t, type="promotion")


def report(scheduler, ctl, trial, epoch, f1, epg):
    decision = scheduler.on_trial_result(ctl, trial, {"epoch": epoch, "f1": f1, "epg": epg})
    trial.set_status(Trial.PAUSED if decision == P else Trial.RUNNING)
    return decision


def test_promotion_pauses_until_a_rung_has_eta_peers_then_resumes_the_best():
    """η = 3, rungs 1 and 3 (max_t 4). Worked by hand: quota ⌊n/3⌋ is 0 until the third trial arrives."""
    s = promoting()
    t = trials("a", "b", "c", "d")
    ctl = FakeController(t)
    for trial in t.values():
        trial.set_status(Trial.RUNNING)
    assert report(s, ctl, t["a"], 1, 0.5, 0.5) == P  # n=1, quota 0: waits (stopping would continue)
    assert report(s, ctl, t["b"], 1, 0.4, 0.4) == P  # n=2, quota 0
    assert ctl.limiter.paused == {"a", "b"}  # the limiter lets new trials take their slots
    assert ctl.limiter.suggest("e") == {"x": 1} and ctl.limiter.suggest("f") == {"x": 1}
    assert ctl.limiter.suggest("g") is None  # e and f run: 2 of 2
    # c dominates a and b: n=3, quota 1, nobody better -> promoted at once
    assert report(s, ctl, t["c"], 1, 0.9, 0.9) == C
    assert s.promoted[1] == {"c"}
    # d=(.45,.6) is dominated by c, trades off with a: n=4, quota 1, c better -> pauses
    assert report(s, ctl, t["d"], 1, 0.45, 0.6) == P
    # nothing new is promotable (quota 1, taken by c); c and the pending trials run
    t["e"] = Trial("__fake", trial_id="e", stub=True)
    t["e"].set_status(Trial.PENDING)
    assert s.choose_trial_to_run(ctl) is t["e"]
    t["e"].set_status(Trial.RUNNING)
    assert s.choose_trial_to_run(ctl) is None
    # e and f reach rung 1 dominated by all but each other: n=6, quota 2. a=(.5,.5) and d=(.45,.6) share
    # front 1 with crowding inf each (two points): one better row (c) each, 1 < 2, so both are promotable
    # (ties favour the trial, as when stopping); the first recorded (a) goes first, then d
    assert report(s, ctl, t["e"], 1, 0.1, 0.1) == P
    t["f"] = Trial("__fake", trial_id="f", stub=True)
    t["f"].set_status(Trial.RUNNING)
    assert report(s, ctl, t["f"], 1, 0.2, 0.1) == P
    assert s.choose_trial_to_run(ctl) is t["a"]
    assert s.promoted[1] == {"c", "a"} and "a" not in s.paused and "a" not in ctl.limiter.paused
    t["a"].set_status(Trial.PENDING)
    assert s.choose_trial_to_run(ctl) is t["d"]
    assert s.promoted[1] == {"c", "a", "d"} and s.paused == {"b": 1, "e": 1, "f": 1}
    t["d"].set_status(Trial.PENDING)
    assert s.choose_trial_to_run(ctl) in (t["a"], t["d"])  # Ray's FIFO among the pending; b, e, f stay paused


def test_promotion_ends_the_paused_trials_when_the_searcher_is_finished():
    s = promoting()
    t = trials("a", "b")
    ctl = FakeController(t)
    assert report(s, ctl, t["a"], 1, 0.5, 0.5) == P
    assert report(s, ctl, t["b"], 1, 0.4, 0.4) == P
    assert s.choose_trial_to_run(ctl) is t["a"]  # nothing runs, the searcher waits: the best paused trial goes on
    t["a"].set_status(Trial.RUNNING)
    assert report(s, ctl, t["a"], 3, 0.6, 0.6) == P  # alone at rung 3
    ctl.finished = True
    t["a"].set_status(Trial.PAUSED)
    assert s.choose_trial_to_run(ctl) is None
    assert sorted(ctl.stopped) == ["a", "b"] and s.paused == {} and s.num_stopped == 2


def test_stopping_is_still_the_default_and_a_bad_type_is_refused():
    assert MOASHAScheduler(["f1"], ["max"], max_t=4).type == "stopping"
    with pytest.raises(ValueError, match="type must be one of stopping, promotion"):
        MOASHAScheduler(["f1"], ["max"], max_t=4, type="pausing")

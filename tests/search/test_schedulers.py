"""MO-ASHA on synthetic trial curves: exact CONTINUE / STOP decisions at every rung."""

import math

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

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

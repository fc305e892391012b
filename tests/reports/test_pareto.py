"""Tests for mg_tune.pareto: hand-computed cases plus brute-force cross-checks."""

import itertools

import numpy as np
import pytest

from mg_tune.pareto import (
    crowding_distance,
    hypervolume,
    non_dominated_sort,
    normalized_hypervolume,
    pareto_front,
)

NAN = float("nan")


# ---------------------------------------------------------------- brute force


def _oriented(points: np.ndarray, maximize) -> np.ndarray:
    """Flip minimised columns so that larger is better everywhere."""
    return np.where(np.asarray(maximize, dtype=bool), points, -points)


def _brute_front(points: np.ndarray, maximize) -> list[int]:
    """O(n²) definition: i is dropped iff some k is >= everywhere and > somewhere."""
    o = _oriented(points, maximize)
    front = []
    for i in range(len(o)):
        dominated = any(np.all(o[k] >= o[i]) and np.any(o[k] > o[i]) for k in range(len(o)))
        if not dominated:
            front.append(i)
    return front


def _brute_ranks(points: np.ndarray, maximize) -> list[int]:
    """Peel Pareto fronts one at a time."""
    ranks = [-1] * len(points)
    remaining = list(range(len(points)))
    rank = 0
    while remaining:
        front = [remaining[i] for i in _brute_front(points[remaining], maximize)]
        for i in front:
            ranks[i] = rank
        remaining = [i for i in remaining if i not in front]
        rank += 1
    return ranks


def _grid_hypervolume(points: np.ndarray, ref: np.ndarray) -> int:
    """Maximised HV of integer points w.r.t. integer ref by counting unit cells.

    Cell with lower corner c (c >= ref) is covered iff some p has p >= c + 1.
    """
    top = points.max(axis=0)
    count = 0
    for cell in itertools.product(*(range(int(r), int(t)) for r, t in zip(ref, top))):
        if np.any(np.all(points >= np.asarray(cell) + 1, axis=1)):
            count += 1
    return count


def _random_points_with_duplicates(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Small-integer points (many ties), with the last quarter copying earlier rows."""
    pts = rng.integers(0, 8, size=(n, m)).astype(float)
    n_dup = n // 4
    pts[-n_dup:] = pts[rng.integers(0, n - n_dup, size=n_dup)]
    return pts


# --------------------------------------------------------------- pareto_front


def test_front_2d_hand_example():
    # Both objectives maximised.
    points = [
        [1, 5],  # 0 front
        [2, 4],  # 1 front
        [3, 3],  # 2 front
        [2, 2],  # 3 dominated by 1 and 2
        [4, 1],  # 4 front
        [0, 6],  # 5 front
        [1, 4],  # 6 dominated by 1: (2,4) >= (1,4), strictly in x
        [4, 0],  # 7 dominated by 4: equal in x, strictly worse in y
    ]
    assert pareto_front(points, [True, True]) == [0, 1, 2, 4, 5]


def test_front_keeps_duplicates():
    points = [[1, 2], [2, 1], [1, 2], [0, 0], [2, 1]]  # maximised; (0,0) dominated
    assert pareto_front(points, [True, True]) == [0, 1, 2, 4]


def test_front_all_equal_points_all_kept():
    assert pareto_front([[3.0, 3.0]] * 4, [True, False]) == [0, 1, 2, 3]


def test_front_mixed_orientation():
    # (accuracy ↑, cost ↓)
    points = [
        [0.90, 10],  # 0 front
        [0.80, 5],  # 1 front
        [0.85, 12],  # 2 dominated by 0: more accurate and cheaper
        [0.70, 5],  # 3 dominated by 1: same cost, less accurate
        [0.95, 20],  # 4 front: most accurate
        [0.60, 1],  # 5 front: cheapest
    ]
    assert pareto_front(points, [True, False]) == [0, 1, 4, 5]
    # Minimising both, (0.60, 1) is smallest in each column and dominates every other row.
    assert pareto_front(points, [False, False]) == [5]


def test_front_3d():
    # All three objectives minimised.
    points = [
        [1, 2, 3],  # 0 front
        [2, 1, 3],  # 1 front
        [3, 3, 1],  # 2 front
        [2, 2, 3],  # 3 dominated by 0
        [1, 2, 3],  # 4 duplicate of 0: kept
        [3, 3, 2],  # 5 dominated by 2
        [0, 5, 5],  # 6 front: best first objective
    ]
    assert pareto_front(points, [False, False, False]) == [0, 1, 2, 4, 6]


def test_front_nan_rows_never_on_front():
    points = [[1, 1], [NAN, 5], [0, 2], [3, NAN]]
    assert pareto_front(points, [True, True]) == [0, 2]
    assert pareto_front([[NAN, NAN]], [True, True]) == []


def test_front_empty_and_single():
    assert pareto_front([], [True, False]) == []
    assert pareto_front(np.empty((0, 2)), [True, False]) == []
    assert pareto_front([[5.0, 5.0]], [True, False]) == [0]


def test_front_rejects_wrong_width():
    with pytest.raises(ValueError):
        pareto_front([[1.0, 2.0, 3.0]], [True, True])


@pytest.mark.parametrize(
    ("m", "maximize"),
    [(2, [True, True]), (2, [True, False]), (3, [False, True, False]), (4, [True] * 4)],
)
def test_front_matches_brute_force(m, maximize):
    rng = np.random.default_rng(1234 + m)
    points = _random_points_with_duplicates(rng, 200, m)
    front = pareto_front(points, maximize)
    assert front == _brute_front(points, maximize)
    assert len(front) > 1


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_2d_staircase():
    # Maximised, ref (0,0). Sweep x: [0,1] up to y=3, [1,2] up to 2, [2,3] up to 1
    # → 1*3 + 1*2 + 1*1 = 6.
    points = [[1, 3], [2, 2], [3, 1]]
    assert hypervolume(points, [0, 0], [True, True]) == pytest.approx(6.0)


def test_hypervolume_2d_minimised_matches_mirror():
    # Same staircase mirrored: minimise, ref (4,4) → boxes 3x1, 2x2, 1x3 with union 6.
    points = [[3, 1], [2, 2], [1, 3]]
    assert hypervolume(points, [4, 4], [False, False]) == pytest.approx(6.0)


def test_hypervolume_3d_overlapping_boxes():
    # Maximised, ref origin. Boxes: A=[0,2]^3 (8), B=[0,3]x[0,1]x[0,1] (3),
    # C=[0,1]x[0,1]x[0,3] (3). Pairwise overlaps are the boxes at the
    # coordinate-wise min: A∩B=(2,1,1) → 2, A∩C=(1,1,2) → 2, B∩C=(1,1,1) → 1;
    # A∩B∩C=(1,1,1) → 1. Inclusion-exclusion: 8+3+3 - 2-2-1 + 1 = 10.
    points = [[2, 2, 2], [3, 1, 1], [1, 1, 3]]
    assert hypervolume(points, [0, 0, 0], [True, True, True]) == pytest.approx(10.0)
    # Two boxes only: 8 + 3 - 2 = 9.
    assert hypervolume(points[:2], [0, 0, 0], [True, True, True]) == pytest.approx(9.0)


def test_hypervolume_point_worse_than_ref_contributes_nothing():
    ref, maximize = [0, 0], [True, True]
    assert hypervolume([[-1, 5]], ref, maximize) == 0.0  # worse in x
    assert hypervolume([[0, 5]], ref, maximize) == 0.0  # ties ref in x: zero width
    assert hypervolume([[1, 3], [2, 2], [3, 1], [-1, 9]], ref, maximize) == pytest.approx(6.0)


def test_hypervolume_mixed_orientation():
    # (accuracy ↑, cost ↓), ref (0.5, 10): box (0.9-0.5) x (10-4) = 0.4 * 6 = 2.4.
    assert hypervolume([[0.9, 4]], [0.5, 10], [True, False]) == pytest.approx(2.4)


def test_hypervolume_ignores_nan_rows_and_empty():
    assert hypervolume([[1, 3], [NAN, 100]], [0, 0], [True, True]) == pytest.approx(3.0)
    assert hypervolume([], [0, 0], [True, True]) == 0.0


def test_hypervolume_rejects_bad_ref():
    with pytest.raises(ValueError):
        hypervolume([[1.0, 2.0]], [0.0], [True, True])


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_cell_count(m):
    rng = np.random.default_rng(7 + m)
    points = rng.integers(0, 7, size=(25, m)).astype(float)
    ref = np.ones(m)  # some points tie or fall below ref
    assert hypervolume(points, ref, [True] * m) == pytest.approx(_grid_hypervolume(points, ref))


# ---------------------------------------------------- normalized_hypervolume


def test_normalized_hypervolume_hand_value():
    # accuracy ↑ in (0, 1), cost ↓ in (0, 100).
    # Scores: (0.8, 40) → (0.8, 0.6); (0.5, 10) → (0.5, 0.9).
    # Union of boxes from 0: 0.8*0.6 + 0.5*0.9 - 0.5*0.6 = 0.48 + 0.45 - 0.30 = 0.63.
    points = [[0.8, 40], [0.5, 10]]
    value = normalized_hypervolume(points, [(0, 1), (0, 100)], [True, False])
    assert value == pytest.approx(0.63)
    assert 0.0 <= value <= 1.0


def test_normalized_hypervolume_extremes_are_clipped():
    bounds, maximize = [(0, 1), (0, 100)], [True, False]
    assert normalized_hypervolume([[1.2, -10]], bounds, maximize) == pytest.approx(1.0)
    assert normalized_hypervolume([[-0.5, 500]], bounds, maximize) == 0.0
    assert normalized_hypervolume([], bounds, maximize) == 0.0


def test_normalized_hypervolume_in_unit_interval_and_monotone():
    rng = np.random.default_rng(0)
    points = rng.normal(0.5, 0.4, size=(100, 3))
    bounds, maximize = [(0, 1)] * 3, [True, False, True]
    values = [normalized_hypervolume(points[:k], bounds, maximize) for k in range(1, 101)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_normalized_hypervolume_rejects_bad_bounds():
    with pytest.raises(ValueError):
        normalized_hypervolume([[0.5, 0.5]], [(0, 1), (1, 1)], [True, True])
    with pytest.raises(ValueError):
        normalized_hypervolume([[0.5, 0.5]], [(0, 1)], [True, True])


# --------------------------------------------------------- non_dominated_sort


def test_non_dominated_sort_hand_example():
    # Both minimised.
    points = [
        [1, 4],  # 0 rank 0
        [2, 2],  # 1 rank 0
        [4, 1],  # 2 rank 0
        [3, 3],  # 3 rank 1: dominated by 1 only
        [2, 5],  # 4 rank 1: dominated by 0 only
        [5, 5],  # 5 rank 2: dominated by 3 (rank 1)
        [2, 2],  # 6 rank 0: duplicate of 1
        [NAN, 0],  # 7 NaN: one past the worst front
    ]
    assert non_dominated_sort(points, [False, False]) == [0, 0, 0, 1, 1, 2, 0, 3]


def test_non_dominated_sort_edge_cases():
    assert non_dominated_sort([], [True, True]) == []
    assert non_dominated_sort([[NAN, 1.0]], [True, True]) == [0]


@pytest.mark.parametrize(("m", "maximize"), [(2, [True, False]), (3, [True, True, False])])
def test_non_dominated_sort_matches_brute_force(m, maximize):
    rng = np.random.default_rng(99 + m)
    points = _random_points_with_duplicates(rng, 80, m)
    ranks = non_dominated_sort(points, maximize)
    assert ranks == _brute_ranks(points, maximize)
    assert [i for i, r in enumerate(ranks) if r == 0] == pareto_front(points, maximize)


# ---------------------------------------------------------- crowding_distance


def test_crowding_distance_hand_example():
    # Objective ranges are both 4.
    # x sorted: rows 0,1,2,3 at 0,1,3,4 → row1 (3-0)/4 = .75, row2 (4-1)/4 = .75.
    # y sorted: rows 3,2,1,0 at 0,2,3,4 → row2 (3-0)/4 = .75, row1 (4-2)/4 = .5.
    points = [[0, 4], [1, 3], [3, 2], [4, 0]]
    distance = crowding_distance(points)
    assert np.isinf(distance[[0, 3]]).all()
    np.testing.assert_allclose(distance[1:3], [1.25, 1.5])


def test_crowding_distance_boundaries_are_infinite():
    rng = np.random.default_rng(3)
    points = rng.random((20, 3))
    distance = crowding_distance(points)
    extremes = np.unique(np.concatenate([points.argmin(axis=0), points.argmax(axis=0)]))
    assert np.isinf(distance[extremes]).all()
    interior = np.setdiff1d(np.arange(20), extremes)
    assert np.isfinite(distance[interior]).all() and (distance[interior] >= 0).all()


def test_crowding_distance_small_and_constant_fronts():
    assert np.isinf(crowding_distance([[1.0, 2.0], [2.0, 1.0]])).all()
    assert crowding_distance(np.empty((0, 2))).shape == (0,)
    distance = crowding_distance([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])  # y constant
    assert np.isinf(distance[[0, 2]]).all() and distance[1] == pytest.approx(1.0)


def test_crowding_distance_rejects_nan():
    with pytest.raises(ValueError):
        crowding_distance([[1.0, NAN], [2.0, 1.0], [0.0, 3.0]])


def test_constraints_parse_and_hold():
    from mg_tune.pareto import Constraint

    c = Constraint.parse("f1 >= 0.6")
    assert (c.metric, c.op, c.value) == ("f1", ">=", 0.6) and str(c) == "f1 >= 0.6"
    assert c.holds(0.6) and not c.holds(0.59) and not c.holds(float("nan"))
    assert Constraint.parse(" iou<=0.25 ").holds(0.25) and not Constraint.parse("iou <= 0.25").holds(0.3)
    with pytest.raises(ValueError, match="must look like"):
        Constraint.parse("f1 > 0.6")


@pytest.mark.parametrize(
    "text,value,violation",
    [("f1 >= 0.6", 0.5, 0.1), ("f1 >= 0.6", 0.75, -0.15), ("f1 >= 0.6", 0.6, 0.0), ("iou <= 0.9", 0.95, 0.05), ("iou <= 0.9", 0.4, -0.5)],
)
def test_constraint_violation_is_optunas_value_feasible_iff_not_positive(text, value, violation):
    from mg_tune.pareto import Constraint

    c = Constraint.parse(text)
    assert c.violation(value) == pytest.approx(violation, abs=1e-12)
    assert (c.violation(value) <= 0) == c.holds(value)


def test_a_missing_or_nan_metric_violates_by_infinity():
    from mg_tune.pareto import Constraint

    c = Constraint.parse("f1 >= 0.6")
    assert c.violation(None) == c.violation(NAN) == np.inf

"""bench/constrained_search.py (issue 21 part 2) scores a search's checkpoints under the constraint, by hand."""

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import constrained_search  # noqa: E402


def test_feasible_hypervolume_and_infeasible_shares_by_hand():
    """f1 >= 0.9; rows out of creation order. Boxes from 0 (bounds (0, 1), all maximised):

    created 1: t1 e1 (0.80, 0.5, 0.5) infeasible                          HV 0
    created 2: t2 e1 (0.95, 0.2, 0.5) feasible: 0.95 · 0.2 · 0.5          HV 0.095
    created 3: t1 e2 (0.92, 0.4, 0.5) feasible: 0.5 · (0.95 · 0.2 + 0.92 · 0.2)  HV 0.187
    created 4: t2 e2 (0.85, 0.9, 0.9) infeasible (would dominate both)    HV 0.187
    """
    table = pd.DataFrame(
        [
            ("t2", 2, 4, 0.85, 0.9, 0.9, "l1", 0.5),
            ("t1", 1, 1, 0.80, 0.5, 0.5, "energy", 0.01),
            ("t1", 2, 3, 0.92, 0.4, 0.5, "energy", 0.01),
            ("t2", 1, 2, 0.95, 0.2, 0.5, "l1", 0.5),
        ],
        columns=["trial_id", "epoch", "created", "f1", "epg", "iou", "params.loss", "params.lam"],
    )
    scored = constrained_search.score(table, "f1 >= 0.9")
    assert [k for k, _ in scored["history"]] == [1, 2, 3, 4]
    assert [hv for _, hv in scored["history"]] == pytest.approx([0.0, 0.095, 0.187, 0.187])
    assert scored["infeasible_checkpoints"] == 0.5 and scored["infeasible_trials"] == 0.5  # t2 ends infeasible, t1 feasible
    assert scored["trials_sampled"] == [
        {"loss": "energy", "lam": 0.01, "f1": 0.92, "feasible": True},
        {"loss": "l1", "lam": 0.5, "f1": 0.85, "feasible": False},
    ]


def test_the_constrained_search_is_compared_with_its_blind_twin():
    """The constrained search reaches the blind one's final feasible HV (0.1) at its 3rd of 4 trial-epochs: ratio 3/4 of the blind's 4."""
    rows = [
        {"seed": 0, "sampler": "tpe", "method": "tpe", "trial_epochs": 4, "hypervolume": 0.1, "history": [(1, 0.0), (4, 0.1)]},
        {"seed": 0, "sampler": "tpe", "method": "tpe+constrained", "trial_epochs": 4, "hypervolume": 0.12, "history": [(1, 0.05), (3, 0.1), (4, 0.12)]},
        {"seed": 1, "sampler": "tpe", "method": "tpe+constrained", "trial_epochs": 4, "hypervolume": 0.0, "history": [(4, 0.0)]},  # no twin
    ]
    (compared,) = constrained_search.compare(rows)
    assert compared["epochs_to_blind_hv"] == 3 and compared["ratio_to_blind"] == 0.75
    assert compared["hv_difference"] == pytest.approx(0.02)
    rows[0]["hypervolume"] = 0.2  # never reached
    assert math.isinf(constrained_search.compare(rows)[0]["ratio_to_blind"])

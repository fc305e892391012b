"""The λ grid of a search: the papers' grid per loss, the default λ ranges, and the points of a grid search.

λ is always conditional on the loss. The papers searched a fixed grid of λ values per loss
(:data:`PAPER_LAMBDA_GRID`, in the papers' units: λ multiplies the *sum* of the per-image
localization losses over a batch, ``lam_reduction: sum``). A search's default λ range of a
loss is one decade around that grid (:func:`default_lambda_range`); the ``grid`` sampler
and ``warm_start: paper_grid`` run :func:`grid_points`: every combination of the space's
``choice`` lists, each with every λ of its loss's grid (or of the spec's ``lam_grid``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mg_tune.search.spec_fields import Distribution

PAPER_LAMBDA_GRID: dict[str, tuple[float, ...]] = {
    "l1": (1e-3, 5e-3, 1e-2),
    "energy": (5e-4, 1e-3, 5e-3),
    "rrr": (5e-6, 1e-5, 5e-5),
    "ppce": (1e-4, 5e-4, 1e-3),
    "energy_star": (0.5,),
}
"""λ_loc grids of the main paper as listed by the reproducibility study (Table 5), in the
papers' units: λ multiplies Σ over the batch's annotated images of L_loc (``lam_reduction: sum``)."""


def default_lambda_range(loss: str) -> tuple[float, float]:
    """One decade around the paper's grid: [min/√10, max·√10]."""
    grid = PAPER_LAMBDA_GRID.get(loss, (1e-3, 1e-1))
    return min(grid) / math.sqrt(10), max(grid) * math.sqrt(10)



def grid_points(
    space: Mapping[str, Distribution], default_loss: str, lam_grid: Mapping[str, Sequence[float]], fixed_lam: float = 0.0
) -> list[dict[str, Any]]:
    """Every combination of the ``choice`` lists of ``space`` (all but ``lam``), times the λ grid of each point's loss.

    A point's loss is its ``loss`` (when searched) or ``default_loss``; its λ values are
    ``lam_grid[loss]``, else ``PAPER_LAMBDA_GRID[loss]``, else ``(fixed_lam,)``; without
    ``lam`` in ``space`` the points carry no λ. Raises ValueError when a searched
    hyperparameter other than ``lam`` is not a choice list.
    """
    names = [n for n in space if n != "lam"]
    for n in names:
        if space[n].kind != "choice":
            raise ValueError(f"the paper grid needs a choice list for every searched hyperparameter but lam; space.{n} is {space[n].kind}")
    points = []
    for combo in itertools.product(*(space[n].choice for n in names)):
        point = dict(zip(names, combo))
        loss = point.get("loss", default_loss)
        lams = lam_grid.get(loss, PAPER_LAMBDA_GRID.get(loss, (fixed_lam,))) if "lam" in space else (None,)
        for lam in lams:
            points.append(point | ({"lam": lam} if lam is not None else {}))
    return points

"""The parts of a search spec (:class:`mg_tune.search.spec.SearchSpec`): its field models, each validated alone.

``space`` entries (:class:`Distribution`), ``objectives`` (:class:`Objective`, a metric of
:data:`METRIC_NAMES` and a direction), ``constraints`` (:func:`parse_constraint`),
``resources``, ``scheduler``, ``checkpoints`` and ``budget``. What needs the whole spec
(fixed values against the space, the data set's metrics, the λ grid) is checked by
``SearchSpec`` itself.
"""

from __future__ import annotations

import builtins
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mg_tune.guidance.losses import LOSSES
from mg_tune.pareto import Constraint

METRIC_NAMES: tuple[str, ...] = (
    "f1", "map", "accuracy", "epg", "iou", "seg_epg", "x_seg_epg", "pafl", "safl",
    "worst_group_acc", "mean_group_acc",
)


class StrictModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys (a typo never falls back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(StrictModel):
    """Exactly one of the keys below."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # `int` alone would mean this field in the class body
    choice: list[Any] | None = None
    loguniform_by_loss: dict[str, tuple[float, float]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Distribution":
        kinds = [k for k in ("loguniform", "uniform", "int", "choice", "loguniform_by_loss") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, int, choice, loguniform_by_loss (got {kinds or 'none'})")
        for kind in ("loguniform", "uniform", "int"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind} needs low < high, got {list(bounds)}")
        for bounds in [self.loguniform] + list((self.loguniform_by_loss or {}).values()):
            if bounds is not None and bounds[0] <= 0:
                raise ValueError(f"loguniform needs positive bounds, got {list(bounds)}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        if self.loguniform_by_loss:
            unknown = sorted(set(self.loguniform_by_loss) - set(LOSSES))
            if unknown:
                raise ValueError(f"unknown loss {unknown[0]!r} in loguniform_by_loss; valid losses: {', '.join(LOSSES)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("loguniform", "uniform", "int", "choice", "loguniform_by_loss") if getattr(self, k) is not None)


class Objective(StrictModel):
    name: str
    direction: Literal["max", "min"] = "max"

    @field_validator("name")
    @classmethod
    def _is_metric(cls, name: str) -> str:
        if name not in METRIC_NAMES:
            raise ValueError(f"objective {name!r} is not a metric; valid metrics: {', '.join(METRIC_NAMES)}")
        return name


def parse_constraint(text: str) -> Constraint:
    """A spec constraint string, checked to bound a known metric."""
    constraint = Constraint.parse(text)
    if constraint.metric not in METRIC_NAMES:
        raise ValueError(f"constraint {text!r}: {constraint.metric!r} is not a metric; valid metrics: {', '.join(METRIC_NAMES)}")
    return constraint


class Resources(StrictModel):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SchedulerSpec(StrictModel):
    """Early stopping (``scheduler:``): ``mo_asha`` (:class:`mg_tune.search.schedulers.MOASHAScheduler`).

    ``grace_period``: the first rung (epochs); ``reduction_factor``: η, about
    1/η of the trials reaching a rung go on; ``max_t``: the epochs of a full
    trial (default: ``epochs``, fixed or the upper bound of a searched range).
    ``type``: ``stopping`` decides when a trial reaches a rung (continue or
    stop); ``promotion`` pauses it there and resumes it from its newest
    checkpoint once it is among the top ``⌊n/η⌋`` of the rung (ASHA's
    promotion; the trials still paused at the end end as stopped).
    ``scheduler: mo_asha`` is short for ``{name: mo_asha}``.
    """

    name: Literal["mo_asha"]
    type: Literal["stopping", "promotion"] = "stopping"
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(3.0, gt=1)
    max_t: int | None = Field(None, gt=0)


class CheckpointPolicy(StrictModel):
    """What a search keeps of its checkpoints (``checkpoints:``; :mod:`mg_tune.search.retention`).

    ``keep``: ``all`` (the default) keeps every (trial, epoch) checkpoint;
    ``front`` deletes the weights of a checkpoint once another checkpoint of
    the search that meets the constraints dominates it on the spec's
    objectives (it can never return to the front: points are only added);
    ``front_per_group`` deletes them only when the dominating checkpoint
    shares its loss, attribution method, layer and annotation fraction, so
    every front the dashboard's filters can show keeps its weights. Metrics
    of every checkpoint always stay. ``dtype``: the precision stored weights
    are cast to (``float16`` / ``bfloat16`` halve the bytes). Optimizer state
    is kept for each trial's newest epoch only, whatever the policy.

    Why ``all`` by default: like Ray Tune's ``CheckpointConfig`` and MLflow,
    nothing a search logged disappears unless the spec says so (a later
    ``pareto --objectives`` over other metrics or ``evaluate --all`` needs
    every checkpoint), and without optimizer state a checkpoint is already
    about a third of what it was with Adam. The GPU specs that ship
    (``voc.yaml``, ``coco.yaml``, the Waterbirds protocols) set
    ``front_per_group``: at the papers' scale ``all`` stores ~1 TB.
    """

    keep: Literal["all", "front", "front_per_group"] = "all"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


FRONT_GROUP_KEYS = ("loss", "attribution", "layer", "annotation_fraction")
"""What ``keep: front_per_group`` groups checkpoints by: the dashboard's filters."""


class Budget(StrictModel):
    """When a search stops launching and running trials (``budget:``); give either or both.

    ``trial_epochs``: ``B``, a bound on the trial-epochs spent, ``s`` = the
    number of distinct (trial, epoch) results reported by all trials so far,
    counted from MLflow, so a ``--resume`` continues the count. When the
    result that makes ``s = B`` arrives, no trial is launched any more and
    every trial still running stops, that result's trial included
    (:class:`mg_tune.search.budget.TrialEpochBudget`). A running trial can
    have logged one epoch the driver has not counted yet, so with ``c`` =
    ``concurrency`` the search records at most ``B + c - 1`` trial-epochs.

    ``time_s``: ``T`` seconds of the driver's wall time, Ray Tune's own
    ``TuneConfig(time_budget_s=T)``; a ``--resume`` starts a new ``T``.

    Either way the search then ends as usual: the stopped trials end
    TERMINATED in Ray (its ``stop_all``), their MLflow runs KILLED with tag
    ``mg_tune.failure_reason`` "stopped when the search's budget (...) was
    spent"; every checkpoint stays, and the Pareto front is computed from all
    of them and printed.
    """

    trial_epochs: int | None = Field(None, gt=0)
    time_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> "Budget":
        if self.trial_epochs is None and self.time_s is None:
            raise ValueError("give trial_epochs, time_s or both")
        return self

    def __str__(self) -> str:
        parts = [f"trial_epochs={self.trial_epochs}" if self.trial_epochs is not None else "", f"time_s={self.time_s:g}" if self.time_s is not None else ""]
        return ", ".join(p for p in parts if p)

"""Search specs: the YAML files in ``search_spaces/``, validated by pydantic.

A spec fixes part of :class:`~mg_tune.config.TrainConfig` (``fixed``), names
the hyperparameters to search (``space``) and how (``sampler``, ``trials``,
``concurrency``, ``resources``, ``budget``), and what "better" means
(``objectives``, all maximised unless ``direction: min``, and optional
``constraints`` that a checkpoint must meet to be on the Pareto front).

Samplers (registered in :mod:`mg_tune.search.samplers`): ``nsga2``, ``nsga3``,
``tpe``, ``gp`` (Gaussian-process Bayesian optimisation, log-EHVI; for
expensive trials and budgets of tens of trials), ``random`` and ``grid``.

Constraints (``"f1 >= 0.6"``, ``"iou <= 0.9"``) act twice: the front holds only
checkpoints that meet them, and the sampler learns them. When a trial
completes, each constraint's violation on the trial's last reported metrics
(the values told to Optuna as its objectives) is set on its Optuna trial::

    m >= b:  v = b - m        m <= b:  v = m - b        (feasible iff every v <= 0)

(:meth:`mg_tune.pareto.Constraint.violation`; ``Trial.set_constraint``), which
NSGA-II/III (constrained domination), TPE (c-TPE) and GP (constrained log-EHVI)
use. An infeasible trial is tracked like any other (runs and checkpoints stay).
``constraints_in_sampler: false`` keeps the constraints out of the sampler (it
proposes as if there were none) and applies them to the front only: for a
constraint that cuts through the trade-off, whose best feasible points lie on
its boundary, where steering away from infeasible regions also steers away
from them (docs/benchmarks.md, "Constraints inside the sampler").

The field models are :mod:`mg_tune.search.spec_fields`, the λ grids :mod:`mg_tune.search.lambda_grid`.

Search-space entries::

    lr: {loguniform: [1.0e-4, 1.0e-2]}
    epochs: {int: [2, 6]}
    dilation: {uniform: [0, 50]}
    attribution: {choice: [ixg, gradcam]}
    lam: {loguniform_by_loss: {energy: [1.0e-4, 5.0e-2]}}   # conditional on `loss`

``lam`` is always conditional on the loss: its range defaults to one decade
around the reproducibility study's grid for that loss (Table 5), i.e.
[min/√10, max·√10]. The ``grid`` sampler runs every combination of the
``choice`` lists and, for λ, the paper's exact grid per loss. The grid and
the default ranges are in the papers' units: λ multiplies the *sum* of the
per-image localization losses over a batch (``lam_reduction: sum``, the
default, as the authors' train.py). A spec with ``lam_reduction: mean`` must
give every loss's λ range itself and cannot use the paper grid.

Search efficiency::

    scheduler: {name: mo_asha, grace_period: 1, reduction_factor: 3}   # or just `scheduler: mo_asha`
    warm_start: paper_grid     # other samplers: run the paper's grid points first
    warm_start: voc-first      # ... or the Pareto front of an earlier search (read from MLflow)
    budget: {trial_epochs: 40, time_s: 3600}   # either or both

``lam_grid: {energy: [1.0e-3, 1.0e-2]}`` replaces the paper's grid of a loss
(for the ``grid`` sampler and the warm start); its values must lie in the
loss's λ range.

``mo_asha`` stops trials early by multi-objective successive halving
(:mod:`mg_tune.search.schedulers`); ``warm_start: paper_grid`` enqueues
:meth:`SearchSpec.grid_points` as the first trials, so the search's front
contains the paper protocol's (for the same epochs). ``warm_start: <search>``
enqueues the hyperparameters of that search's Pareto front under this spec's
objectives and constraints (:mod:`mg_tune.search.warm_start`).

``budget`` ends a search early, cleanly, with its front (:class:`Budget`).

``fixed: {iou_threshold: 0.3}`` measures IoU at that threshold in every epoch of
every trial instead of choosing it per epoch on the held-out split (see
:class:`~mg_tune.config.TrainConfig`); like ``device`` or ``lam_reduction`` it can be
fixed, never searched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data import SEGMENTATION_METRICS, SMERF_METRICS, unsupported_metrics
from mg_tune.guidance.losses import LOSSES
from mg_tune.pareto import Constraint, Objectives
from mg_tune.search.lambda_grid import PAPER_LAMBDA_GRID, default_lambda_range, grid_points
from mg_tune.search.samplers import SAMPLERS
from mg_tune.search.spec_fields import (  # re-exported: mg_tune.search.spec is where they are imported from
    FRONT_GROUP_KEYS,
    METRIC_NAMES,
    Budget,
    CheckpointPolicy,
    Distribution,
    Objective,
    Resources,
    SchedulerSpec,
    StrictModel,
    parse_constraint,
)
from mg_tune.search.spec_file import SpecError, read_spec_file  # SpecError re-exported: mg_tune.search.spec is where it is imported from
from mg_tune.textfiles import expected_one_of

PER_BOX_METRICS: tuple[str, ...] = ("epg", "iou", *SEGMENTATION_METRICS, *SMERF_METRICS)
"""Metrics averaged over the attribution maps of boxed (image, class) pairs: none on a split without a box."""

__all__ = [
    "DATA_SEARCHABLE", "FRONT_GROUP_KEYS", "METRIC_NAMES", "PAPER_LAMBDA_GRID", "SAMPLERS", "SEARCHABLE", "Budget",
    "CheckpointPolicy", "Distribution", "Objective", "Resources", "SchedulerSpec", "SearchSpec", "SpecError",
    "default_lambda_range", "format_validation_error", "load_spec", "parse_constraint",
]

SEARCHABLE: tuple[str, ...] = tuple(n for n in TrainConfig.model_fields if n not in ("data", "device", "weights", "init_checkpoint", "lam_reduction", "iou_threshold"))
DATA_SEARCHABLE: tuple[str, ...] = ("annotation_fraction", "dilation", "mask_kind")


class SearchSpec(StrictModel):
    """A whole search; see the module docstring."""

    name: str = "search"
    data: DataConfig = Field(default_factory=DataConfig)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(default_factory=dict)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(name=n) for n in ("f1", "epg", "iou")])
    constraints: list[str] = Field(default_factory=list)
    constraints_in_sampler: bool = True
    sampler: str = "nsga2"
    trials: int = Field(8, gt=0)
    concurrency: int = Field(2, gt=0)
    resources: Resources = Field(default_factory=Resources)
    seed: int = 0
    tracking_uri: str | None = None
    storage_path: str | None = None
    study_storage: str | None = None
    max_failures: int = Field(2, ge=0)
    reuse_actors: bool = True
    scheduler: SchedulerSpec | None = None
    warm_start: str = "none"
    lam_grid: dict[str, list[float]] = Field(default_factory=dict)
    checkpoints: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    budget: Budget | None = None

    @field_validator("sampler")
    @classmethod
    def _registered_sampler(cls, name: str) -> str:
        if name not in SAMPLERS:
            raise ValueError(expected_one_of(list(SAMPLERS)))
        return name

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("objectives", mode="before")
    @classmethod
    def _objective_strings(cls, value: Any) -> Any:
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> "SearchSpec":
        for name in self.space:
            if name not in SEARCHABLE and name not in DATA_SEARCHABLE:
                raise ValueError(f"space.{name}: not a searchable hyperparameter; valid: {', '.join(SEARCHABLE + DATA_SEARCHABLE)}")
            if name in self.fixed:
                raise ValueError(f"{name} is both fixed and searched")
        if "lam" in self.space and self.space["lam"].kind != "loguniform_by_loss":
            raise ValueError("space.lam must be loguniform_by_loss (λ's range depends on the loss)")
        if "lam" in self.space and self.fixed.get("lam_reduction") == "mean":
            missing = [loss for loss in self.losses() if loss not in self.space["lam"].loguniform_by_loss]
            paper_grid = (self.sampler == "grid" or self.warm_start == "paper_grid") and any(loss not in self.lam_grid for loss in self.losses())
            if missing or paper_grid:
                raise ValueError(
                    "space.lam: the paper grid and the default λ ranges are in the papers' units (lam_reduction: sum); "
                    f"with lam_reduction: mean give a range for every loss{f' (missing: {missing[0]})' if missing else ''} and, for a grid, lam_grid"
                )
        bounds: dict[str, list[Constraint]] = {}
        for text in self.constraints:
            c = parse_constraint(text)
            bounds.setdefault(c.metric, []).append(c)
        for metric, cs in bounds.items():
            low = max((c.value for c in cs if c.op == ">="), default=-math.inf)
            high = min((c.value for c in cs if c.op == "<="), default=math.inf)
            if low > high:
                raise ValueError(f"constraints on {metric} contradict each other: {metric} >= {low} and {metric} <= {high}")
        unsupported = unsupported_metrics(self.data)
        for where, metric in self.metric_uses():
            if metric in unsupported:
                raise ValueError(f"{where}: {metric!r} is not measured on this data set: {unsupported[metric]}")
        try:
            self.train_config({})  # every fixed value must be valid,
        except ValueError as exc:
            raise ValueError(f"fixed{_first_message(exc, '.')}") from None
        for name, dist in self.space.items():  # every choice and range bound with them,
            if name == "lam":
                continue
            what = "choice" if dist.kind == "choice" else f"{dist.kind} bound"
            for value in getattr(dist, dist.kind):
                try:
                    self.train_config({name: value})
                except ValueError as exc:
                    raise ValueError(f"space.{name}: {what} {value!r}{_first_message(exc)}") from None
        try:
            self.train_config(self.first_point())  # and a whole point (e.g. crayon_attention needs init_checkpoint when λ > 0)
        except ValueError as exc:
            raise ValueError(f"fixed{_first_message(exc, '.')}") from None
        if self.sampler == "grid":
            self.grid_points()  # choice lists only
        if self.scheduler is not None:
            max_t, epochs = self.max_t, self.fixed.get("epochs")
            if self.scheduler.grace_period >= max_t:
                raise ValueError(f"scheduler.grace_period must be below max_t={max_t} epochs (got {self.scheduler.grace_period})")
            if epochs is not None and max_t > epochs:
                raise ValueError(f"scheduler.max_t must be at most fixed.epochs={epochs} (got {max_t})")
        unknown = sorted(set(self.lam_grid) - set(LOSSES))
        if unknown:
            raise ValueError(f"lam_grid: unknown loss {unknown[0]!r}; valid losses: {', '.join(LOSSES)}")
        if not self.warm_start.strip() or not self.warm_start.isprintable():
            raise ValueError(f"warm_start: give none, paper_grid or the name of an earlier search (got {self.warm_start!r})")
        if self.warm_start_search is not None and self.sampler == "grid":
            raise ValueError(f"warm_start: {self.warm_start}: a grid search runs exactly its grid; warm-start another sampler")
        if self.warm_start == "paper_grid" or (self.sampler == "grid" and self.lam_grid):
            self._check_warm_start()
        return self

    def _check_warm_start(self) -> None:
        try:
            points = self.grid_points()
        except ValueError as exc:
            raise ValueError(f"warm_start: paper_grid: {exc}") from None
        if len(points) > self.trials and self.sampler != "grid":
            raise ValueError(f"warm_start: paper_grid enqueues {len(points)} grid points, more than trials={self.trials}")
        for point in points:
            if "lam" in point:
                low, high = self.lambda_range(point.get("loss", self.losses()[0]))
                if not low <= point["lam"] <= high:
                    raise ValueError(f"{'lam_grid' if self.lam_grid else 'warm_start: paper_grid'}: λ={point['lam']:g} of loss {point.get('loss', self.losses()[0])} lies outside space.lam's range [{low:g}, {high:g}]")

    # -- derived views ------------------------------------------------------------
    @property
    def warm_start_search(self) -> str | None:
        """The earlier search whose front ``warm_start`` names, or None (``none``, ``paper_grid``)."""
        return None if self.warm_start in ("none", "paper_grid") else self.warm_start

    @property
    def max_t(self) -> int:
        """The epochs of a full trial for the scheduler: ``scheduler.max_t``, else fixed or the most searched ``epochs``."""
        if self.scheduler is not None and self.scheduler.max_t is not None:
            return self.scheduler.max_t
        if "epochs" in self.space:
            dist = self.space["epochs"]
            return int(max(dist.choice) if dist.kind == "choice" else getattr(dist, dist.kind)[1])
        return int(self.fixed.get("epochs", TrainConfig.model_fields["epochs"].default))

    def metric_uses(self) -> list[tuple[str, str]]:
        """``(field as written, metric)`` of every objective and constraint, e.g. ``("objectives.1.name", "pafl")``."""
        uses = [(f"objectives.{i}.name", o.name) for i, o in enumerate(self.objectives)]
        return uses + [(f"constraints.{i} {text!r}", parse_constraint(text).metric) for i, text in enumerate(self.constraints)]

    def check_val_split(self, reports: Sequence[Any]) -> None:
        """``search``'s and ``data check SPEC``'s checks of the val report of :func:`mg_tune.data.check_dataset`'s ``reports``."""
        val = next(r for r in reports if r.split == "val")
        self.check_segmentation(val.with_seg)
        self.check_val_boxes(val.boxes)

    def check_val_boxes(self, val_boxes: int) -> None:
        """Refuse per-box objectives and constraints (EPG, IoU, ...) when the val split has no box (all background images).

        Every trial would train and log no value for them (absent, never 0), and the search would end without a front.

        Raises:
            SpecError: one line naming the field, the metric and the data root.
        """
        for where, metric in self.metric_uses():
            if metric in PER_BOX_METRICS and val_boxes == 0:
                raise SpecError(f"{where}: {metric!r} is measured on boxes, but the val split of {self.data.name} at {self.data.root} has none (background images only)")

    def check_segmentation(self, val_segmented: int) -> None:
        """Refuse SegEPG / X-SegEPG objectives and constraints when the val split has no segmented image.

        ``val_segmented`` is the number of val images with segmentation masks (``data check``'s
        count); a VOC copy without ``SegmentationClass``/``SegmentationObject`` has none.

        Raises:
            SpecError: one line naming the field, the metric and the data root.
        """
        for where, metric in self.metric_uses():
            if metric in SEGMENTATION_METRICS and val_segmented == 0:
                raise SpecError(f"{where}: {metric!r} needs segmentation masks, but no image of the val split of {self.data.name} at {self.data.root} has one")

    def group_defaults(self) -> dict[str, Any]:
        """The value of each :data:`FRONT_GROUP_KEYS` key for a trial that does not search it: fixed, data, else TrainConfig's default."""
        values = {}
        for key in FRONT_GROUP_KEYS:
            if key in self.fixed:
                values[key] = self.fixed[key]
            elif key in DataConfig.model_fields:
                values[key] = getattr(self.data, key)
            else:
                values[key] = TrainConfig.model_fields[key].default
        return values

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(t) for t in self.constraints]

    @property
    def metric_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def front_objectives(self) -> Objectives:
        """Objectives, directions and constraints as the one value a front is computed on."""
        return Objectives(tuple(self.metric_names), tuple(m == "max" for m in self.modes), tuple(self.parsed_constraints))

    def losses(self) -> list[str]:
        if "loss" in self.space:
            return list(self.space["loss"].choice or [])
        return [self.fixed.get("loss", TrainConfig.model_fields["loss"].default)]

    def lambda_range(self, loss: str) -> tuple[float, float]:
        ranges = self.space["lam"].loguniform_by_loss if "lam" in self.space else {}
        return tuple(ranges.get(loss, default_lambda_range(loss)))

    def first_point(self) -> dict[str, Any]:
        """A representative point of the space (used to validate the spec)."""
        point = {}
        for name, dist in self.space.items():
            if dist.kind == "choice":
                point[name] = dist.choice[0]
            elif dist.kind == "int":
                point[name] = dist.int[0]
            elif name == "lam":
                point[name] = self.lambda_range(self.losses()[0])[0]
            else:
                point[name] = getattr(dist, dist.kind)[0]
        return point

    def train_config(self, params: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: the spec's data and fixed values, then ``params``."""
        values = {**self.fixed, **params}
        data_updates = {k: values.pop(k) for k in DATA_SEARCHABLE if k in values}
        data = self.data.model_copy(update=data_updates)
        return TrainConfig(data=DataConfig.model_validate(data.model_dump()), **values)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination for the ``grid`` sampler; λ takes ``lam_grid`` or else the paper's grid of each loss (:func:`mg_tune.search.lambda_grid.grid_points`)."""
        return grid_points(self.space, self.losses()[0], self.lam_grid, self.fixed.get("lam", 0.0))


def _first_message(exc: ValueError, sep: str = ": ") -> str:
    """The first error of a nested TrainConfig validation, to append to a field path: ``{sep}loc: message`` or ``: message``."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return f": {exc}"
    described = format_validation_error(exc)
    return f"{sep}{described}" if exc.errors()[0]["loc"] else f": {described}"


def load_spec(path: str | Path) -> tuple[SearchSpec, str]:
    """Read (:func:`~mg_tune.search.spec_file.read_spec_file`) and validate a YAML spec; return it with its text (logged to MLflow)."""
    from pydantic import ValidationError

    raw, text = read_spec_file(path)
    try:
        return SearchSpec.model_validate(raw), text
    except ValidationError as exc:
        raise SpecError(f"{Path(path)}: {format_validation_error(exc)}") from None


def format_validation_error(exc: Any) -> str:
    """The first pydantic error as 'field.path: message (got value)', with a did-you-mean for typos."""
    import difflib

    err = exc.errors()[0]
    loc = ".".join(_key(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        field = _key(err["loc"][-1])
        parent = SearchSpec
        candidates = [f for model in (parent, TrainConfig, DataConfig, Distribution, Objective, Resources, Budget) for f in model.model_fields]
        close = difflib.get_close_matches(field, candidates, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{loc}: unknown key{hint}"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) and value is not None else ""
    return f"{loc}: {message}{shown}" if loc else f"{message}"


def _key(part: Any) -> str:
    """A path element as written, or quoted when it is blank or holds control characters (one-line messages)."""
    text = str(part)
    return text if text.strip() and text.isprintable() else repr(text)

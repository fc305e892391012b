"""Search specs: the YAML files in ``search_spaces/``, validated by pydantic.

A spec fixes part of :class:`~mg_tune.config.TrainConfig` (``fixed``), names
the hyperparameters to search (``space``) and how (``sampler``, ``trials``,
``concurrency``, ``resources``, ``budget``), and what "better" means
(``objectives``, all maximised unless ``direction: min``, and optional
``constraints`` that a checkpoint must meet to be on the Pareto front).

Samplers (:func:`mg_tune.search.sampling.build_sampler`): ``nsga2``, ``nsga3``,
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

import builtins
import itertools
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mg_tune.config import DataConfig, TrainConfig
from mg_tune.data import SEGMENTATION_METRICS, unsupported_metrics
from mg_tune.guidance.losses import LOSSES
from mg_tune.pareto import Constraint
from mg_tune.textfiles import decode_problem, read_utf8

PAPER_LAMBDA_GRID: dict[str, tuple[float, ...]] = {
    "l1": (1e-3, 5e-3, 1e-2),
    "energy": (5e-4, 1e-3, 5e-3),
    "rrr": (5e-6, 1e-5, 5e-5),
    "ppce": (1e-4, 5e-4, 1e-3),
    "energy_star": (0.5,),
}
"""λ_loc grids of the main paper as listed by the reproducibility study (Table 5), in the
papers' units: λ multiplies Σ over the batch's annotated images of L_loc (``lam_reduction: sum``)."""

METRIC_NAMES: tuple[str, ...] = (
    "f1", "map", "accuracy", "epg", "iou", "seg_epg", "x_seg_epg", "pafl", "safl",
    "worst_group_acc", "mean_group_acc",
)
SAMPLERS: tuple[str, ...] = ("nsga2", "nsga3", "tpe", "gp", "random", "grid")
SEARCHABLE: tuple[str, ...] = tuple(n for n in TrainConfig.model_fields if n not in ("data", "device", "weights", "init_checkpoint", "lam_reduction", "iou_threshold"))
DATA_SEARCHABLE: tuple[str, ...] = ("annotation_fraction", "dilation", "mask_kind")


def default_lambda_range(loss: str) -> tuple[float, float]:
    """One decade around the paper's grid: [min/√10, max·√10]."""
    grid = PAPER_LAMBDA_GRID.get(loss, (1e-3, 1e-1))
    return min(grid) / math.sqrt(10), max(grid) * math.sqrt(10)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
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


class Objective(_Strict):
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


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SchedulerSpec(_Strict):
    """Early stopping (``scheduler:``): ``mo_asha`` (:class:`mg_tune.search.schedulers.MOASHAScheduler`).

    ``grace_period``: the first rung (epochs); ``reduction_factor``: η, about
    1/η of the trials reaching a rung go on; ``max_t``: the epochs of a full
    trial (default: ``epochs``, fixed or the upper bound of a searched range).
    ``scheduler: mo_asha`` is short for ``{name: mo_asha}``.
    """

    name: Literal["mo_asha"]
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(3.0, gt=1)
    max_t: int | None = Field(None, gt=0)


class CheckpointPolicy(_Strict):
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


class Budget(_Strict):
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


class SearchSpec(_Strict):
    """A whole search; see the module docstring."""

    name: str = "search"
    data: DataConfig = Field(default_factory=DataConfig)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(default_factory=dict)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(name=n) for n in ("f1", "epg", "iou")])
    constraints: list[str] = Field(default_factory=list)
    sampler: Literal["nsga2", "nsga3", "tpe", "gp", "random", "grid"] = "nsga2"
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
        """Every combination for the ``grid`` sampler; λ takes ``lam_grid`` or else the paper's grid of each loss."""
        names = [n for n in self.space if n != "lam"]
        for n in names:
            if self.space[n].kind != "choice":
                raise ValueError(f"the paper grid needs a choice list for every searched hyperparameter but lam; space.{n} is {self.space[n].kind}")
        points = []
        for combo in itertools.product(*(self.space[n].choice for n in names)):
            point = dict(zip(names, combo))
            loss = point.get("loss", self.losses()[0])
            lams = self.lam_grid.get(loss, PAPER_LAMBDA_GRID.get(loss, (self.fixed.get("lam", 0.0),))) if "lam" in self.space else (None,)
            for lam in lams:
                points.append(point | ({"lam": lam} if lam is not None else {}))
        return points


def _first_message(exc: ValueError, sep: str = ": ") -> str:
    """The first error of a nested TrainConfig validation, to append to a field path: ``{sep}loc: message`` or ``: message``."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return f": {exc}"
    described = format_validation_error(exc)
    return f"{sep}{described}" if exc.errors()[0]["loc"] else f": {described}"


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, field and value."""


def load_spec(path: str | Path) -> tuple[SearchSpec, str]:
    """Read and validate a YAML spec; return it with its text (logged to MLflow)."""
    from pydantic import ValidationError

    path = Path(path)
    try:
        text = read_utf8(path)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: {decode_problem(exc)}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a mapping of fields, got {type(raw).__name__}")
    try:
        return SearchSpec.model_validate(raw), text
    except ValidationError as exc:
        raise SpecError(f"{path}: {format_validation_error(exc)}") from None


URI_FIELDS = ("tracking_uri", "study_storage", "storage_path")
"""The spec's fields that name a store; a password in one leaves it in :func:`move_spec_credentials`."""


def move_spec_credentials(spec: SearchSpec, text: str) -> tuple[SearchSpec, str]:
    """``spec`` and its YAML ``text`` with each URI field passed through :func:`mg_tune.tracking.move_credentials`.

    The text gets the stripped URI wherever the original stood, so the
    ``spec.yaml`` logged to MLflow holds no password either (what is not
    written literally there is masked when it is logged,
    :func:`mg_tune.tracking.start_search`).

    Raises:
        ValueError: a secret that cannot be moved (``"<field> <uri>: ..."``, no password in it).
    """
    from mg_tune.tracking import move_credentials

    update = {}
    for field in URI_FIELDS:
        value = getattr(spec, field)
        if value:
            stripped = move_credentials(value, field)
            if stripped != value:
                update[field] = stripped
                text = text.replace(value, stripped)
    return (spec.model_copy(update=update) if update else spec), text


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

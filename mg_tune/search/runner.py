"""Run a search: a Ray Tune ``Tuner`` whose searcher is Optuna (multi-objective).

Every trial runs :func:`mg_tune.train.train`; after each epoch the trial logs
the epoch (metrics, checkpoint, overlay) to its MLflow child run *first* and
then reports to Tune with the checkpoint, so a trial that dies restarts from
its last checkpoint (``FailureConfig``) and MLflow never has a gap or a
duplicate. The Pareto front is then computed from MLflow alone
(:mod:`mg_tune.front`).

The driver logs the hypervolume after every trial-epoch
(:class:`~mg_tune.search.callbacks.HypervolumeTracker`); with ``scheduler:
mo_asha`` trials are stopped early by
:class:`~mg_tune.search.schedulers.MOASHAScheduler` and their runs end
FINISHED with tag ``mg_tune.stopped_early`` (their checkpoints stay). The
searcher tells Optuna each completed trial's constraint values
(:class:`~mg_tune.search.stopping.ResumableOptunaSearch`) and evaluates the
warm-start points first (:mod:`mg_tune.search.warm_start`); a ``budget``
ends the search early with its front (:mod:`mg_tune.search.budget`).

SIGTERM (``mg-tune jobs stop``, Ray's job stop) stops a search gracefully
(:mod:`mg_tune.search.stopping`): running trials' runs end KILLED with the
reason, their Optuna trials FAIL, and ``--resume`` continues them.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from mlflow import MlflowClient
from rich.console import Console

from mg_tune.checkpoint import check_checkpoint, epoch_dir
from mg_tune.data import REAL_LOADERS, check_dataset
from mg_tune.front import ParetoResult, search_pareto
from mg_tune.output import warning
from mg_tune.pareto_plots import import_in_background
from mg_tune.search.budget import TrialEpochBudget
from mg_tune.search.callbacks import HypervolumeTracker, StartingTable, StoppedTrialFinisher
from mg_tune.search.checkpoint_index import RESULT_KEY, CheckpointIndexWriter
from mg_tune.search.console import SearchConsole, ray_reporter
from mg_tune.search.failures import failure_causes
from mg_tune.search.gate import wait_at_gate
from mg_tune.search.placement import gpu_tags
from mg_tune.search.retention import CheckpointRetention
from mg_tune.search.sampling import DefineByRun, build_sampler, trial_params, warm_start_points
from mg_tune.search.schedulers import MOASHAScheduler, RunningTrialsLimiter
from mg_tune.search.split_sizes import warn_small_splits
from mg_tune.search.spec import SearchSpec
from mg_tune.search.spec_credentials import move_spec_credentials
from mg_tune.search.stopping import STOP_REASON, ResumableOptunaSearch, StopRequest, stop_on_sigterm
from mg_tune.search.warm_start import initial_points
from mg_tune.tracking import (
    FAILURE_TAG,
    RetryPolicy,
    SearchRun,
    TrialLogger,
    check_tracking_uri,
    download_resume_checkpoint,
    error_line,
    find_trial_run,
    finish_search,
    mark_orphans,
    move_credentials,
    readable_trial_name,
    start_search,
)
from mg_tune.train import DivergedError, EpochResult, train

DIVERGED = f"{DivergedError.__name__}:"
"""Prefix of the failure reason of a diverged trial (tag ``mg_tune.failure_reason``)."""


@dataclass
class SearchOutcome:
    search_run: SearchRun
    pareto: ParetoResult | None  # None: the search was stopped (SIGTERM) before it ended, or every trial failed
    trials: int
    errors: int
    failures: dict[str, str] = field(default_factory=dict)  # failed trial id -> cause (mg_tune.search.failures)
    stopped: bool = False  # SIGTERM: the search can be continued with --resume

    @property
    def all_failed(self) -> bool:
        """Every trial of the search failed (none ran to its end or was stopped by the scheduler or budget)."""
        return self.trials > 0 and self.errors == self.trials


def run_trial(config: dict[str, Any], spec: SearchSpec, search_run: SearchRun) -> None:
    """Ray Tune function trainable: one guided-training configuration.

    MLflow is the source of truth: a trial whose run is already FINISHED (the
    driver died before Ray recorded it) is not run again (its last metrics are
    reported, so the searcher records it as complete), and a restarted trial
    resumes from its newest epoch in MLflow (``checkpoint.pt`` + ``resume.pt``),
    so no epoch is trained or logged twice. Ray gets the metrics but no
    checkpoint: an epoch is in MLflow before Ray hears of it, so a Ray
    checkpoint could never be further along, and would store every trial's
    newest weights and optimizer state a second time (in ``storage_path``).
    Each report carries the epoch's row of the search's checkpoint index
    (:mod:`mg_tune.search.checkpoint_index`).
    A trial that diverged is deterministic: Ray's ``FailureConfig`` retries
    fail at once, untrained.
    """
    params = trial_params(config)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    existing = RetryPolicy().call(find_trial_run, MlflowClient(search_run.tracking_uri), search_run, trial_id)
    if existing is not None and existing.info.status == "FINISHED":
        tune.report(existing.data.metrics)
        return
    if existing is not None and existing.info.status == "FAILED" and existing.data.tags.get(FAILURE_TAG, "").startswith(DIVERGED):
        raise DivergedError(f"not retried: {existing.data.tags[FAILURE_TAG]}")
    train_config = spec.train_config(params)
    logger = TrialLogger(search_run, trial_id, params, run_name=readable_trial_name(train_config, trial_id))
    logger.set_tags(
        {"mg_tune.node_id": ray.get_runtime_context().get_node_id(), "mg_tune.pid": os.getpid(), "mg_tune.trial_name": context.get_trial_name(), **gpu_tags(train_config.device)}
    )
    work = Path(tempfile.mkdtemp(prefix="mg-tune-trial-"))

    def report(epoch: EpochResult) -> None:
        record = logger.log_epoch(epoch)
        unmeasured = {m: math.nan for m in spec.metric_names}  # an objective the split could not measure (no box): NaN to Tune, absent in MLflow
        tune.report({**unmeasured, **epoch.metrics, "epoch": epoch.epoch, RESULT_KEY: record})
        wait_at_gate(trial_id)  # tests only (mg_tune.search.gate)
        shutil.rmtree(epoch_dir(work / "checkpoints", epoch.epoch - 1), ignore_errors=True)  # in MLflow now: no local copy of every epoch

    try:
        resume_from = _resume_point(logger, work)
        train(train_config, callback=report, checkpoint_dir=work / "checkpoints", resume_from=resume_from, checkpoint_dtype=spec.checkpoints.dtype)
    except Exception as exc:
        logger.finish("FAILED", reason=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.finish("FINISHED")


def _resume_point(logger: TrialLogger, work: Path) -> Path | None:
    """The whole checkpoint of this trial's newest epoch in MLflow, or None (a new trial)."""
    logged = logger.logged_epochs()
    return download_resume_checkpoint(logger.search_run.tracking_uri, logger.run_id, max(logged), work / "mlflow") if logged else None


def ray_address(address: str | None) -> str:
    """Where the driver's Ray is: ``--address``, else ``$RAY_ADDRESS`` (set by ``ray job submit``), else a new local instance.

    Never Ray's own default for ``address=None``, which joins the cluster
    named in ``/tmp/ray/ray_current_cluster``: the newest ``ray start`` on the
    machine, still written there after that cluster stopped (the driver then
    waits minutes on a dead GCS), or somebody else's.
    """
    return address or os.environ.get("RAY_ADDRESS") or "local"


def storage_path(spec: SearchSpec) -> str:
    """Where Ray Tune keeps the experiment state: the spec's path, ``./runs`` by default.

    A URI (``s3://bucket/prefix?endpoint_override=host:port&scheme=http``)
    keeps trial checkpoints off the nodes, so they survive losing one.
    """
    path = spec.storage_path or "runs"
    return path if "://" in path else str(Path(path).resolve())


def experiment_path(spec: SearchSpec) -> str:
    """``storage_path/name``; for a URI the name joins the path, before any ``?query``."""
    base, sep, query = storage_path(spec).partition("?")
    return f"{base.rstrip('/')}/{spec.name}{sep}{query}"


def study_storage(spec: SearchSpec) -> optuna.storages.BaseStorage | None:
    """The Optuna study's RDB (``spec.study_storage``, e.g. ``postgresql://…``), or None for in-memory.

    With an RDB the study outlives the driver: a restarted driver, or a
    second ``mg-tune search`` of the same name, loads the same study (named
    after the search) and samples with every finished trial's results.

    A password in the URL goes to the password file libpq reads
    (:func:`mg_tune.tracking.move_credentials`), so the storage, which Ray
    pickles with the searcher into ``tuner.pkl``, holds none.

    Raises:
        ValueError: the database cannot be reached (no password in the message).
    """
    if not spec.study_storage:
        return None
    url = move_credentials(spec.study_storage, "study_storage")
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy/driver errors: one line
        raise ValueError(f"study_storage {url}: cannot open ({error_line(exc)})") from None


def fail_lost_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    """Tell FAIL to the study's trials still RUNNING once every Ray trial has ended or stopped; return how many.

    They were sampled by a driver that was killed before Ray saved them, so
    no trial will ever report them (the counterpart of ``mark_orphans``), or
    they were stopped (:mod:`mg_tune.search.stopping`: a resumed trial's
    result becomes a new Optuna trial).
    """
    study = optuna.load_study(study_name=name, storage=storage)
    lost = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in lost:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(lost)


def total_trials(spec: SearchSpec) -> int:
    """How many trials the search runs: every grid point with ``sampler: grid``, else ``trials``."""
    return len(warm_start_points(spec)) if spec.sampler == "grid" else spec.trials


def build_scheduler(spec: SearchSpec) -> MOASHAScheduler | None:
    """The spec's early-stopping scheduler over its objectives (``None``: run every trial to the end)."""
    if spec.scheduler is None:
        return None
    return MOASHAScheduler(
        spec.metric_names,
        spec.modes,
        time_attr="epoch",
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        max_t=spec.max_t,
        type=spec.scheduler.type,
    )


def build_searcher(spec: SearchSpec, study: optuna.storages.BaseStorage | None = None, points: list[dict[str, Any]] | None = None) -> OptunaSearch:
    """OptunaSearch over the spec's objectives and constraints; ``points`` (default: the paper grid's, :func:`warm_start_points`) are suggested first."""
    points = warm_start_points(spec) if points is None else points
    return ResumableOptunaSearch(
        DefineByRun(spec),
        metric=spec.metric_names,
        mode=spec.modes,
        sampler=build_sampler(spec),
        seed=spec.seed,
        points_to_evaluate=points or None,
        study_name=spec.name,
        storage=study,
        constraints=spec.parsed_constraints if spec.constraints_in_sampler else [],
    )


def build_tuner(
    spec: SearchSpec,
    search_run: SearchRun,
    resume: bool,
    study: optuna.storages.BaseStorage | None = None,
    points: list[dict[str, Any]] | None = None,
    verbose: bool = False,
    live: bool | None = None,
    console: Console | None = None,
) -> tune.Tuner:
    """The Tuner of a search: OptunaSearch (+ ``points`` first; its study in ``study`` if given), the spec's scheduler and budget, tracking callbacks.

    It prints through :class:`~mg_tune.search.console.SearchConsole` on ``console`` (stdout; ``live``: None = on a
    terminal); Ray Tune's reporter only with ``verbose``, when the console prints event lines, never redrawing over Ray's.
    """
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, search_run=search_run),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    path = experiment_path(spec)
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    scheduler = build_scheduler(spec)
    budget = spec.budget
    starting_table = StartingTable(search_run)  # one read of MLflow for every callback's setup
    index = CheckpointIndexWriter(search_run, starting_table=starting_table)
    tracker = HypervolumeTracker(spec, search_run, starting_table)
    callbacks: list[tune.Callback] = [index, tracker]
    if spec.checkpoints.keep != "all":
        callbacks.append(CheckpointRetention(spec, search_run, index, starting_table))
    if scheduler is not None:
        callbacks.append(StoppedTrialFinisher(search_run))
    callbacks.append(SearchConsole(spec, search_run, tracker, total_trials(spec), live=False if verbose else live, console=console))  # after the tracker: prints its numbers
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=RunningTrialsLimiter(build_searcher(spec, study, points), max_concurrent=spec.concurrency),
            num_samples=total_trials(spec),
            scheduler=scheduler,
            reuse_actors=spec.reuse_actors,  # a process runs trial after trial: ~9 s of start-up per trial saved (bench/search_overhead.py)
            time_budget_s=budget.time_s if budget is not None else None,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage_path(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=callbacks,
            stop=TrialEpochBudget(search_run, budget.trial_epochs) if budget is not None and budget.trial_epochs is not None else None,
            verbose=1 if verbose else 0,
        ),
    )


def _orphan_reason(spec: SearchSpec, stop_requested: bool, status: str) -> str:
    """Why a trial's run was still RUNNING when the search ended (tag ``mg_tune.failure_reason``)."""
    if stop_requested:
        return STOP_REASON
    if status == "FINISHED" and spec.budget is not None:  # a search that ends normally leaves no trial running but at its budget
        return f"stopped when the search's budget ({spec.budget}) was spent"
    return "the search driver stopped before this trial finished"


def run_search(
    spec: SearchSpec, spec_text: str, tracking_uri: str, address: str | None = None, resume: bool = False, verbose: bool = False, live: bool | None = None, console: Console | None = None
) -> SearchOutcome:
    """Run (or resume) the search ``spec.name`` and return its Pareto front.

    ``live``, ``verbose``, ``console``: see :func:`build_tuner`; ``verbose`` also lets the trials' output through
    (``log_to_driver``). A search whose every trial failed ends FAILED, without a front; ``failures``: each cause.

    A real data set's annotations, the initial checkpoint, the tracking
    store and a ``warm_start`` search are checked before anything is written,
    so a wrong ``root``, file, server or search name fails here with one line,
    not inside every trial. Held-out and validation splits too small for
    their use are warned about once (:mod:`mg_tune.search.split_sizes`).

    Passwords in ``tracking_uri`` and the spec's URIs leave them here
    (:func:`mg_tune.search.spec_credentials.move_spec_credentials`), before Ray starts,
    so Ray's workers inherit them with the environment; a Ray started
    elsewhere (``address``, ``$RAY_ADDRESS``, one already initialised in this
    process) would not see them, so a search with one is refused there.
    """
    given_spec, given_uri = spec, tracking_uri
    spec, spec_text = move_spec_credentials(spec, spec_text)
    tracking_uri = move_credentials(tracking_uri, "tracking URI")
    if os.environ.get("MLFLOW_TRACKING_URI") == given_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # inherited by Ray's workers: without the password too
    data_warnings: list[str] = []  # duplicates, leaks, classes without images: printed once the pre-flight passed
    if spec.data.name in REAL_LOADERS:
        _, reports = check_dataset(spec.data, images=False, warn=data_warnings.append)
        spec.check_val_split(reports)
    if spec.fixed.get("init_checkpoint"):
        check_checkpoint(spec.fixed["init_checkpoint"], "fixed.init_checkpoint")
    check_tracking_uri(tracking_uri)
    moved = spec != given_spec or tracking_uri != given_uri
    if moved and (ray.is_initialized() or ray_address(address) != "local"):
        where = "the Ray this process started already" if ray.is_initialized() else f"the Ray at {ray_address(address)}"
        raise ValueError(
            f"a password in a URI reaches only a Ray this search starts, whose workers inherit the environment; {where} would not see it: "
            "remove it from the URI and set it where that Ray runs ($MLFLOW_TRACKING_PASSWORD, ~/.pgpass, $AWS_SECRET_ACCESS_KEY)"
        )
    points = initial_points(spec, tracking_uri)
    study = study_storage(spec)
    search_run = start_search(spec.name, spec.model_dump(mode="json"), spec_text, tracking_uri, resume=resume)
    for text in data_warnings:
        warning(text)
    warn_small_splits(spec.data, search_run)
    if not ray.is_initialized():
        ray.init(address=ray_address(address), include_dashboard=False, log_to_driver=verbose, configure_logging=False)
    # Ray Tune snapshots the experiment at most every 10 s by default; a trial started after the last
    # snapshot is unknown to --resume (its MLflow run is marked KILLED, a replacement is sampled).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    status = "FAILED"
    stop = StopRequest()
    try:
        tuner = build_tuner(spec, search_run, resume, study, points, verbose=verbose, live=live, console=console)
        import_in_background()  # the front's plots at the end: their imports happen while the trials run
        with stop_on_sigterm() as stop, ray_reporter(verbose):  # a graceful stop (mg-tune jobs stop): see mg_tune.search.stopping
            results = tuner.fit()
        errors = {r.metrics["trial_id"]: r.error for r in results if r.error is not None}  # Ray fills trial_id in every Result
        failures = failure_causes(search_run, errors)
        outcome = SearchOutcome(search_run, None, trials=len(results), errors=len(errors), failures=failures, stopped=stop.requested)
        status = "KILLED" if stop.requested else "FAILED" if outcome.all_failed else "FINISHED"
        if study is not None:
            fail_lost_trials(study, spec.name)
    finally:
        mark_orphans(search_run, reason=_orphan_reason(spec, stop.requested, status))
        finish_search(search_run, status)
    if outcome.stopped or outcome.all_failed:
        return outcome
    outcome.pareto = search_pareto(
        tracking_uri,
        spec.name,
        spec.metric_names,
        [m == "max" for m in spec.modes],
        constraints=spec.parsed_constraints,
        plot_dir=Path(storage_path(spec)) / spec.name / "pareto" if "://" not in storage_path(spec) else None,
    )
    return outcome

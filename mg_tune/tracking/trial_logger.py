"""One trial's child run: its params, every epoch's metrics, checkpoint (a LoggedModel) and overlay; its end."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, RunTag

from mg_tune.checkpoint import RESUME_FILE
from mg_tune.tracking.checkpoint_index import checkpoint_record
from mg_tune.tracking.checkpoints import _delete_artifact
from mg_tune.tracking.layout import (
    BATCH,
    CHECKPOINT_ARTIFACT,
    EPOCH_TAG,
    FAILURE_TAG,
    MAX_KEY,
    MODEL_TYPE,
    PARENT_TAG,
    ROLE_TAG,
    SEARCH_TAG,
    TRIAL_TAG,
    _as_params,
    _log_params,
    _model_name,
    _tag_value,
    epoch_metrics,
    model_epoch,
    overlay_artifact,
)
from mg_tune.tracking.queries import _prefer, _quote, iter_logged_models, model_metrics
from mg_tune.tracking.retry import RetryPolicy
from mg_tune.tracking.search_run import SearchRun, find_trial_run

__all__ = ["TrialLogger"]

if TYPE_CHECKING:
    from mg_tune.train import EpochResult


def _stage(src: Path, folder: Path, name: str) -> Path:
    """``folder/name`` pointing at ``src`` (hard link when possible: checkpoints can be large)."""
    dst = folder / name
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


class TrialLogger:
    """Logs one trial into its child run of a search; safe to rebuild after a crash.

    ``TrialLogger(search_run, trial_id, params)`` finds the child run tagged
    ``mg_tune.trial_id=trial_id`` under the search's parent run or creates it
    (named ``run_name``, default the trial id; tags ``mg_tune.role=trial``,
    ``mlflow.parentRunId``), sets it RUNNING and
    logs ``params`` (flattened) once: params already on the run are not
    re-logged. Every MLflow call is retried per ``retry``.
    """

    def __init__(self, search_run: SearchRun, trial_id: str, params: dict, *, retry: RetryPolicy | None = None, run_name: str | None = None) -> None:
        _quote(trial_id)
        self.search_run = search_run
        self.trial_id = trial_id
        self.run_name = run_name or trial_id
        self.retry = retry or RetryPolicy()
        self.client = MlflowClient(search_run.tracking_uri)
        self.run_id: str = self.retry.call(self._open_run, _as_params(params))
        self._models: dict[int, LoggedModel] = {}
        self.retry.call(self._refresh_models)
        self._with_resume = set(self._models)  # epochs that may still hold resume.pt (an earlier process of this trial)

    # -- setup
    def _open_run(self, params: dict[str, str]) -> str:
        run = find_trial_run(self.client, self.search_run, self.trial_id)
        if run is not None:
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            missing = {k: v for k, v in params.items() if k not in run.data.params}
            _log_params(self.client, run.info.run_id, missing)
            return run.info.run_id
        tags = {TRIAL_TAG: self.trial_id, PARENT_TAG: self.search_run.run_id, SEARCH_TAG: self.search_run.name, ROLE_TAG: "trial"}
        run = self.client.create_run(self.search_run.experiment_id, run_name=self.run_name, tags=tags)
        _log_params(self.client, run.info.run_id, params)
        return run.info.run_id

    def _refresh_models(self) -> None:
        models: dict[int, LoggedModel] = {}
        for model in iter_logged_models(self.client, self.search_run.experiment_id, f"source_run_id = {_quote(self.run_id)}"):
            epoch = model_epoch(model)
            if epoch is not None and model.status != LoggedModelStatus.FAILED:
                models[epoch] = _prefer(models.get(epoch), model)
        self._models = models

    # -- public API
    def logged_epochs(self) -> set[int]:
        """Epochs whose checkpoint and metrics are completely stored (READY models), read from MLflow."""
        self.retry.call(self._refresh_models)
        return {e for e, m in self._models.items() if m.status == LoggedModelStatus.READY}

    def log_epoch(self, result: EpochResult) -> dict[str, Any]:
        """Store one epoch: metrics (``step=epoch``, plus ``epoch``), checkpoint, overlay. Idempotent.

        Steps, each safe to repeat: create the epoch's LoggedModel (PENDING)
        unless one exists; upload ``result.checkpoint`` as its
        ``checkpoint.pt`` (and ``resume.pt`` beside it, if there is one;
        older epochs' ``resume.pt`` are deleted once this epoch is READY); upload ``result.overlay`` as run artifact
        ``overlays/epoch=NNN.png``; ``log_batch`` the metrics on the run,
        linked to the model, timestamped with the model's creation time;
        finalise the model READY. An epoch already READY is skipped.

        Returns the epoch's row of the search's checkpoint index
        (:func:`mg_tune.tracking.checkpoint_record`: the READY model and the
        metrics stored with it), which the trial reports to the driver.
        """
        return self.retry.call(self._log_epoch_once, result)

    def _log_epoch_once(self, result: EpochResult) -> dict[str, Any]:
        epoch = int(result.epoch)
        model = self._models.get(epoch)
        if model is not None and model.status == LoggedModelStatus.READY:  # first write wins: its metrics are the stored ones
            return checkpoint_record(self.run_id, epoch, model, model_metrics(model, epoch))
        if model is None:
            model = self.client.create_logged_model(
                self.search_run.experiment_id,
                name=_model_name(self.run_name, epoch),
                source_run_id=self.run_id,
                tags={TRIAL_TAG: self.trial_id, EPOCH_TAG: str(epoch), SEARCH_TAG: self.search_run.name},
                model_type=MODEL_TYPE,
            )
            self._models[epoch] = model
        with tempfile.TemporaryDirectory() as tmp:
            if result.checkpoint is not None:
                folder = Path(tmp) / "model"
                folder.mkdir()
                _stage(Path(result.checkpoint), folder, CHECKPOINT_ARTIFACT)
                resume = Path(result.checkpoint).with_name(RESUME_FILE)
                if resume.exists():
                    _stage(resume, folder, RESUME_FILE)
                    self._with_resume.add(epoch)
                self.client.log_model_artifacts(model.model_id, str(folder))
            if result.overlay is not None:
                folder, name = overlay_artifact(epoch).split("/")
                self.client.log_artifact(self.run_id, str(_stage(Path(result.overlay), Path(tmp), name)), folder)
        stamp = model.creation_timestamp
        values = {**{k: float(v) for k, v in result.metrics.items()}, "epoch": float(epoch)}
        metrics = epoch_metrics(self.run_id, model.model_id, epoch, values, stamp)
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self._models[epoch] = self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        for older in sorted(e for e in self._with_resume if e < epoch and e in self._models):
            _delete_artifact(self.search_run.tracking_uri, self._models[older], RESUME_FILE)
            self._with_resume.discard(older)
        return checkpoint_record(self.run_id, epoch, self._models[epoch], {k: v for k, v in values.items() if not math.isnan(v)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set extra tags on the trial run (values stringified, redacted, truncated to MLflow's limit)."""
        items = [RunTag(str(k)[:MAX_KEY], _tag_value(str(v))) for k, v in tags.items()]
        for i in range(0, len(items), BATCH):
            self.retry.call(self.client.log_batch, self.run_id, tags=items[i : i + BATCH])

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Terminate the trial run; with ``reason``, tag ``mg_tune.failure_reason`` (use it with FAILED/KILLED).

        A FINISHED run loses the reason an earlier attempt left (a stop, a lost
        driver): it finished, so no failure is true of it any more.

        Models of epochs left incomplete (PENDING) are finalised FAILED. A
        FINISHED trial is never run again, so its newest epoch's ``resume.pt``
        is deleted; a FAILED or KILLED one keeps it for a retry or ``--resume``.
        """

        def _finish() -> None:
            if reason is not None:
                self.client.set_tag(self.run_id, FAILURE_TAG, _tag_value(reason))
            elif status == "FINISHED" and FAILURE_TAG in self.client.get_run(self.run_id).data.tags:
                self.client.delete_tag(self.run_id, FAILURE_TAG)
            for epoch, model in list(self._models.items()):
                if model.status == LoggedModelStatus.PENDING:
                    self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
                    del self._models[epoch]
            if status == "FINISHED":
                for epoch in sorted(self._with_resume & set(self._models)):
                    _delete_artifact(self.search_run.tracking_uri, self._models[epoch], RESUME_FILE)
                self._with_resume.clear()
            self.client.set_terminated(self.run_id, status)

        self.retry.call(_finish)

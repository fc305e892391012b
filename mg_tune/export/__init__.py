"""Export a checkpoint as a self-contained model package, and load packages safely.

A package holds five files (:data:`EXPORT_FILES`):

==================  ===========================================================
``model.pt``        the model's ``state_dict`` only: tensors by name, loadable
                    with ``torch.load(weights_only=True)`` (no optimiser state)
``config.json``     ``TrainConfig.package_json()``: rebuilds the model; only
                    the data fields that apply to its data set
``dataset.json``    the classes in output order, multi-label or not, the input
                    size and preprocessing (:class:`mg_tune.data.card.DatasetCard`)
``metrics.json``    which checkpoint it is (search, trial, epoch, run and
                    LoggedModel ids) and its metrics: ``validation`` and
                    ``train`` of that epoch, ``test`` where ``mg-tune evaluate``
                    logged them (``test_<name>`` on the LoggedModel)
``MODEL_CARD.md``   short human summary: hyperparameters, metrics, how to load
==================  ===========================================================

Targets of :func:`export_checkpoint`: a local directory, ``s3://bucket/prefix``
and, additionally, the MLflow Model Registry (the epoch's LoggedModel becomes
a complete MLflow Model and a registered model version, optionally with an
alias; :mod:`mg_tune.model_registry`).

Nothing half-written: the checkpoint is looked up, downloaded and the whole
package is written to a staging directory first. A new local directory is
then moved into place with one rename (a crash can leave a hidden staging
directory ``.<name>.*`` beside it, never a partial package); on S3 the files
are uploaded only once all of them exist locally, ``metrics.json`` last, so
an S3 package that has ``metrics.json`` is complete. A target that already holds something other
than an export of the same checkpoint is refused, and so are local paths
with ``..`` or whose symlinks lead out of the current directory.

:func:`load_model` reads a package (directory or ``s3://`` prefix), a raw
``checkpoint.pt``, or an MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``models:/<model_id>``, ``runs:/…``) with ``weights_only=True`` and rebuilds the model.

Modules: ``package`` (the checkpoint in MLflow and the package's files), ``targets``
(local directory, ``s3://``), ``loading`` (:func:`load_model`); :func:`export_checkpoint` is here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mg_tune.checkpoint import CHECKPOINT_FILE
from mg_tune.export._loading import load_model
from mg_tune.export._package import EXPORT_FILES, _find_source, _write_package
from mg_tune.export._targets import _target
from mg_tune.model_registry import register_checkpoint
from mg_tune.output import NO_PROGRESS, ProgressBars
from mg_tune.tracking import download_model_file

__all__ = ["EXPORT_FILES", "export_checkpoint", "load_model"]


def export_checkpoint(
    tracking_uri: str,
    search_name: str,
    trial_id: str,
    epoch: int,
    target: str | os.PathLike[str],
    *,
    s3_endpoint_url: str | None = None,
    register: str | None = None,
    alias: str | None = None,
    force: bool = False,
    progress: ProgressBars = NO_PROGRESS,
) -> str:
    """Export the checkpoint of ``(trial_id, epoch)`` of search ``search_name`` as a model package at ``target``.

    Steps: find the epoch's READY LoggedModel (experiment, parent run, trial
    run, models of that run: 4 requests), check the target, download
    ``checkpoint.pt``, write the package (see the module docstring) into a
    staging directory, register it if asked, then publish it: a local
    directory (created; an existing one must be empty, or hold an earlier
    export and ``force`` be given, which replaces it) or ``s3://bucket/prefix``
    (the same rules; boto3; endpoint ``s3_endpoint_url`` or ``$MLFLOW_S3_ENDPOINT_URL`` /
    ``$AWS_ENDPOINT_URL``). With ``register``, the LoggedModel
    (``models:/<model_id>``) becomes a complete MLflow Model and a version
    of registered model ``register`` (:func:`mg_tune.model_registry.register_checkpoint`;
    an already registered checkpoint keeps its version), with ``alias`` if given.
    ``progress`` shows the bytes uploaded to ``s3://``.

    Returns:
        The URI written: the absolute directory path or ``s3://bucket/prefix``.

    Raises:
        ValueError: unknown search, trial or epoch; a refused or unwritable
            target; a checkpoint that is not an mg-tune checkpoint; a
            registry error. Nothing is written at the target then.
    """
    if alias and not register:
        raise ValueError(f"alias {alias!r} needs a registered model name (register=...)")
    source = _find_source(tracking_uri, search_name, trial_id, epoch)
    destination = _target(target, s3_endpoint_url, progress)
    destination.check(source.model.model_id, force)
    with destination.staging() as staged, tempfile.TemporaryDirectory(prefix="mg-tune-ckpt-") as tmp:
        checkpoint = download_model_file(tracking_uri, source.model, CHECKPOINT_FILE, Path(tmp))
        _write_package(source, checkpoint, staged, destination.uri, f"models:/{register}@{alias}" if register and alias else None)
        if register:
            register_checkpoint(tracking_uri, source.model, register, alias)
        destination.publish(staged)
    return destination.uri

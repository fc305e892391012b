"""A search's spec as MLflow keeps it, read back: the one reader of a search's objectives and constraints.

:func:`mg_tune.tracking.start_search` logs the spec's text as the artifact ``spec.yaml`` of
the search's parent run (and its flattened fields as params, cut to MLflow's limits: not
read back here). ``mg-tune pareto``, ``evaluate``, the Pareto explorer and ``mg-tune jobs
list`` take a search's objectives, directions and constraints from :func:`search_objectives`,
so a front they compute is the search's own unless ``--objectives`` overrides it.

Only the ``objectives`` and ``constraints`` fields are validated (each as the spec validates
it, with the spec's defaults for what the YAML leaves out): the whole spec was validated
when the search ran, and parts of it name what another machine lacks (the data root, an
``init_checkpoint`` file), which must not stop reading a front.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from mg_tune.pareto import Objectives
from mg_tune.search.spec import SearchSpec, format_validation_error
from mg_tune.search.spec_fields import Objective, parse_constraint
from mg_tune.textfiles import decode_problem
from mg_tune.tracking import SPEC_ARTIFACT, experiment_name, find_search_run, redact_uri

__all__ = ["front_objectives", "logged_spec", "objectives_of", "search_objectives"]


def logged_spec(tracking_uri: str, search_name: str) -> dict[str, Any]:
    """The mapping of the search's ``spec.yaml`` (the YAML as the user wrote it, password redacted).

    Raises:
        ValueError: one line: no such search, no parent run, or a ``spec.yaml`` missing or unreadable.
    """
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(search_name))
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ValueError(f"no search named {search_name!r} in {redact_uri(tracking_uri)}")
    parent = find_search_run(client, experiment.experiment_id)
    where = f"search {search_name!r}"
    if parent is None:
        raise ValueError(f"{where} has no search run in {redact_uri(tracking_uri)}, so no logged spec to read its objectives from; give them with --objectives")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = Path(client.download_artifacts(parent.info.run_id, SPEC_ARTIFACT, tmp)).read_text(encoding="utf-8")
        except (MlflowException, OSError) as exc:
            raise ValueError(f"{where}: cannot read its logged {SPEC_ARTIFACT} ({type(exc).__name__}); give the objectives with --objectives") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: its logged {SPEC_ARTIFACT} is {decode_problem(exc)}; give the objectives with --objectives") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: its logged {SPEC_ARTIFACT} is not a spec mapping; give the objectives with --objectives")
    return raw


def objectives_of(raw: Mapping[str, Any]) -> Objectives:
    """The objectives (names, directions) and constraints of a spec mapping, defaults as :class:`SearchSpec` has them.

    Raises:
        ValueError: ``objectives``/``constraints`` that the spec would refuse (one line naming the field).
    """
    items = raw.get("objectives", SearchSpec.model_fields["objectives"].default_factory())
    if not isinstance(items, list) or not isinstance(raw.get("constraints", []), list):
        raise ValueError("objectives and constraints must be lists")
    try:
        objectives = [o if isinstance(o, Objective) else Objective.model_validate({"name": o} if isinstance(o, str) else o) for o in items]
    except ValidationError as exc:
        raise ValueError(f"objectives: {format_validation_error(exc)}") from None
    constraints = tuple(parse_constraint(str(text)) for text in raw.get("constraints", []))
    return Objectives(tuple(o.name for o in objectives), tuple(o.direction == "max" for o in objectives), constraints)


def search_objectives(tracking_uri: str, search_name: str) -> Objectives:
    """The objectives, directions and constraints search ``search_name`` ran with, read from MLflow (module doc).

    Raises:
        ValueError: one line (see :func:`logged_spec`, :func:`objectives_of`).
    """
    raw = logged_spec(tracking_uri, search_name)
    try:
        return objectives_of(raw)
    except ValueError as exc:
        raise ValueError(f"search {search_name!r}: its logged {SPEC_ARTIFACT}: {exc}; give the objectives with --objectives") from None


def front_objectives(tracking_uri: str, search_name: str, override: str | None = None) -> tuple[Objectives, bool]:
    """The objectives a front of search ``search_name`` is on, and whether they are the search's own.

    ``override`` (``--objectives`` as given, e.g. ``"f1,epg:max"``) replaces the objectives;
    the search's constraints still decide which checkpoints are eligible (none when its
    spec cannot be read, e.g. no such search: that fails where the front is read, naming it).

    Raises:
        ValueError: one line: ``override`` does not parse, or (no ``override``) :func:`search_objectives`'s.
    """
    if override is None:
        return search_objectives(tracking_uri, search_name), True
    given = Objectives.parse(override)
    try:
        own = search_objectives(tracking_uri, search_name)
    except ValueError:
        return given, False
    return replace(given, constraints=own.constraints), (given.names, given.maximize) == (own.names, own.maximize)

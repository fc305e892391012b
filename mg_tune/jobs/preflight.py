"""The pre-flight of a submitted search: checked on the cluster, in the environment its job will have, before it is submitted.

A Ray job on a cluster runs its entrypoint with the environment of the ``ray start`` that
started the head (``PATH`` included) plus the job's ``runtime_env``; nothing of the
submitting shell reaches it. ``ray up cluster/cluster.yaml`` prepares that environment; a
hand-started ``ray start --head`` may not (``/bin/sh: 1: mg-tune: not found``, an
unreachable tracking server, an unwritable storage path), and every job would then fail
at once. So :func:`mg_tune.jobs.client.submit_search` first runs a short job,
``mg-tune jobs preflight``, with the search's ``runtime_env``. It checks, on the head:

* ``mg-tune`` runs there, at the submitting machine's version;
* every alive node's Ray workers (where the trials run) import mg-tune at that version: a
  zero-CPU task pinned to each node reports its ``sys.executable`` and mg-tune's version
  (the task is pickled by value, so it runs where mg-tune is missing too);
* the tracking URI the search will use (the spec's, else the cluster's
  ``$MLFLOW_TRACKING_URI``) answers, within :data:`TRACKING_TIMEOUT_S`; the search
  exists there for ``--resume`` and does not otherwise;
* the storage path (the spec's, else ``$MG_TUNE_STORAGE_PATH``, else ``~/mg-tune-runs``)
  takes a file (written and deleted).

It prints one line ``MG_TUNE_PREFLIGHT {json}``: the head's Python (the search's job runs
``<python> -m mg_tune.cli search …`` with it, not whatever ``PATH`` finds later) and the
problems found, each one phrase naming what is missing.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

SPEC_ENV = "MG_TUNE_SPEC"
"""Environment variable of a job (the search's and its pre-flight's) holding the spec's text."""
MARK = "MG_TUNE_PREFLIGHT "
"""Prefix of the pre-flight's one result line in the job's log."""
VERSION_ENV = "MG_TUNE_EXPECTED_VERSION"
RESUME_ENV = "MG_TUNE_RESUME"
NAME_ENV = "MG_TUNE_SEARCH_NAME"
TRACKING_TIMEOUT_S = 5.0
NODE_TIMEOUT_S = 60.0
INIT_ATTEMPTS = 3
DEFAULT_STORAGE = "~/mg-tune-runs"


def version() -> str:
    """mg-tune's installed version (what the submitting machine and the cluster must agree on)."""
    return metadata.version("mg-tune")


def probe_node() -> dict:
    """On one node's Ray worker: its Python and mg-tune's version there (stdlib only: runs where mg-tune is missing)."""
    import platform
    import sys
    from importlib import metadata

    try:
        found = metadata.version("mg-tune")
        __import__("mg_tune.search.runner")
    except Exception as exc:  # PackageNotFoundError, ImportError: reported, not raised
        found = f"not importable ({type(exc).__name__}: {exc})"
    return {"python": sys.executable, "mg_tune": found, "host": platform.node()}


def node_problems(expected: str) -> list[str]:
    """Alive nodes whose Ray workers lack mg-tune ``expected`` (one task per node, 0 CPUs: runs beside busy trials)."""
    import ray
    import ray.cloudpickle
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    address = os.environ.get("RAY_ADDRESS") or "auto"
    for attempt in range(INIT_ATTEMPTS):  # a loaded head can time out one driver's connection (seen at load 9 on 2 cores)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            break
        except ConnectionError as exc:
            if attempt == INIT_ATTEMPTS - 1:
                return [f"a driver on the head cannot connect to Ray at {address} ({exc}), so no search driver could"]
            time.sleep(5)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes]
    problems = []
    done, late = ray.wait(refs, num_returns=len(refs), timeout=NODE_TIMEOUT_S)
    for node, ref in zip(nodes, refs):
        where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        if ref in late:
            problems.append(f"{where} did not run a 0-CPU task within {NODE_TIMEOUT_S:.0f} s")
            continue
        try:
            found = ray.get(ref)
        except Exception as exc:  # the worker could not even start the task
            problems.append(f"{where}: a Ray task failed there ({type(exc).__name__})")
            continue
        if found["mg_tune"] != expected:
            problems.append(f"{where}: Ray's workers ({found['python']}) have mg-tune {found['mg_tune']}, the submitting machine {expected}")
    return problems


def tracking_problems(uri: str | None, name: str, resume: bool) -> list[str]:
    """The tracking URI of the search, reachable from here, holding the search exactly when it is resumed."""
    from mlflow import MlflowClient

    from mg_tune.tracking import check_tracking_uri, experiment_name, find_search_run, redact_uri

    if not uri:
        return ["no tracking URI on the cluster: set MLFLOW_TRACKING_URI in the environment of 'ray start' on the head (or tracking_uri in the spec)"]
    try:
        check_tracking_uri(uri, timeout=TRACKING_TIMEOUT_S)
    except ValueError as exc:
        return [f"from the cluster, {exc}"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(name))
    ran = experiment is not None and find_search_run(client, experiment.experiment_id) is not None
    if resume and not ran:
        return [f"--resume: search {name} never ran in {redact_uri(uri)}: check the name, or leave out --resume to start it"]
    if ran and not resume:
        return [f"search {name} exists in {redact_uri(uri)}: add --resume to continue it, or choose another --name"]
    return []


def storage_problems(path: str) -> list[str]:
    """Whether Ray Tune can keep the search's state at ``path`` (a directory or a ``pyarrow`` URI): one file written and deleted."""
    probe = f".mg-tune-preflight-{uuid.uuid4().hex}"
    try:
        if "://" in path:
            import pyarrow.fs

            fs, root = pyarrow.fs.FileSystem.from_uri(path)
            with fs.open_output_stream(f"{root.rstrip('/')}/{probe}") as out:
                out.write(b"ok")
            fs.delete_file(f"{root.rstrip('/')}/{probe}")
        else:
            folder = Path(path).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            (folder / probe).write_bytes(b"ok")
            (folder / probe).unlink()
    except Exception as exc:  # OSError, pyarrow's errors: one phrase
        return [f"storage path {path} is not writable from the head ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"]
    return []


def run_checks() -> dict:
    """Every check of the module docstring, for the spec in ``$MG_TUNE_SPEC``; the result line's content."""
    import yaml

    from mg_tune.search.spec import SearchSpec

    expected = os.environ.get(VERSION_ENV, "")
    problems = []
    if expected and version() != expected:
        problems.append(f"the head runs mg-tune {version()} ({sys.executable}), the submitting machine {expected}")
    spec = SearchSpec.model_validate(yaml.safe_load(os.environ[SPEC_ENV]))
    problems += node_problems(expected or version())
    name = os.environ.get(NAME_ENV) or spec.name
    problems += tracking_problems(spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), name, os.environ.get(RESUME_ENV) == "1")
    given = spec.storage_path if spec.storage_path and ("://" in spec.storage_path or Path(spec.storage_path).is_absolute()) else None
    problems += storage_problems(given or os.environ.get("MG_TUNE_STORAGE_PATH") or DEFAULT_STORAGE)  # as the job's entrypoint chooses it
    return {"python": sys.executable, "version": version(), "problems": problems}


def main() -> None:
    """Entry point of the pre-flight job (``mg-tune jobs preflight``): print the result line."""
    print(MARK + json.dumps(run_checks()), flush=True)

"""Searches as Ray jobs on a real local cluster (issue 19): submit, list, follow, stop, resume, lose a node.

The cluster is what ``ray up`` makes, on 127.0.0.1: a head (``ray start --head`` with its
dashboard and job server bound to 127.0.0.1, token authentication on) and a worker node (a
second ``ray start``), 1 CPU each; the MLflow server (PostgreSQL + S3) of the session, whose
URI reaches the jobs through the cluster's environment only. The "laptop" is the ``mg-tune``
CLI in another environment: the token, no tracking URI.

One scenario runs once (module fixture) and the tests assert on what it left in MLflow and
Optuna: two searches submitted at once; ``jobs list`` while they run; a whole worker node
killed (every process of it, SIGKILL) when a trial on it has logged epoch 1, and a
replacement node started; ``alpha``'s driver killed and ``alpha`` resubmitted with
``--resume``; ``beta`` stopped with ``jobs stop`` while its trial is held mid-run (SIGSTOP,
so the stop cannot miss it), then resumed with ``submit --resume --wait``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow import MlflowClient

from mg_tune.front import checkpoint_table
from mg_tune.search.gate import GATE_ENV
from mg_tune.search.stopping import STOP_REASON
from mg_tune.server import free_port
from mg_tune.tracking import FAILURE_TAG, ROLE_TAG, SEARCH_TAG, TRIAL_TAG, experiment_name

from conftest import Gate, wait_for
from helpers.ray_nodes import RayNode

pytestmark = pytest.mark.slow

MG_TUNE = str(Path(sys.executable).with_name("mg-tune"))
RAY = str(Path(sys.executable).with_name("ray"))
HINT = re.compile(r"(?:^[a-z ]+:\s+|\((?:or|resume): |continue it with: )((?:mg-tune|ray) .+?)(?=\s{3}|\)$|$)")
"""A command mg-tune prints for the user to paste: after a label, in ``(or: …)``/``(resume: …)``, or after ``continue it with:``."""


def hints(output: str) -> list[list[str]]:
    """Every command in ``output`` (as argv), in order."""
    return [shlex.split(found) for line in output.splitlines() for found in HINT.findall(line.strip())]
EPOCHS = 4  # a trial is held at epoch 1 or 2, where the gate (mg_tune.search.gate) stops it while the test holds it
TRIALS = {"alpha": 2, "beta": 2}


def job_spec(name: str, study: str) -> dict:
    return {
        "name": name,
        "data": {"variant": "multilabel", "train_size": 32, "val_size": 16, "heldout_size": 16, "test_size": 16},
        "fixed": {"model": "smerf_cnn", "attribution": "ixg", "layer": "input", "loss": "energy", "lam": 1.0,
                  "epochs": EPOCHS, "batch_size": 16, "overlay_images": 1, "device": "cpu"},
        "space": {"lr": {"loguniform": [3e-4, 3e-3]}},
        "sampler": "random",
        "trials": TRIALS[name],
        "concurrency": 1,  # each search's share of the 2-CPU cluster: one trial at a time
        "resources": {"cpu": 1},
        "max_failures": 2,
        "study_storage": study,
    }


def node_ids(address: str, env: dict) -> dict[str, bool]:
    """Alive node id -> whether it is the head."""
    probe = (
        f"import json, ray; ray.init(address='{address}', log_to_driver=False); "
        "print(json.dumps({n['NodeID']: 'node:__internal_head__' in n['Resources'] for n in ray.nodes() if n['Alive']}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}


def trial_runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(experiment_name(name))
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'") if experiment else []


def kill_node(node: RayNode) -> None:
    """Lose a whole node at once: SIGKILL its ``ray start``, raylet, agents and workers (each worker has its own process group)."""
    root = psutil.Process(node.process.pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    node.process.wait(timeout=30)


def stop_node(node: RayNode) -> None:
    """Stop a node as test_cluster does, then SIGKILL whatever of it is left (workers have their own process groups)."""
    try:
        left = psutil.Process(node.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        left = []
    node.stop()
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


class Laptop:
    """``mg-tune`` as a user runs it: the cluster's token, the dashboard's URL, no tracking URI."""

    def __init__(self, env: dict, address: str, cwd: Path) -> None:
        self.env, self.address, self.cwd = env, address, cwd

    def run(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([MG_TUNE, *args], env=env or self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 300) -> str:
        done = self.run(*args, "--address", self.address, timeout=timeout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    def paste(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a command mg-tune printed, exactly as printed (``mg-tune`` and ``ray`` of this environment)."""
        program = {"mg-tune": MG_TUNE, "ray": RAY}[argv[0]]
        return subprocess.run([program, *argv[1:]], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout)

    def pasted(self, argv: list[str], timeout: float = 300) -> str:
        done = self.paste(argv, timeout)
        assert done.returncode == 0, shlex.join(argv) + "\n" + done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mlflow_server, s3_credentials):
    """Head (dashboard + job server on 127.0.0.1, token auth) and one worker node; the cluster's environment holds the tracking URI."""
    uri, _ = mlflow_server
    root = tmp_path_factory.mktemp("jobs-cluster")
    token = uuid.uuid4().hex
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, **s3_credentials, "PATH": f"{venv_bin}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": uri, "MG_TUNE_STORAGE_PATH": str(root / "runs"), GATE_ENV: str(root / "gate"),
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(["--head", f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}", "--disable-usage-stats"], env, root / "head.log")
    nodes = [head]

    def add_worker(log: str) -> RayNode:
        node = RayNode([f"--address={address}", f"--dashboard-agent-listen-port={free_port()}"], env, root / log)
        nodes.append(node)
        return node

    try:
        wait_for(what="the head", condition=lambda: len(node_ids(address, env)) == 1, timeout=120, every=2)
        worker = add_worker("worker.log")
        ids = wait_for(what="the worker node", condition=lambda: (found := node_ids(address, env)) and len(found) == 2 and found, timeout=120, every=2)
        laptop_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "RAY_"))}
        laptop_env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PATH": env["PATH"], "COLUMNS": "200"})
        yield {
            "env": env, "root": root, "uri": uri, "address": address, "worker": worker, "add_worker": add_worker,
            "worker_id": next(i for i, head_node in ids.items() if not head_node),
            "laptop": Laptop(laptop_env, f"http://127.0.0.1:{dashboard}", root),
        }
    finally:
        for node in reversed(nodes):
            stop_node(node)


def hold(client: MlflowClient, name: str) -> object:
    """Freeze (SIGSTOP) a trial of search ``name`` that is mid-run, and return its run.

    A trial seen RUNNING with 1 <= epoch <= EPOCHS - 2 in a live process is frozen, then read again: still
    RUNNING means it is held with epochs left, whatever the machine's speed (else it is let go
    and the next one is tried).
    """
    while True:
        run = wait_for(what=f"a {name} trial mid-run", condition=lambda: next((r for r in trial_runs(client, name) if r.info.status == "RUNNING" and 1 <= r.data.metrics.get("epoch", 0) <= EPOCHS - 2 and alive(int(r.data.tags["mg_tune.pid"]))), None))
        pid = int(run.data.tags["mg_tune.pid"])
        os.kill(pid, signal.SIGSTOP)
        now = client.get_run(run.info.run_id)
        if now.info.status == "RUNNING" and now.data.tags.get("mg_tune.pid") == str(pid):
            return now
        os.kill(pid, signal.SIGCONT)


def finished(client: MlflowClient, name: str) -> bool:
    return any(r.info.status == "FINISHED" for r in trial_runs(client, name))


def alive(pid: int) -> bool:
    """A running process (a run of a trial lost with its node still says RUNNING, with the dead process's pid)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def release(run) -> None:
    try:
        os.kill(int(run.data.tags["mg_tune.pid"]), signal.SIGCONT)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def scenario(cluster, postgres_database):
    laptop, root, uri, client = cluster["laptop"], cluster["root"], cluster["uri"], MlflowClient(cluster["uri"])
    studies = {name: postgres_database() for name in TRIALS}
    for name in TRIALS:
        (root / f"{name}.yaml").write_text(yaml.safe_dump(job_spec(name, studies[name])))
    seen: dict = {"studies": studies}
    held = {}
    Gate(root / "gate").close()
    try:
        # two searches at once; the client returns at once
        for name in TRIALS:
            started = time.monotonic()
            seen[f"submit {name}"] = laptop.ok("submit", f"{name}.yaml")
            seen[f"submit {name} seconds"] = time.monotonic() - started
        # one trial of each held mid-run: one on the head, one on the worker node (1 CPU each)
        held = {name: hold(client, name) for name in TRIALS}
        seen["list"] = laptop.ok("jobs", "list", "--tracking-uri", uri)
        follow, ray_follow, listing, stop, resume = hints(seen["submit beta"])
        seen["pasted list"] = laptop.paste(listing)  # as printed: no tracking URI on the laptop
        job_id = re.search(r"as Ray job (\S+) ", seen["submit beta"]).group(1)
        seen["logs by job id"] = laptop.paste(["mg-tune", "jobs", "logs", job_id, "--address", laptop.address])

        # the worker node lost with its trial mid-run; the autoscaler's replacement joins. The lost search's trial
        # restarts there from its checkpoint and is held again, so that neither search runs on unobserved (a search
        # left running could finish all its trials before its step below).
        lost = next(name for name, run in held.items() if run.data.tags["mg_tune.node_id"] == cluster["worker_id"])
        seen["node kill"] = (lost, held[lost].data.tags[TRIAL_TAG], int(held[lost].data.metrics["epoch"]))
        kill_node(cluster["worker"])
        del held[lost]
        cluster["add_worker"]("worker2.log")
        held[lost] = hold(client, lost)

        # beta stopped while a trial of it is held mid-run; alpha stays frozen meanwhile
        seen["held"] = held["beta"].data.tags[TRIAL_TAG]
        seen["stop"] = laptop.pasted(stop, timeout=400)  # submit's "stop it:" hint
        seen["stopped runs"] = {r.data.tags[TRIAL_TAG]: r for r in trial_runs(client, "beta")}
        seen["stopped study"] = optuna.load_study(study_name="beta", storage=studies["beta"]).trials
        seen["stop again"] = laptop.run("jobs", "stop", "beta", "--address", laptop.address)
        seen["logs"] = laptop.ok("jobs", "logs", "beta")

        # alpha's driver killed while a trial of it is held mid-run, after one finished; resubmitted with --resume
        if not finished(client, "alpha"):
            released = held.pop("alpha")
            Gate(root / "gate").open(released.data.tags[TRIAL_TAG])
            release(released)
            wait_for(what="a finished alpha trial", condition=lambda: finished(client, "alpha"))
            held["alpha"] = hold(client, "alpha")
        try:
            os.kill(int(cluster_jobs(laptop)["alpha"]["driver_info"]["pid"]), signal.SIGKILL)
        except ProcessLookupError:  # the driver is gone already (seen once on a machine at load 9): its job fails all the same
            pass
        wait_for(what="alpha's job to fail", condition=lambda: cluster_jobs(laptop)["alpha"]["status"] == "FAILED", every=1)
        Gate(root / "gate").open()  # the resumed searches run to their end
        seen["alpha resubmit"] = laptop.ok("submit", "alpha.yaml", "--resume")

        # beta resumed and followed to its end; alpha waited for
        # ... by the commands mg-tune printed: stop's resume command, then the resumed job's "follow it:" hints
        seen["stop resume"] = resume_hint = hints(seen["stop"])[-1]
        seen["resume beta submit"] = laptop.pasted(resume_hint)
        resumed_follow, resumed_ray_follow, *_ = hints(seen["resume beta submit"])
        seen["resume beta"] = laptop.pasted(resumed_follow, timeout=600)
        seen["resume beta ray logs"] = laptop.paste(resumed_ray_follow, timeout=120)
        wait_for(what="alpha's resumed job to end", condition=lambda: cluster_jobs(laptop)["alpha"]["status"] in ("SUCCEEDED", "FAILED"), timeout=600, every=2)
        seen["final list"] = laptop.ok("jobs", "list", "--tracking-uri", uri)
        seen["final jobs"] = cluster_jobs(laptop)
        seen["stop finished"] = laptop.paste(stop)  # submit's stop hint once beta SUCCEEDED
    finally:
        for run in held.values():  # killed with their job by now; never leave a frozen process behind
            try:
                os.kill(int(run.data.tags["mg_tune.pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return seen


def cluster_jobs(laptop: Laptop) -> dict[str, dict]:
    """The newest job of each search, as Ray's own client sees it (token from the environment)."""
    code = (
        "import json, sys; from ray.job_submission import JobSubmissionClient; "
        f"jobs = sorted(JobSubmissionClient('{laptop.address}').list_jobs(), key=lambda j: j.start_time or 0); "
        "print(json.dumps({j.metadata['mg_tune.search']: {'status': j.status.value, 'id': j.submission_id, 'driver_info': j.driver_info and j.driver_info.dict()} for j in jobs if (j.metadata or {}).get('mg_tune.search')}))"  # driver entries of ray.init have none
    )
    out = subprocess.run([sys.executable, "-c", code], env=laptop.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_submit_returns_at_once(scenario):
    for name in TRIALS:
        assert scenario[f"submit {name} seconds"] < 180  # the CLI's start-up and the pre-flight job on a loaded 2-core machine; the search runs for minutes
        assert f"submitted search {name!r} as Ray job mg-tune-{name}-" in scenario[f"submit {name}"]
        assert f"mg-tune jobs logs {name} --follow --address http://127.0.0.1:" in scenario[f"submit {name}"]


def test_every_printed_command_works_when_pasted(scenario, cluster):
    """submit's hints (list, logs by job id, stop), stop's resume command, the resumed job's follow hints: each run as printed."""
    address = cluster["laptop"].address
    assert [h[:3] for h in hints(scenario["submit beta"])] == [["mg-tune", "jobs", "logs"], ["ray", "job", "logs"], ["mg-tune", "jobs", "list"], ["mg-tune", "jobs", "stop"], ["mg-tune", "submit", str(cluster["root"] / "beta.yaml")]]
    assert all(h[-2:] == ["--address", address] for h in hints(scenario["submit beta"]))
    listed = scenario["pasted list"]
    assert listed.returncode == 0 and any(" beta " in line and "RUNNING" in line for line in listed.stdout.splitlines()), listed.stdout + listed.stderr
    by_id = scenario["logs by job id"]
    assert by_id.returncode == 0 and "mg_tune.cli search spec.yaml --name beta" in by_id.stdout, by_id.stdout[-2000:] + by_id.stderr
    assert scenario["stop resume"] == ["mg-tune", "submit", str(cluster["root"] / "beta.yaml"), "--name", "beta", "--resume", "--address", address]
    assert "submitted search 'beta' as Ray job mg-tune-beta-" in scenario["resume beta submit"]
    ray_logs = scenario["resume beta ray logs"]
    assert ray_logs.returncode == 0 and "Pareto front of search 'beta'" in ray_logs.stdout, ray_logs.stdout[-2000:] + ray_logs.stderr
    # the stopped driver's log names mg-tune's resume command, not Ray's Tuner.restore
    assert "Tuner.restore(" not in scenario["logs"]
    assert f"continue it with: {shlex.join(scenario['stop resume'])}" in scenario["logs"]
    # a finished search is not offered --resume
    finished = scenario["stop finished"]
    assert finished.returncode == 2 and "SUCCEEDED" in finished.stderr and "--resume" not in finished.stderr and len(finished.stderr.strip().splitlines()) == 1, finished.stderr


def test_list_shows_both_searches_while_they_run_and_their_fronts_at_the_end(scenario):
    for name, trials in TRIALS.items():
        line = next(l for l in scenario["list"].splitlines() if f" {name} " in l)
        assert "RUNNING" in line and f"/{trials}" in line, scenario["list"]
    final = scenario["final list"]
    for name, trials in TRIALS.items():
        line = next(l for l in final.splitlines() if f" {name} " in l)
        assert "SUCCEEDED" in line and f"{trials}/{trials}" in line, final


def test_every_trial_epoch_is_in_mlflow_exactly_once_in_its_own_search(scenario, cluster):
    client = MlflowClient(cluster["uri"])
    assert {name: job["status"] for name, job in scenario["final jobs"].items()} == {"alpha": "SUCCEEDED", "beta": "SUCCEEDED"}
    for name, trials in TRIALS.items():
        runs = trial_runs(client, name)
        assert {r.data.tags[SEARCH_TAG] for r in runs} == {name}
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert len(finished) == trials
        # a trial alpha's killed driver had started after Ray's last snapshot is KILLED with the reason, never left RUNNING
        assert all(r.info.status == "KILLED" and r.data.tags.get(FAILURE_TAG) for r in runs if r.info.status != "FINISHED")
        table = checkpoint_table(cluster["uri"], name)
        done = table[table.run_id.isin({r.info.run_id for r in finished})]
        assert sorted(zip(done.trial_id, done.epoch)) == sorted((r.data.tags[TRIAL_TAG], e) for r in finished for e in range(1, EPOCHS + 1))
        assert not table.duplicated(["trial_id", "epoch"]).any()
        for run in finished:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch")] == list(range(1, EPOCHS + 1))
    # each search's Ray Tune state in its own folder of the cluster's storage path
    assert sorted(p.name for p in (cluster["root"] / "runs").iterdir()) == ["alpha", "beta"]


def test_a_lost_node_restarts_its_trial_on_another_node_from_its_checkpoint(scenario, cluster):
    name, trial, epoch = scenario["node kill"]
    client = MlflowClient(cluster["uri"])
    run = next(r for r in trial_runs(client, name) if r.data.tags[TRIAL_TAG] == trial)
    assert run.info.status == "FINISHED" and run.data.tags["mg_tune.node_id"] != cluster["worker_id"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "f1")] == list(range(1, EPOCHS + 1))


def test_stop_ends_the_running_trial_killed_and_its_optuna_trial_failed(scenario):
    assert "job mg-tune-beta-" in scenario["stop"] and "STOPPED" in scenario["stop"]
    held = scenario["stopped runs"][scenario["held"]]
    assert held.info.status == "KILLED" and held.data.tags[FAILURE_TAG] == STOP_REASON
    assert 1 <= held.data.metrics["epoch"] < EPOCHS  # its checkpoints stay in MLflow
    states = [t.state for t in scenario["stopped study"]]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and optuna.trial.TrialState.RUNNING not in states
    again = scenario["stop again"]
    assert again.returncode == 2 and again.stderr.startswith("error: search beta is not running") and len(again.stderr.strip().splitlines()) == 1
    assert f"trial {scenario['held']} started: " in scenario["logs"]  # mg-tune's console, one line per event (tests/search/test_console.py)
    assert "Trial status" not in scenario["logs"]  # not Ray Tune's reporter


def test_resume_after_stop_reruns_nothing_and_optuna_records_the_resumed_result(scenario, cluster):
    out = scenario["resume beta"]
    assert "Pareto front of search 'beta'" in out and scenario["final jobs"]["beta"]["status"] == "SUCCEEDED"
    study = optuna.load_study(study_name="beta", storage=scenario["studies"]["beta"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(complete) == TRIALS["beta"] and len(failed) == 1
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params
    last = checkpoint_table(cluster["uri"], "beta").query(f"epoch == {EPOCHS}")
    assert sorted(tuple(round(v, 6) for v in t.values) for t in complete) == sorted(tuple(round(v, 6) for v in row) for row in last[["f1", "epg", "iou"]].to_numpy())


def test_the_laptop_needs_the_token_and_a_reachable_cluster(cluster, tmp_path):
    laptop = cluster["laptop"]
    bare = {k: v for k, v in laptop.env.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(tmp_path)}
    cases = {
        "requires a token": bare,
        "refused the token": {**laptop.env, "RAY_AUTH_TOKEN": "wrong-" + uuid.uuid4().hex},
    }
    for expected, env in cases.items():
        done = laptop.run("jobs", "list", "--address", laptop.address, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr
    done = laptop.run("jobs", "logs", "nope", "--address", laptop.address)
    assert done.returncode == 2 and done.stderr.startswith("error: no search or mg-tune job 'nope' on the Ray cluster")


def test_a_search_name_is_submitted_once_then_only_resumed(scenario, cluster):
    laptop = cluster["laptop"]
    done = laptop.run("submit", "alpha.yaml", "--address", laptop.address)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: search alpha was submitted before (job mg-tune-alpha-"), done.stderr


def test_a_cluster_that_cannot_reach_the_tracking_server_is_refused_before_anything_is_submitted(cluster):
    """The pre-flight job runs in the cluster's environment: a tracking URI the cluster cannot reach fails submit in one line, no job left."""
    laptop = cluster["laptop"]
    (cluster["root"] / "unreachable.yaml").write_text(yaml.safe_dump({**job_spec("alpha", "sqlite://"), "name": "unreachable", "tracking_uri": "http://127.0.0.1:9"}))
    done = laptop.run("submit", "unreachable.yaml", "--address", laptop.address)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0] == f"error: the Ray cluster at {laptop.address} cannot run search unreachable: from the cluster, tracking URI http://127.0.0.1:9: cannot connect (connection refused)"
    assert "unreachable" not in cluster_jobs(laptop)


def test_jobs_list_shows_why_a_job_failed(cluster):
    """What a hand-started head without mg-tune on its PATH does to a job, listed with its reason (a job submitted with Ray's own client)."""
    laptop = cluster["laptop"]
    code = (
        "import sys, time; from ray.job_submission import JobSubmissionClient; "
        f"c = JobSubmissionClient('{laptop.address}'); "
        "j = c.submit_job(entrypoint='mg-tune-missing search spec.yaml', metadata={'mg_tune.search': 'broken'}); "
        "[time.sleep(0.5) for _ in range(240) if not c.get_job_status(j).is_terminal()]; print(c.get_job_status(j).value)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=laptop.env, capture_output=True, text=True, timeout=180)
    assert out.stdout.strip().splitlines()[-1] == "FAILED", out.stderr[-2000:]
    listed = json.loads(laptop.ok("jobs", "list", "--output", "json"))
    row = next(r for r in listed if r["search"] == "broken")
    assert row["status"] == "FAILED" and row["error"] == "/bin/sh: 1: mg-tune-missing: not found", row

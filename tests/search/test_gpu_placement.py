"""GPU placement without a GPU: trials on Ray nodes that declare GPUs get the ids Ray assigned, never more trials per GPU than the fraction allows.

Ray schedules declared resources (``ray start --num-gpus=N`` on a machine without GPUs) and sets a
trial's ``CUDA_VISIBLE_DEVICES`` from the ids it assigned; the trials record both as run tags
(:func:`mg_tune.search.placement.gpu_tags`) and train on CPU here (``device: auto`` without CUDA).
A GPU slot is (node, GPU id): GPU ids are numbered per node.
"""

import os
import subprocess
import sys
import time

import pytest
import torch
import yaml
from mlflow import MlflowClient

from mg_tune.search import placement
from mg_tune.search.gate import GATE_ENV
from mg_tune.server import free_port
from mg_tune.tracking import ROLE_TAG, experiment_name
from mg_tune.train import physical_gpu, resolve_device

from conftest import Gate, wait_for
from helpers.ray_nodes import RayNode, wait_for_nodes
from helpers.searches import spec_dict

NODES, GPUS_PER_NODE = 2, 1
DECLARED_IDS = {str(i) for i in range(GPUS_PER_NODE)}


def test_device_auto_is_the_first_gpu_ray_made_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = resolve_device("auto")
    assert device == torch.device("cuda", 0)
    assert physical_gpu(device, "3,5") == "3"  # cuda:0 is the first id of CUDA_VISIBLE_DEVICES
    assert physical_gpu(torch.device("cuda", 1), "3, 5") == "5"
    assert physical_gpu(torch.device("cuda"), None) == "0"  # no CUDA_VISIBLE_DEVICES: CUDA's own numbering
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and physical_gpu(resolve_device("auto"), "3") is None


def test_a_trial_records_the_gpus_ray_assigned_and_the_one_it_trains_on(monkeypatch):
    monkeypatch.setattr(placement.ray, "get_gpu_ids", lambda: [2])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert placement.gpu_tags("auto") == {"mg_tune.gpu_ids": "2", "mg_tune.cuda_visible_devices": "2", "mg_tune.gpu": "2"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.gpu_tags("auto") == {"mg_tune.gpu_ids": "2", "mg_tune.cuda_visible_devices": "2"}  # trains on CPU: no mg_tune.gpu
    monkeypatch.setattr(placement.ray, "get_gpu_ids", lambda: [])
    assert placement.gpu_tags("cpu") == {}


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """A head and a worker ``ray start`` node, each declaring 2 CPUs and ``GPUS_PER_NODE`` GPUs; yields ``(address, env, gate)``."""
    gate = Gate(tmp_path_factory.mktemp("gpu-gate"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", GATE_ENV: str(gate.root)}
    env.pop("RAY_ADDRESS", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    logs = tmp_path_factory.mktemp("gpu-cluster")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(["--head", f"--port={port}", "--include-dashboard=false", "--disable-usage-stats"], env, logs / "head.log", num_cpus=2, num_gpus=GPUS_PER_NODE)
    nodes = [head]
    try:
        time.sleep(3)
        nodes.append(RayNode([f"--address={address}"], env, logs / "worker.log", num_cpus=2, num_gpus=GPUS_PER_NODE))
        wait_for_nodes(address, NODES, env)
        yield address, env, gate
    finally:
        for node in reversed(nodes):
            node.stop()


def run_gpu_search(address, env, gate, work, uri, name, gpu, trials, slots):
    """``mg-tune search --address`` of ``trials`` 1-epoch trials, all allowed at once (``concurrency: trials``), each asking ``gpu`` and 0.25 CPU.

    The gate holds every trial after its epoch until ``slots`` trials are held at once (every GPU slot
    filled, whatever the machine's speed), then lets all run on; returns the trials' runs.
    """
    raw = spec_dict(name, work / "runs", trials=trials, epochs=1, concurrency=trials)
    raw["data"] = {"variant": "multilabel", "train_size": 32, "val_size": 16, "heldout_size": 16, "test_size": 16}
    raw["fixed"] = {**raw["fixed"], "overlay_images": 0, "batch_size": 16}
    raw["resources"] = {"cpu": 0.25, "gpu": gpu}  # 4 trials per node fit the CPUs: the GPUs are what limits
    spec = work / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(raw))
    client = MlflowClient(uri)

    def held():
        experiment = client.get_experiment_by_name(experiment_name(name))
        runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial' and metrics.epoch = 1") if experiment else []
        return len(runs) == slots

    gate.close()
    driver = subprocess.Popen(
        [sys.executable, "-m", "mg_tune.cli", "search", str(spec), "--address", address, "--tracking-uri", uri],
        env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(held, what=f"{slots} {name} trials held at once", timeout=300, every=1)
    finally:
        gate.open()
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output[-3000:]
    experiment = client.get_experiment_by_name(experiment_name(name))
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def most_at_once(intervals):
    """The largest number of ``(start, end)`` intervals that hold one instant (an end before a start at the same time)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    held = peak = 0
    for _, change in events:
        held += change
        peak = max(peak, held)
    return peak


def gpu_slots(runs, gpu):
    """Check each trial's recorded GPUs; returns ``{slot: [(start, end) of its trials]}``, a slot being (node, GPU id)."""
    slots = {}
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags.get("mg_tune.failure_reason")
        tags = run.data.tags
        ids = tags["mg_tune.gpu_ids"].split(",")
        assert len(ids) == max(1, int(gpu)) and set(ids) <= DECLARED_IDS
        assert tags["mg_tune.cuda_visible_devices"].split(",") == ids  # what the trial's process sees is what Ray assigned
        assert physical_gpu(torch.device("cuda", 0), tags["mg_tune.cuda_visible_devices"]) == ids[0]  # device: auto on a real GPU
        assert "mg_tune.gpu" not in tags  # no CUDA here: device auto trained on CPU
        slots.setdefault((tags["mg_tune.node_id"], ids[0]), []).append((run.info.start_time, run.info.end_time))
    return slots


@pytest.mark.slow
def test_trials_wait_for_a_gpu_slot_rather_than_oversubscribe(gpu_cluster, new_mlflow_store, tmp_path):
    """gpu: 0.5 (2 trials per GPU, 4 slots) with 5 trials allowed at once, then gpu: 1 (2 slots) with 3.

    Every slot fills (the gate holds the trials until it does), and MLflow's run times show that no
    GPU ever held more trials than its fraction allows and that the trials beyond the slots waited.
    """
    address, env, gate = gpu_cluster
    uri = new_mlflow_store()
    for name, gpu, trials in (("half-gpu", 0.5, 5), ("whole-gpu", 1, 3)):
        per_gpu = round(1 / gpu)
        slots = NODES * GPUS_PER_NODE * per_gpu
        runs = run_gpu_search(address, env, gate, tmp_path, uri, name, gpu, trials, slots)
        assert len(runs) == trials
        held = gpu_slots(runs, gpu)
        assert len(held) == NODES * GPUS_PER_NODE  # every declared GPU of both nodes was used
        assert {slot: most_at_once(times) for slot, times in held.items()} == dict.fromkeys(held, per_gpu)  # full, never over
        concurrent = most_at_once([(r.info.start_time, r.info.end_time) for r in runs])
        assert concurrent == slots < trials  # never more than the slots, though the spec allowed every trial at once
        print(f"{name}: {trials} trials, {len(held)} GPUs, at most {concurrent} trials at once, {per_gpu} per GPU")

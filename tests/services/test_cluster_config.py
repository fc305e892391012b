"""cluster/cluster.yaml and cluster/local.yaml against Ray's cluster-config schema, and what they must contain."""

import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).parents[2] / "cluster"


@pytest.mark.parametrize("name", ["cluster.yaml", "local.yaml"])
def test_config_passes_rays_schema(name):
    config = prepare_config(yaml.safe_load((CLUSTER / name).read_text()))  # Ray's defaults for the provider filled in
    validate_config(config)  # raises jsonschema.ValidationError on any unknown or mistyped field


def test_schema_check_catches_a_wrong_field():
    config = prepare_config(yaml.safe_load((CLUSTER / "cluster.yaml").read_text()))
    config["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


@pytest.mark.parametrize("name", ["cluster.yaml", "local.yaml"])
def test_head_starts_mlflow_before_ray_and_workers_get_the_tracking_uri(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    head = config["head_start_ray_commands"]
    assert head.index("~/mg-tune/cluster/start-mlflow.sh") < next(i for i, c in enumerate(head) if "ray start --head" in c)
    assert any("MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in c for c in config["worker_setup_commands"])
    assert any("pip install -q -e ~/mg-tune" in c for c in config["setup_commands"])


def test_aws_cluster_has_autoscaling_gpu_workers_and_no_secrets():
    text = (CLUSTER / "cluster.yaml").read_text()
    config = yaml.safe_load(text)
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["node_config"]["InstanceType"].startswith("g5.") and worker["min_workers"] == 0 < worker["max_workers"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    for secret in ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "PASSWORD=", "password:"):
        assert secret not in text


@pytest.mark.parametrize(
    "content,message",
    [
        (b"\x00\xff\xfe\x00garbage", "mg-tune.env: not UTF-8 text (byte 0xff at offset 1)"),
        (b'MG_TUNE_ARTIFACTS=s3://bucket/mlflow\nMG_TUNE_BACKEND_STORE_URI="postgresql://mlflow@db/ml', "mg-tune.env: line 2: No closing quotation (truncated?)"),
        (b"MG_TUNE_ARTIFACTS=s3://bucket/mlflow\nnot an assignment\n", "mg-tune.env: line 2: expected KEY=value"),
    ],
    ids=["not-utf8", "cut-short", "not-key-value"],
)
def test_start_mlflow_refuses_a_bad_env_file_with_one_line_before_starting_anything(tmp_path, content, message):
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    for script in ("start-mlflow.sh", "read-env.sh", "mlflow-credentials.sh"):
        shutil.copy(CLUSTER / script, cluster)
    (cluster / "mg-tune.env").write_bytes(content)
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(["bash", str(cluster / "start-mlflow.sh")], capture_output=True, text=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {cluster}/{message}"]
    assert list(home.iterdir()) == []  # no server output, no ~/.mg-tune-tracking

"""``ray up -y`` → search → ``ray down -y`` with cluster/local.yaml, for real, over SSH to 127.0.0.1.

Ray's local node provider logs in with SSH and runs the yaml's commands in
login shells, exactly as on a user's machines. To keep the machine's own
processes safe (``ray stop``, which the yaml and ``ray down`` run, stops
*every* Ray process it can see), the whole sequence runs in new PID and
mount namespaces (``unshare``) with a private ``/root``: sshd (Debian's
openssh-server, installed by the Makefile), the Ray head, the MLflow server
and the search live and die inside them.

The cluster config is cluster/local.yaml with only what differs on a test
machine changed: the venv is this one (no 5 GB torch install), the GCS port
is a free one (6379 is Redis here), the cluster name is unique, and
``~/mg-tune`` is synced from a copy of this checkout that carries the
test's ``cluster/mg-tune.env`` (SQLite store and artifacts under the
private home, a free server port).
"""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mg_tune.server import free_port
from mg_tune.tracking import ROLE_TAG, experiment_name

from helpers.searches import spec_dict

REPO = Path(__file__).parents[2]
SSHD = Path("/usr/sbin/sshd")

SCRIPT = r"""
set -euo pipefail
home="$1"; repo="$2"; export PATH="$3:$PATH"; shift 3
for keep in "$@"; do mkdir -p "$home/$keep" && mount --bind "/root/$keep" "$home/$keep"; done   # e.g. the Python the venv links to
mount --rbind "$home" /root
export HOME=/root
mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys
ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/host_key
/usr/sbin/sshd -o ListenAddress=127.0.0.1 -o Port=22 -o HostKey=/root/.ssh/host_key \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -E /root/sshd.log
cd "$repo"
ray up -y --no-config-cache cluster/test.yaml
ray exec cluster/test.yaml 'echo "tracking: $MLFLOW_TRACKING_URI"; mg-tune search ~/mg-tune/tiny.yaml --address auto'
ray down -y cluster/test.yaml
if pgrep -x raylet > /dev/null || pgrep -x gcs_server > /dev/null; then echo "ray down left Ray running"; exit 3; fi
echo "RAY UP TEST DONE"
"""


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "--fork", "--pid", "--mount-proc", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.slow,  # `ray up` starts a Ray cluster
    pytest.mark.skipif(not SSHD.exists(), reason="needs sshd (Debian's openssh-server; `make test` installs it)"),
    pytest.mark.skipif(not _can_unshare(), reason="needs PID/mount namespaces (unshare) to keep `ray stop` away from the machine's other Ray processes"),
]


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)


def _under_root() -> list[str]:
    """Top-level entries of /root the test's own processes need once a private /root is mounted."""
    needed = {Path(sys.executable).resolve(), REPO.resolve(), Path(sys.prefix).resolve()}
    return sorted({p.relative_to("/root").parts[0] for p in needed if p.is_relative_to("/root")})


def _test_config(gcs_port: int) -> dict:
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    venv = Path(sys.executable).parent
    config["cluster_name"] = f"mg-tune-test-{uuid.uuid4().hex[:6]}"
    config["setup_commands"] = [f"grep -q '{venv}/activate' ~/.bashrc 2>/dev/null || echo 'source {venv}/activate; export RAY_AUTH_MODE=disabled' >> ~/.bashrc"]
    config["head_start_ray_commands"] = [c.replace("--port=6379", f"--port={gcs_port} --dashboard-port={free_port()}") for c in config["head_start_ray_commands"]]
    config["worker_start_ray_commands"] = [c.replace(":6379", f":{gcs_port}") for c in config["worker_start_ray_commands"]]
    return config


def test_ray_up_search_ray_down_with_local_yaml(tmp_path):
    home, repo = tmp_path / "home", tmp_path / "checkout"
    home.mkdir()
    _copy_checkout(repo)
    server_port = free_port()
    (repo / "cluster" / "test.yaml").write_text(yaml.safe_dump(_test_config(free_port())))
    (repo / "cluster" / "mg-tune.env").write_text(
        f"MG_TUNE_BACKEND_STORE_URI=sqlite:////root/mlflow.db\nMG_TUNE_ARTIFACTS=/root/mlartifacts\nMG_TUNE_SERVER_PORT={server_port}\n"
    )
    spec = spec_dict("ray-up", "/root/runs", trials=2, epochs=1, concurrency=1)
    spec["resources"] = {"cpu": 1}
    (repo / "tiny.yaml").write_text(yaml.safe_dump(spec))

    done = subprocess.run(
        ["unshare", "--fork", "--pid", "--mount-proc", "--propagation", "private", "bash", "-c", SCRIPT, "ray-up-test", str(home), str(repo), str(Path(sys.executable).parent), *_under_root()],
        capture_output=True, text=True, timeout=900,
    )
    output = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0 and "RAY UP TEST DONE" in done.stdout, output
    assert f"tracking: http://" in done.stdout and f":{server_port}" in done.stdout  # start-mlflow.sh exported the URI to the login shell

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")  # the server's store, under the private home
    experiment = client.get_experiment_by_name(experiment_name("ray-up"))
    runs = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    checkpoints = list((home / "mlartifacts").rglob("checkpoint.pt"))
    assert len(checkpoints) == 2  # 2 trials x 1 epoch, proxied by the server into MG_TUNE_ARTIFACTS

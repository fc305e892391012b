"""`mg-tune server` and the cluster plumbing around it: safe defaults, one-line errors, basic auth."""

import base64
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from conftest import wait_for
from mg_tune.cli import app
from mg_tune.search.runner import experiment_path, study_storage
from mg_tune.search.spec import SearchSpec
from mg_tune.server import AUTH_PASSWORD_ENV, MlflowServer, ServerConfig, ServerError, check_port_free, free_port
from mg_tune.tracking import check_tracking_uri

runner = CliRunner()
CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
MG_TUNE = str(Path(sys.executable).parent / "mg-tune")


def test_server_binds_localhost_by_default_and_keeps_secrets_off_its_command_line():
    config = ServerConfig(backend_store_uri="postgresql://mlflow@db:5432/mlflow", artifacts_destination="s3://b/mlflow", auth=True)
    cmd = config.command()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and config.uri == "http://127.0.0.1:5000"
    assert cmd[cmd.index("--workers") + 1] == "1" and cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert not any("password" in part.lower() for part in cmd)


def test_a_password_in_the_backend_store_uri_goes_to_the_servers_environment_not_its_command_line():
    server = MlflowServer(ServerConfig(backend_store_uri="postgresql://mlflow:s3cret@db:5432/mlflow"))
    cmd = server.config.command()
    assert cmd[cmd.index("--backend-store-uri") + 1] == "postgresql://mlflow@db:5432/mlflow" and not any("s3cret" in part for part in cmd)
    assert "db:5432:mlflow:mlflow:s3cret" in Path(server.env["PGPASSFILE"]).read_text().splitlines()


def test_auth_without_an_admin_password_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv(AUTH_PASSWORD_ENV, raising=False)
    result = runner.invoke(app, ["server", "--auth", "--port", str(free_port())])
    assert result.exit_code == 2
    assert f"${AUTH_PASSWORD_ENV}" in result.output and "Traceback" not in result.output


def test_unreachable_backend_store_is_one_line_without_the_password():
    uri = "postgresql://mlflow:s3cret@127.0.0.1:1/mlflow"
    result = runner.invoke(app, ["server", "--backend-store-uri", uri, "--port", str(free_port())])
    assert result.exit_code == 2
    assert "postgresql://mlflow@127.0.0.1:1/mlflow" in result.output and "cannot connect" in result.output  # the password went to $PGPASSFILE
    assert "s3cret" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow  # starts an MLflow server
def test_basic_auth_server_refuses_anonymous_requests_and_a_node_with_the_credentials_file_logs(tmp_path, monkeypatch):
    """The cluster's way: cluster/mlflow-credentials.sh writes ~/.mlflow/credentials from mg-tune.env, MLflow's client reads it."""
    password = "admin-pass-for-test"
    config = ServerConfig(backend_store_uri=f"sqlite:///{tmp_path}/mlflow.db", artifacts_destination=str(tmp_path / "art"), port=free_port(), auth=True)
    env = {AUTH_PASSWORD_ENV: password, "MLFLOW_AUTH_CONFIG_PATH": _auth_config(tmp_path, password)}
    with MlflowServer(config, env=env, log_path=tmp_path / "server.log") as server:
        url = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ValueError) as refused:  # what every command says first, instead of MLflow's retries and traceback
            check_tracking_uri(server.uri)
        assert str(refused.value) == (
            f"tracking URI {server.uri}: refused (HTTP 401, no credentials were given); "
            "set $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials"
        )
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(ValueError, match=r"refused \(HTTP 401, the credentials given were refused\)"):
            check_tracking_uri(server.uri)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        check_tracking_uri(server.uri)
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {token}"}), timeout=10) as ok:
            assert ok.status == 200

        cluster, home = tmp_path / "cluster", tmp_path / "home"
        cluster.mkdir()
        home.mkdir()
        for script in ("mlflow-credentials.sh", "read-env.sh"):
            shutil.copy(CLUSTER / script, cluster)
        log = [sys.executable, "-c", "import mlflow; mlflow.set_tracking_uri({!r}); print(mlflow.create_experiment('from-a-node'))".format(server.uri)]
        node = {"HOME": str(home), "PATH": os.environ["PATH"]}
        before = subprocess.run(log, env=node, capture_output=True, text=True, timeout=120)
        assert before.returncode != 0 and "401" in before.stderr + before.stdout  # no credentials on the node yet
        (cluster / "mg-tune.env").write_text(f"MG_TUNE_SERVER_AUTH=1\n{AUTH_PASSWORD_ENV}={password}\n")
        written = subprocess.run(["bash", str(cluster / "mlflow-credentials.sh")], env=node, capture_output=True, text=True, timeout=60)
        assert written.returncode == 0, written.stderr
        credentials = home / ".mlflow" / "credentials"
        assert credentials.read_text() == f"[mlflow]\nmlflow_tracking_username = admin\nmlflow_tracking_password = {password}\n"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        after = subprocess.run(log, env=node, capture_output=True, text=True, timeout=120)
        assert after.returncode == 0, after.stderr[-2000:]
        (cluster / "mg-tune.env").write_text("MG_TUNE_SERVER_AUTH=1\n")
        refused = subprocess.run(["bash", str(cluster / "mlflow-credentials.sh")], env=node, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "needs MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr


def _auth_config(tmp_path, password) -> str:
    """MLflow's basic-auth ini with its user database in the test's directory."""
    path = tmp_path / "basic_auth.ini"
    path.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/basic_auth.db\n"
        f"admin_username = admin\nadmin_password = {password}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return str(path)


@pytest.mark.slow  # starts an MLflow server (that fails)
def test_a_server_that_cannot_start_says_why(tmp_path):
    config = ServerConfig(backend_store_uri="notadb://x", artifacts_destination=str(tmp_path), port=free_port())
    with pytest.raises(ServerError, match="exited with code"):
        MlflowServer(config, log_path=tmp_path / "server.log").start(timeout=60)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("/data/runs", "/data/runs/s1"),
        ("s3://bucket/ray/", "s3://bucket/ray/s1"),
        ("s3://bucket/ray?endpoint_override=127.0.0.1:9000&scheme=http", "s3://bucket/ray/s1?endpoint_override=127.0.0.1:9000&scheme=http"),
    ],
)
def test_experiment_path_joins_the_name_before_the_query(storage, expected):
    assert experiment_path(SearchSpec(name="s1", storage_path=storage)) == expected


def test_unreachable_study_storage_is_one_line_without_the_password():
    spec = SearchSpec(name="s1", study_storage="postgresql://optuna:hunter2@127.0.0.1:1/optuna")
    with pytest.raises(ValueError) as error:
        study_storage(spec)
    message = str(error.value)
    assert message.startswith("study_storage postgresql://optuna@127.0.0.1:1/optuna: cannot open")
    assert "hunter2" not in message and "\n" not in message


def _server_command(tmp_path: Path, port: int) -> list[str]:
    return [MG_TUNE, "server", "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path}/mine.db", "--artifacts-destination", str(tmp_path / "art")]


def _port_of(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


def test_a_port_held_by_another_mlflow_server_is_refused_in_one_line_and_that_server_keeps_running(mlflow_server, tmp_path):
    """/health answers "OK" for any MLflow server: before the check, this printed "ready" for the other server's store (issue 29)."""
    uri, _ = mlflow_server
    result = subprocess.run(_server_command(tmp_path, _port_of(uri)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    assert result.stderr == f"error: port {_port_of(uri)} on 127.0.0.1 is already in use (another server is listening there); choose another --port\n"
    with urllib.request.urlopen(f"{uri}/health", timeout=10) as answer:
        assert answer.status == 200


def test_a_port_held_by_any_listener_is_refused_in_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = runner.invoke(app, _server_command(tmp_path, port)[1:])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: port {port} on 127.0.0.1 is already in use (another server is listening there); choose another --port"]


def test_health_from_a_process_that_is_not_the_started_one_is_refused_and_the_child_stopped(mlflow_server, tmp_path):
    """The race the port check leaves open (another server binds between the check and the child): the answer is not ours."""
    uri, _ = mlflow_server
    server = MlflowServer(ServerConfig(backend_store_uri=f"sqlite:///{tmp_path}/mine.db", port=_port_of(uri)))
    server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)  # a child that never binds
    with pytest.raises(ServerError) as refused:
        server.wait_healthy(timeout=60)
    assert str(refused.value) == (
        f"port {_port_of(uri)} is answered by another process, not by the mlflow server started for sqlite:///{tmp_path}/mine.db; choose another --port"
    )
    server.stop()
    assert server.process.returncode == -signal.SIGTERM


@pytest.mark.slow  # starts an MLflow server
def test_server_ends_on_sigterm_with_exit_0_no_process_left_and_the_port_free(tmp_path):
    """What systemd, docker and supervisord send: before, MLflow stopped but `mg-tune server` waited forever on a defunct child."""
    port = free_port()
    out = tmp_path / "stdout"
    with open(out, "w") as stdout:
        server = subprocess.Popen(_server_command(tmp_path, port), stdout=stdout, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "export MLFLOW_TRACKING_URI" in out.read_text() or server.poll() is not None, "mg-tune server ready", timeout=120)
        assert out.read_text().splitlines()[-1] == f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}", out.read_text()
        tree = psutil.Process(server.pid).children(recursive=True)
        assert any("mlflow" in " ".join(p.cmdline()) for p in tree)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if server.poll() is None:
            server.kill()
    assert code == 0 and took < 35, (code, took, out.read_text())
    gone, alive = psutil.wait_procs(tree, timeout=0)
    assert alive == [], [(p.pid, p.status()) for p in alive]
    check_port_free("127.0.0.1", port)  # raises if anything still listens there

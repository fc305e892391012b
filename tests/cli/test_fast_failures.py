"""Commands that fail, or only print help, do it at once: one line within seconds, before torch, Ray or MLflow load.

Issue 29: an unreachable tracking server cost 254 s of MLflow's retries and a 454-line traceback; a missing
spec file cost 4-7 s of imports. The commands run as real subprocesses (the console script), timed here.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mg_tune.server import free_port
from mg_tune.tracking import check_tracking_uri

MG_TUNE = str(Path(sys.executable).parent / "mg-tune")
HEAVY = ("torch", "ray", "mlflow", "pandas")  # optuna (~0.3 s) loads on purpose: its logger is quieted for every command


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([MG_TUNE, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    "args",
    [
        ["pareto", "--search", "S"],
        ["evaluate", "--search", "S"],
        ["export", "--search", "S", "--trial", "t0", "--epoch", "1", "--to", "exported"],
        ["dashboard", "--search", "S"],
        ["search", "spec.yaml"],  # before Ray starts: nothing of Ray's appears in the output
    ],
    ids=lambda args: args[0],
)
def test_an_unreachable_tracking_server_is_one_line_and_exit_2_within_seconds(args, tmp_path):
    (tmp_path / "spec.yaml").write_text("trials: 2\n")
    port = free_port()  # closed again: nothing listens there, the connection is refused
    result, took = _run(args, tmp_path, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    assert result.stderr == f"error: tracking URI http://127.0.0.1:{port}: cannot connect (connection refused)\n"
    assert took < 15, f"{took:.1f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


def test_a_server_that_accepts_but_never_answers_is_one_line_after_the_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes the handshake; nobody reads or answers
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ValueError) as error:
            check_tracking_uri(uri, timeout=1)
        took = time.monotonic() - started
    assert str(error.value) == f"tracking URI {uri}: cannot connect (no answer within 1 s)"
    assert 1 <= took < 5


def test_an_unknown_host_is_named_as_such():
    with pytest.raises(ValueError, match=r"^tracking URI http://no-such-host\.invalid:5000: cannot connect \(unknown host\)$"):
        check_tracking_uri("http://no-such-host.invalid:5000", timeout=5)


@pytest.mark.parametrize("args", [["--help"], ["search", "--help"], ["search", "missing.yaml"]], ids=" ".join)
def test_help_and_argument_errors_take_under_a_second_of_cpu(args, tmp_path):
    """The command's own CPU time (user + sys), < 1 s, and its wall time, < 1.5 s at best of three.

    Measured on the shared 2-core machine (December 2026): 0.5 s of CPU each; wall 0.2-0.5 s when
    it was quiet, up to 1.8 s at a load average of 10 from other work. So wall time gets three tries
    and, only when all three are slow while CPU time stays low, the neighbours are named as the cause.
    """
    cpu, wall = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result, seconds = _run(args, tmp_path)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        wall.append(seconds)
        if seconds < 1.5:
            break
    assert result.returncode == (2 if args[-1] == "missing.yaml" else 0), result.stderr
    if args[-1] == "missing.yaml":
        assert result.stderr == "error: missing.yaml: cannot read spec (No such file or directory)\n"
    assert min(cpu) < 1.0, [f"{t:.2f} s" for t in cpu]
    if min(wall) >= 1.5:
        load = os.getloadavg()[0]
        assert load > os.cpu_count() * 2, f"wall {[f'{t:.2f} s' for t in wall]} at load {load:.1f} on {os.cpu_count()} cores"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"], ["search", "missing.yaml"], ["submit", "missing.yaml"], ["data", "check", "missing.yaml"],
        ["search", "spec.yaml", "--tracking-uri", "http://127.0.0.1:{port}"], ["pareto", "--search", "S", "--tracking-uri", "http://127.0.0.1:{port}"],
    ],
    ids=lambda args: " ".join(args[:3]).replace("http://127.0.0.1:{port}", "unreachable"),
)
def test_failing_early_imports_neither_torch_nor_ray_nor_mlflow(args, tmp_path):
    """The import-based check behind the timings: which heavy packages a command loaded before it failed."""
    (tmp_path / "spec.yaml").write_text("trials: 2\n")
    args = [a.format(port=free_port()) for a in args]
    code = (
        "import sys\nfrom mg_tune.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit:\n    pass\n"
        f"print('loaded:', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "loaded: []", result.stdout + result.stderr

"""Ray nodes as separate ``ray start --block`` processes on 127.0.0.1, as on a cluster's machines (the cluster and jobs tests)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


class RayNode:
    """One ``ray start --block`` process (a head or a worker node), stopped with its process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, num_cpus: int = 1, num_gpus: int = 0) -> None:
        """``num_gpus``: GPUs the node declares (ids 0..num_gpus-1, none needed on the machine)."""
        command = [RAY, "start", "--block", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--node-ip-address=127.0.0.1", *args]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def wait_for_nodes(address: str, count: int, env: dict[str, str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    probe = f"import ray; ray.init(address='{address}', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} nodes")

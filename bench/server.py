"""Start the service as the container does, on a loopback port: shared by tests and load scripts."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def container_command() -> list[str]:
    """The Dockerfile's exec-form CMD."""
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    argv: list[str] = json.loads(line.removeprefix("CMD "))
    return argv


def loopback_command(port: int, http: str | None = None) -> list[str]:
    """The container's command, on 127.0.0.1:`port` instead of 0.0.0.0:8000; `http` swaps its HTTP protocol."""
    argv = container_command()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    if http is not None:
        argv[argv.index("--http") + 1] = http
    return [str(BIN / argv[0]), *argv[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[Any], timeout: float = 60, log: Path | None = None) -> None:
    """Return once `url`/readyz answers 200; RuntimeError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text() if log else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {timeout} s")


class Server:
    """One uvicorn process; its output goes to a log file that can be read at any time."""

    def __init__(self, weights: Path, log: Path, env: dict[str, str] | None = None, http: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        full_env = {**os.environ, "MNIST_CODEC_WEIGHTS": str(weights), "MNIST_CODEC_DEVICE": "cpu", **(env or {})}
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                loopback_command(self.port, http),
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `stop` ends uvicorn's workers too
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 60) -> None:
        wait_ready(self.url, self.process, timeout, self.log_path)

    def stop(self) -> None:
        """Kill the server and every process it started (uvicorn's workers with --workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

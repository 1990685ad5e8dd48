"""A real uvicorn process on a loopback port, started with the Dockerfile's own command."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import COMMITTED_WEIGHTS, ROOT

BIN = Path(sys.executable).parent


def container_command() -> list[str]:
    """The Dockerfile's exec-form CMD."""
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    argv: list[str] = json.loads(line.removeprefix("CMD "))
    return argv


def loopback_command(port: int) -> list[str]:
    """The container's command, on 127.0.0.1:`port` instead of 0.0.0.0:8000."""
    argv = container_command()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return [str(BIN / argv[0]), *argv[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(weights: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "MNIST_CODEC_WEIGHTS": str(weights), "MNIST_CODEC_DEVICE": "cpu"}
    return subprocess.Popen(
        loopback_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("server did not become ready in time")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    process = start(COMMITTED_WEIGHTS, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout:
            process.stdout.close()


def test_round_trip_over_real_http(server: tuple[str, subprocess.Popen[str]], seven_png: bytes) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=10) as client:
        encoded = client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
        assert encoded.status_code == 200 and len(encoded.content) == 24
        decoded = client.post("/decode", content=encoded.content, headers={"content-type": "application/octet-stream"})
        assert decoded.status_code == 200 and decoded.content.startswith(b"\x89PNG")
        assert decoded.headers["x-model-id"] == encoded.headers["x-model-id"]
        assert client.post("/decode", content=b"short").status_code == 422


def test_sigterm_stops_the_server_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = server
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped.
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    output = process.stdout.read() if process.stdout else ""
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


def test_missing_checkpoint_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    process = start(tmp_path / "missing.pt", free_port())
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in output
    assert re.search(r"cannot start: checkpoint .*missing\.pt not found", output), output

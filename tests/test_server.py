"""A real uvicorn process on a loopback port, started with the Dockerfile's own command."""

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import COMMITTED_WEIGHTS

from app.codec import checkpoint
from bench.server import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(COMMITTED_WEIGHTS, tmp_path / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def raw_request(port: int, head: str, body: bytes) -> socket.socket:
    """Open a connection and send `head` plus part of a body, leaving the request unfinished."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(head.encode() + body)
    return conn


def read_response(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_round_trip_over_real_http(server: Server, seven_png: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        encoded = client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
        assert encoded.status_code == 200 and len(encoded.content) == 24
        decoded = client.post("/decode", content=encoded.content, headers={"content-type": "application/octet-stream"})
        assert decoded.status_code == 200 and decoded.content.startswith(b"\x89PNG")
        assert decoded.headers["x-model-id"] == encoded.headers["x-model-id"]
        assert client.post("/decode", content=b"short").status_code == 422
        too_big = client.post("/decode", content=b"\0" * (2 * 1024 * 1024))
        assert too_big.status_code == 413 and too_big.headers["content-type"] == "application/json"


def test_sigterm_lets_the_request_in_flight_finish(server: Server) -> None:
    head = (
        "POST /decode HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 24\r\nConnection: close\r\n\r\n"
    )
    conn = raw_request(server.port, head, b"\0" * 10)  # in flight: 14 bytes still to come
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.TransportError):  # no new connections once shutting down
        httpx.get(f"{server.url}/healthz", timeout=2)
    conn.sendall(b"\0" * 14)
    response = read_response(conn)
    conn.close()
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert b"\x89PNG" in response
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped.
    assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log
    assert "Traceback" not in server.log


def test_a_client_leaving_mid_upload_is_one_info_line(server: Server, seven_png: bytes) -> None:
    head = (
        "POST /encode HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 5000\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="img"; filename="7.png"\r\n\r\n' + seven_png[:100]
    fds_before = server.open_fds()
    for _ in range(5):
        raw_request(server.port, head, part).close()
    time.sleep(0.5)
    with httpx.Client(base_url=server.url, timeout=10) as client:  # still serving
        assert client.post("/encode", files={"img": ("7.png", seven_png)}).status_code == 200
    log = server.log
    assert log.count("client disconnected during the request body of POST /encode") == 5, log
    assert "Traceback" not in log
    assert server.open_fds() <= fds_before + 1  # the client's own keep-alive connection at most


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(COMMITTED_WEIGHTS.read_bytes()[:5000])
    return path


def _wrong_architecture(tmp_path: Path) -> Path:
    """A consistent file whose weights do not chain: 784 -> 128, then a layer that takes 256."""
    path = tmp_path / "wide.safetensors"
    stored = checkpoint.read(COMMITTED_WEIGHTS)
    stored.tensors["encoder.2.weight"] = np.zeros((64, 256), np.float32)
    checkpoint.write(path, stored)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda tmp: tmp / "missing.safetensors", r"checkpoint .*missing\.safetensors not found", id="missing"
        ),
        pytest.param(_truncated, r"checkpoint .*truncated\.safetensors is unreadable", id="truncated"),
        pytest.param(_wrong_architecture, r"checkpoint .*wide\.safetensors does not fit", id="wrong-architecture"),
    ],
)
def test_a_bad_checkpoint_exits_non_zero_with_one_clear_line(make, message: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = Server(make(tmp_path), tmp_path / "server.log")
    try:
        returncode = server.process.wait(timeout=60)
    finally:
        server.stop()
    assert returncode != 0
    log = server.log
    assert "Traceback" not in log
    assert len(re.findall(message, log)) == 1, log
    assert re.search(r"cannot start: " + message, log), log

"""The connection layer of a real server (the container's command) over raw loopback sockets.

Deadlines (408), header limits (431), pipelining and framing, slow uploads
against the concurrency limit, and the bound on open connections. One server
with short deadlines and small limits serves the whole module; every test is
bounded in time and in connections.
"""

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import uvicorn_server

from bench.server import Server

LIMITS = {
    "MNIST_CODEC_BODY_TIMEOUT_S": "1",
    "MNIST_CODEC_HEADER_TIMEOUT_S": "1",
    "MNIST_CODEC_MAX_CONCURRENCY": "4",
    "MNIST_CODEC_MAX_CONNECTIONS": "200",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with uvicorn_server(tmp_path_factory.mktemp("connections"), LIMITS) as running:
        yield running


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def decode_request(latent: bytes, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return (
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n%s\r\n" % (len(latent), connection)
    ) + latent


def latents(count: int) -> list[bytes]:
    """`count` different mlp6 latents, and so `count` different decoded digits."""
    return [np.full(6, value, "<f4").tobytes() for value in np.linspace(-2, 2, count)]


def test_pipelined_requests_are_answered_in_order_before_a_malformed_one(server: Server) -> None:
    five = latents(5)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        expected = [client.post("/decode", content=latent).content for latent in five]
    assert len(set(expected)) == 5
    conn = connect(server)
    conn.sendall(b"".join(decode_request(latent) for latent in five) + b"NOT HTTP AT ALL\r\n\r\n")
    answer = read_all(conn)
    conn.close()
    assert statuses(answer) == [200, 200, 200, 200, 200, 400]
    positions = [answer.index(png) for png in expected]
    assert positions == sorted(positions), "answered out of order"
    assert answer.rstrip().endswith(b"}") and b'"detail": "malformed HTTP request' in answer


def test_a_body_longer_than_its_content_length_keeps_the_answer_before(server: Server) -> None:
    (latent,) = latents(1)
    conn = connect(server)
    conn.sendall(decode_request(latent) + b"these bytes are past the Content-Length\r\n\r\n")
    answer = read_all(conn)
    conn.close()
    assert statuses(answer) == [200, 400]
    assert b"\x89PNG" in answer


def test_a_body_shorter_than_its_content_length_times_out_with_408(server: Server) -> None:
    conn = connect(server)
    started = time.monotonic()
    conn.sendall(decode_request(b"\0" * 24)[:-14])  # 10 of the 24 bytes promised
    answer = read_all(conn)  # returns once the server closes the connection
    elapsed = time.monotonic() - started
    conn.close()
    assert statuses(answer) == [408]
    assert b"connection: close" in answer.lower()
    assert b"request body not received within 1 s (10 bytes came)" in answer
    assert 0.9 < elapsed < 5


def test_an_unfinished_request_head_times_out_with_408(server: Server) -> None:
    conn = connect(server)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    answer = read_all(conn)
    conn.close()
    assert statuses(answer) == [408]
    assert b"request head not received within 1 s" in answer


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(server: Server) -> None:
    conn = connect(server)
    started = time.monotonic()
    assert read_all(conn) == b""
    assert 0.9 < time.monotonic() - started < 5
    conn.close()


def test_a_10_mb_request_header_is_431_without_reading_it_all(server: Server) -> None:
    conn = connect(server)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536)
    sent = 65536
    try:  # keep sending until the server stops reading: it must, long before 10 MB
        for _ in range(160):
            conn.sendall(b"a" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = read_all(conn)
    conn.close()
    assert statuses(answer) in ([431], []), answer[:200]  # a reset may beat the answer to the client
    assert sent < 10 * 1024 * 1024
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200


def test_a_request_head_over_the_byte_limit_is_431(server: Server) -> None:
    conn = connect(server)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    answer = read_all(conn)
    conn.close()
    assert statuses(answer) == [431]
    assert b"over the limit of 16384" in answer


def test_10000_header_fields_are_431(server: Server) -> None:
    conn = connect(server)
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    answer = read_all(conn)
    conn.close()
    assert statuses(answer) == [431]


def test_slow_uploads_do_not_take_the_concurrency_slots(server: Server, seven_png: bytes) -> None:
    """Twice as many trickling uploads as there are slots (4): a normal client is still served."""
    body = b'--b\r\nContent-Disposition: form-data; name="img"; filename="7.png"\r\n\r\n' + seven_png + b"\r\n--b--\r\n"
    head = (
        b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    slow = [connect(server) for _ in range(8)]
    for conn in slow:
        conn.sendall(head + body[:20])  # and then nothing more, within the 1 s deadline
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            codes = [client.post("/encode", files={"img": ("7.png", seven_png)}).status_code for _ in range(10)]
    finally:
        for conn in slow:
            conn.close()
    assert codes == [200] * 10


def test_connections_over_the_bound_are_closed_and_the_rest_still_served(server: Server, seven_png: bytes) -> None:
    held = []
    try:
        for _ in range(200):  # MNIST_CODEC_MAX_CONNECTIONS: 200
            held.append(connect(server))
        time.sleep(0.2)
        extra = connect(server)
        extra.settimeout(0.5)  # far below the 1 s head deadline: this is the bound, not the deadline
        assert read_all(extra) == b""
        extra.close()
        held.pop().close()  # one slot free again: served
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/encode", files={"img": ("7.png", seven_png)}).status_code == 200
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.3)
    assert server.open_fds() < 50
    assert "over 200 open connections" in server.log
    assert "Traceback" not in server.log


def test_the_server_lifts_its_descriptor_limit_to_fit_its_connections(server: Server) -> None:
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    soft = int(re.search(r"Max open files\s+(\d+)", limits).group(1))  # type: ignore[union-attr]
    hard = int(re.search(r"Max open files\s+\d+\s+(\d+)", limits).group(1))  # type: ignore[union-attr]
    assert soft >= min(hard, 200 + 1024)


def test_a_refused_body_still_trickling_is_cut_off_at_the_head_deadline(server: Server) -> None:
    """After an early 413 the server discards the rest of the body, but not for ever."""
    conn = connect(server)
    conn.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + b"\0" * 100)
    answer = b""
    while b"}" not in answer:
        answer += conn.recv(4096)
    assert statuses(answer) == [413]
    started = time.monotonic()
    closed = False
    while not closed and time.monotonic() - started < 5:
        try:
            conn.sendall(b"\0")
            conn.settimeout(0.2)
            closed = conn.recv(4096) == b""
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    conn.close()
    assert closed and time.monotonic() - started < 3

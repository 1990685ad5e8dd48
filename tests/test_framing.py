"""Framing that never hangs (issue 17, part 2), against a real server over loopback sockets.

Malformed chunked bodies are 400 at once and closed; a 413 reaches a client that
is still sending (lingering close); an HTTP/1.1 request without Host is 400; and
the protections hold under a plain `uvicorn app.main:app`, while an explicit other
protocol starts with a one-line warning.
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import COMMITTED_WEIGHTS, ROOT, uvicorn_server

from bench.server import BIN, Server, free_port, wait_ready

# The body deadline stays long: an answer within a second is the protocol's, not the deadline's.
LIMITS = {"MNIST_CODEC_BODY_TIMEOUT_S": "20", "MNIST_CODEC_MAX_UPLOAD_BYTES": str(256 * 1024)}
OCTET = "application/octet-stream"
CHUNKED_HEAD = b"POST /decode HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with uvicorn_server(tmp_path_factory.mktemp("framing"), LIMITS) as running:
        yield running


def exchange(port: int, data: bytes, timeout: float = 5) -> tuple[bytes, float, bool]:
    """Send `data`, read until the server closes: (what came, seconds taken, whether it closed)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    start = time.monotonic()
    conn.sendall(data)
    chunks, closed = [], False
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        closed = True
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    conn.close()
    return b"".join(chunks), time.monotonic() - start, closed


def access_lines(server: Server) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log.splitlines() if line.startswith('{"ts"')]


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        pytest.param(b"zz\r\nabc\r\n", "Invalid character in chunk size", id="size-not-hex"),
        pytest.param(b"-5\r\nhello\r\n", "Invalid character in chunk size", id="size-negative"),
        pytest.param(b"FFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n", "Chunk size overflow", id="size-overflows"),
        pytest.param(b"5\r\nhelloEXTRA\r\n0\r\n\r\n", "Expected LF after chunk data", id="more-data-than-size"),
    ],
)
def test_a_malformed_chunked_body_is_400_at_once_and_closed(server: Server, chunks: bytes, reason: str) -> None:
    request_id = f"chunk-{reason.split()[0].lower()}-{len(chunks)}"
    answer, seconds, closed = exchange(server.port, CHUNKED_HEAD % request_id.encode() + chunks)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert reason in answer.decode(), answer
    assert closed and seconds < 2, f"answered in {seconds:.1f} s, closed: {closed}"
    time.sleep(0.2)  # the guard records the request once the app has seen the end of it
    [line] = [line for line in access_lines(server) if line["request_id"] == request_id]
    assert line["status"] == 400, line


def oversize_upload_statuses(url: str, client: str, count: int = 50) -> list[int | str]:
    """`count` uploads of four times the limit, each on a connection of its own (Connection: close)."""
    big = bytes(1024 * 1024)
    statuses: list[int | str] = []
    if client == "httpx":
        with httpx.Client(base_url=url, timeout=10, headers={"Connection": "close"}) as http:
            for _ in range(count):
                try:
                    statuses.append(http.post("/encode", files={"img": ("big.png", big, "image/png")}).status_code)
                except httpx.TransportError as exc:
                    statuses.append(f"{type(exc).__name__}: {exc}")
        return statuses
    for _ in range(count):  # urllib (http.client): sends all of the body, then reads; urllib sends Connection: close
        request = urllib.request.Request(url + "/decode", data=big, headers={"Content-Type": OCTET})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
        except OSError as exc:  # URLError(BrokenPipeError), ConnectionResetError: the 413 was lost
            statuses.append(f"{type(exc).__name__}: {exc}")
    return statuses


@pytest.mark.parametrize("client", ["httpx", "urllib"])
def test_fifty_oversize_uploads_each_get_their_413(server: Server, client: str) -> None:
    """A client that sends all of an oversize body before reading, then closes, still reads its 413.

    Closed outright, the connection answers the unread bytes with a reset: urllib then
    lost the 413 to "Broken pipe" about one time in four. (httpx reads the answer after
    a failed write, so it fared better; it is held to the same standard.)
    """
    assert oversize_upload_statuses(server.url, client) == [413] * 50


def test_an_oversize_chunked_upload_gets_its_413_and_the_connection_ends(server: Server) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (65536, bytes(65536)) for _ in range(16)) + b"0\r\n\r\n"  # 1 MiB
    head = CHUNKED_HEAD.replace(b"Host: x", b"Host: x\r\nConnection: close") % b"big"
    answer, seconds, closed = exchange(server.port, head + body)
    assert answer.startswith(b"HTTP/1.1 413 ") and closed and seconds < 3, (answer[:100], seconds, closed)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", 400, id="1.1-no-host"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="1.1-two-hosts"),
        pytest.param(b"GET /healthz HTTP/1.0\r\n\r\n", 200, id="1.0-no-host"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, id="1.1-one-host"),
    ],
)
def test_http_1_1_needs_exactly_one_host(server: Server, head: bytes, status: int) -> None:
    answer, _, closed = exchange(server.port, head)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert closed
    if status == 400:
        assert b"Host header field" in answer


def plain_uvicorn(log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", str(port), *extra]
    env = {"MNIST_CODEC_WEIGHTS": str(COMMITTED_WEIGHTS), "MNIST_CODEC_DEVICE": "cpu", "MNIST_CODEC_MODELS": "[]"}
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}", process, log=log)
    return process, port


def test_a_plain_uvicorn_start_gets_the_protections(tmp_path: Path) -> None:
    """`uvicorn app.main:app`, as FastAPI's docs teach it: `--http auto` becomes the limited protocol."""
    log = tmp_path / "plain.log"
    process, port = plain_uvicorn(log)
    try:
        answer, seconds, closed = exchange(port, CHUNKED_HEAD % b"plain" + b"zz\r\nabc\r\n")
    finally:
        process.terminate()
        process.wait(10)
    assert answer.startswith(b"HTTP/1.1 400 ") and closed and seconds < 2, (answer[:100], seconds)
    assert "HTTP protocol: app.service.protocol:LimitedHttpToolsProtocol" in log.read_text()


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_an_explicit_other_protocol_starts_with_a_one_line_warning(tmp_path: Path, protocol: str) -> None:
    log = tmp_path / f"{protocol}.log"
    process, _ = plain_uvicorn(log, "--http", protocol)
    process.terminate()
    process.wait(10)
    warnings = [line for line in log.read_text().splitlines() if "lacks the service's limits" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING"), log.read_text()
    assert "make serve" in warnings[0]


def test_the_documented_command_starts_without_a_warning(server: Server) -> None:
    """`server` runs the container's command (bench.server), the one make, Docker and `mnist-codec serve` run."""
    assert "lacks the service's limits" not in server.log


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(
            b"HEAD /static/demo.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, id="head-no-body-write"
        ),
        pytest.param(b"GET /static/demo.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, id="file"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, id="small"),
    ],
)
def test_every_answer_goes_out_whole_with_its_head_joined_to_the_body(
    server: Server, request_bytes: bytes, status: int
) -> None:
    """The head is held for the body's first write: an answer with no body write (HEAD) still gets its head."""
    answer, seconds, closed = exchange(server.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 %d " % status) and closed and seconds < 2, (answer[:120], seconds)
    head, _, body = answer.partition(b"\r\n\r\n")
    if request_bytes.startswith(b"GET"):
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        assert len(body) == length

"""Clients that leave (issue 17, part 3): logged and counted as 499, never as a 5xx.

A real server (the container's command) with micro-batching on and a long batch
wait, so that a request can be caught waiting for its place in a batch; and the
guard in process, where the ASGI server reports the disconnect through `receive`.
"""

import io
import json
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import COMMITTED_WEIGHTS, uvicorn_server
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from app.service.middleware import Guard, guard_kwargs
from app.service.observability import Metrics
from app.settings import Settings
from bench.server import Server

BATCH_WAIT_S = 1.0
ENV = {"MNIST_CODEC_MICROBATCHING": "on", "MNIST_CODEC_MICROBATCH_MAX_WAIT_US": str(int(BATCH_WAIT_S * 1e6))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with uvicorn_server(tmp_path_factory.mktemp("disconnects"), ENV) as running:
        yield running


def send_and_leave(server: Server, request: bytes, after_s: float = 0.0) -> None:
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn.sendall(request)
    time.sleep(after_s)
    conn.close()


def line_for(server: Server, request_id: str, wait_s: float = 5) -> dict[str, object]:
    """The access-log line of `request_id`, once it is written."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for line in server.log.splitlines():
            if line.startswith('{"ts"') and json.loads(line)["request_id"] == request_id:
                return dict(json.loads(line))
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}:\n{server.log[-2000:]}")


def request_counts(server: Server) -> dict[tuple[str, str], float]:
    """mnist_codec_requests_total by (endpoint, status)."""
    text = httpx.get(server.url + "/metrics").text
    return {
        (sample.labels["endpoint"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mnist_codec_requests_total"
    }


def assert_no_server_errors(server: Server) -> None:
    statuses = [json.loads(line)["status"] for line in server.log.splitlines() if line.startswith('{"ts"')]
    assert not [status for status in statuses if status >= 500], statuses
    assert not [key for key in request_counts(server) if key[1].startswith("5")]


def head(path: str, request_id: str, length: int, content_type: str, model_id: str | None = None) -> bytes:
    claim = "" if model_id is None else f"X-Model-Id: {model_id}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {request_id}\r\n{claim}"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_client_that_leaves_mid_body_is_499(server: Server) -> None:
    send_and_leave(server, head("/decode", "left-mid-body", 1000, "application/octet-stream") + b"\0" * 10, 0.1)
    line = line_for(server, "left-mid-body")
    assert line["status"] == 499 and line["bytes_out"] == 0
    assert request_counts(server)[("other", "499")] >= 1  # the body comes before the route is known
    assert_no_server_errors(server)


def test_a_client_that_leaves_while_waiting_for_its_place_in_a_batch_is_499(server: Server, seven_png: bytes) -> None:
    boundary = "leaveboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="img"; filename="7.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + seven_png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = f"multipart/form-data; boundary={boundary}"
    send_and_leave(server, head("/encode", "left-waiting", len(body), form) + body, 0.2)  # the batch waits 1 s
    line = line_for(server, "left-waiting", wait_s=BATCH_WAIT_S + 5)
    assert (line["status"], line["endpoint"]) == (499, "/encode")
    assert request_counts(server)[("/encode", "499")] >= 1
    assert_no_server_errors(server)


def test_a_client_that_leaves_before_its_answer_is_499(server: Server) -> None:
    digits = np.random.default_rng(0).integers(0, 256, size=(2000, 28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, digits)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        coded = client.post(
            "/encode/batch?model=ec64", content=buffer.getvalue(), headers={"content-type": "application/x-npy"}
        )
    assert coded.status_code == 200
    latents = coded.content * 5  # 10,000 latents: a few hundred milliseconds of arithmetic decoding
    # ec64 has two versions: bare latents name theirs, as a client does, or they are a 409 at once, not a decode.
    made_by = coded.headers["x-model-id"]
    start = time.monotonic()
    send_and_leave(
        server,
        head("/decode/batch?model=ec64", "left-early", len(latents), "application/octet-stream", made_by) + latents,
    )
    line = line_for(server, "left-early", wait_s=30)
    assert time.monotonic() - start > 0.05, "the answer came too soon to tell"
    assert (line["status"], line["endpoint"]) == (499, "/decode/batch")
    assert request_counts(server)[("/decode/batch", "499")] >= 1
    assert_no_server_errors(server)


async def test_in_process_a_disconnect_mid_body_is_499_in_the_log_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    """The guard alone, under any ASGI server: receive reports the disconnect, nothing is answered."""
    reached = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal reached
        reached = True

    messages: list[Message] = [
        {"type": "http.request", "body": b"\0" * 10, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    metrics = Metrics(FastAPI())
    guard = Guard(app, metrics, **guard_kwargs(Settings(weights=COMMITTED_WEIGHTS, device="cpu")))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/decode",
        "headers": [(b"host", b"x"), (b"content-length", b"24"), (b"x-request-id", b"gone-1")],
        "client": ("127.0.0.1", 1),
    }
    await guard(scope, receive, send)
    assert sent == [] and not reached
    assert metrics.requests.counts == {("other", "POST", 499): 1}


pytestmark = pytest.mark.anyio

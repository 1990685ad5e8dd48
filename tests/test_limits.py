"""Limits and faults in process: concurrency, streamed bodies over the limit, unexpected errors."""

import logging
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from conftest import COMMITTED_WEIGHTS
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.codec.codecs import Codec
from app.main import create_app
from app.service.middleware import Guard, guard_kwargs
from app.service.observability import Metrics
from app.settings import Settings

pytestmark = pytest.mark.anyio


def guarded(inner: ASGIApp, limit: int) -> Guard:
    """`inner` behind the guard, with the default limits but `limit` requests in progress at once."""
    settings = Settings(weights=COMMITTED_WEIGHTS, device="cpu")
    return Guard(inner, Metrics(FastAPI()), **{**guard_kwargs(settings), "max_concurrency": limit})


def client_for(**settings: float) -> tuple[httpx.AsyncClient, FastAPI]:
    app = create_app(Settings(weights=COMMITTED_WEIGHTS, device="cpu", **settings))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test")
    return client, app


async def test_over_the_concurrency_limit_is_503_with_retry_after() -> None:
    release = anyio.Event()

    async def busy_model(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()  # a request in the model's work, holding its slot
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = guarded(busy_model, limit=1)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test")
    results: dict[str, httpx.Response] = {}

    async def first() -> None:
        results["first"] = await client.post("/decode", content=b"\0" * 24)

    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        await anyio.sleep(0.05)  # the first request now holds the only slot
        refused = await client.post("/decode", content=b"\0" * 24)
        health_app = guarded(busy_model, limit=0)
        release.set()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "over capacity" in refused.json()["detail"]
    assert results["first"].status_code == 200
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=health_app), base_url="http://t") as probe:
        assert (await probe.get("/readyz")).status_code == 200, "probes are never refused"


async def test_a_request_waiting_for_its_body_holds_no_concurrency_slot() -> None:
    """A slow upload waits outside the limit: with one slot, others are still served meanwhile."""
    client, app = client_for(max_concurrency=1)
    release = anyio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        await release.wait()
        yield b"\0" * 24

    results: dict[str, httpx.Response] = {}

    async def first() -> None:
        results["first"] = await client.post("/decode", content=slow_body())

    async with app.router.lifespan_context(app), client, anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        await anyio.sleep(0.05)  # the first request is now waiting for its body
        served = [await client.post("/decode", content=b"\0" * 24) for _ in range(3)]
        release.set()
    assert [response.status_code for response in served] == [200, 200, 200]
    assert results["first"].status_code == 200


async def test_a_body_not_received_in_time_is_408_and_closes_the_connection() -> None:
    client, app = client_for(body_timeout_s=0.2)

    async def stalled() -> AsyncIterator[bytes]:
        yield b"\0" * 10
        await anyio.sleep(5)  # the rest never comes in time
        yield b"\0" * 14

    async with app.router.lifespan_context(app), client:
        with anyio.fail_after(3):
            response = await client.post("/decode", content=stalled())
    assert response.status_code == 408
    assert response.json() == {"detail": "request body not received within 0.2 s (10 bytes came)"}
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        pytest.param({f"x-field-{i}": "1" for i in range(150)}, "header fields, over the limit of 100", id="fields"),
        pytest.param({"x-big": "a" * 20_000}, "bytes of header fields, over the limit of 16384", id="bytes"),
    ],
)
async def test_header_fields_over_the_limits_are_431(headers: dict[str, str], detail: str) -> None:
    client, app = client_for()
    async with app.router.lifespan_context(app), client:
        response = await client.get("/healthz", headers=headers)
    assert response.status_code == 431
    assert detail in response.json()["detail"]


async def test_a_streamed_body_over_the_limit_is_not_read_to_the_end() -> None:
    client, app = client_for(max_upload_bytes=256 * 1024)
    chunks_read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for _ in range(1000):  # 64 MiB if anyone read it all
            chunks_read += 1
            yield b"\0" * 65536

    async with app.router.lifespan_context(app), client:
        response = await client.post("/decode", content=endless())
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert chunks_read <= 6


@pytest.mark.parametrize("path", ["/encode", "/decode"])
async def test_a_declared_length_over_the_limit_is_refused_before_reading(path: str) -> None:
    client, app = client_for(max_upload_bytes=1000)
    headers = {"content-type": "multipart/form-data; boundary=x"}
    async with app.router.lifespan_context(app), client:
        response = await client.post(path, content=b"x" * 5000, headers=headers)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body of 5000 bytes is over the limit of 1000 bytes"}


async def test_unexpected_errors_are_logged_once_and_answered_without_internals(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, seven_png: bytes
) -> None:
    def broken(self: Codec, pixels: object) -> bytes:
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(Codec, "encode", broken)
    client, app = client_for()
    async with app.router.lifespan_context(app), client:
        with caplog.at_level(logging.INFO):
            response = await client.post("/encode", files={"img": ("7.png", seven_png)})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "secret" not in response.text

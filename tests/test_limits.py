"""Limits and faults in process: concurrency, streamed bodies over the limit, unexpected errors."""

import logging
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from conftest import COMMITTED_WEIGHTS
from fastapi import FastAPI

from app.codec.codecs import Codec
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.anyio


def client_for(**settings: int) -> tuple[httpx.AsyncClient, FastAPI]:
    app = create_app(Settings(weights=COMMITTED_WEIGHTS, device="cpu", **settings))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test")
    return client, app


async def test_over_the_concurrency_limit_is_503_with_retry_after() -> None:
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
        refused = await client.post("/decode", content=b"\0" * 24)
        health = await client.get("/readyz")
        release.set()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "over capacity" in refused.json()["detail"]
    assert health.status_code == 200, "probes are never refused"
    assert results["first"].status_code == 200


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

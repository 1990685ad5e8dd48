"""The order of checks (app.service.checks): 404 unknown model, then 409 foreign id, then 422 effort, before any body.

Each endpoint that takes ?model= gets a request that breaks every check at once and a body that
would be refused too; the first check it fails decides the answer, and the body is never read.
Both ways into an endpoint are tried: the direct path (app.service.direct) and FastAPI's own.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from app.errors import UnknownModelError
from app.main import CodecAPI
from app.service import checks

pytestmark = pytest.mark.anyio

CHECKS = {checks.encoding, checks.decoding, checks.batch_decoding}
ENCODERS = {"/encode", "/encode/batch"}  # the others decode: they read X-Model-Id, not ?effort=
DECODERS = {"/decode", "/decode/batch"}
FOREIGN_ID = "mlp6-000000000000"
BODY = b"not what any endpoint reads"  # a 400 or 422 of its own, were it read


def routes_with_a_model(app: CodecAPI) -> dict[str, APIRoute]:
    """Every route whose OpenAPI operation takes ?model=, by path."""
    schema = app.openapi()
    paths = {
        path
        for path, operations in schema["paths"].items()
        for operation in operations.values()
        if any(p["name"] == "model" and p["in"] == "query" for p in operation.get("parameters", []))
    }
    app.direct.find({"method": "GET", "path": "/", "type": "http"})  # builds the table of every router's routes
    routes = [route for router in app.direct.routers for route in router.routes if isinstance(route, APIRoute)]
    return {route.path: route for route in routes if route.path in paths}


Entry = Callable[[Scope, Receive, Send], Awaitable[None]]


async def call(app: FastAPI, entry: Entry, path: str, query: str, headers: dict[str, str]) -> tuple[int, Any, int]:
    """(status, JSON body, how many times the endpoint asked for the body) of one request through `entry`."""
    reads = 0
    answer: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        answer.append(message)

    raw_headers = [(b"host", b"codec.test"), (b"content-type", b"application/octet-stream")]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    scope: Scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": ("127.0.0.1", 1234),
        "server": ("codec.test", 80),
        "state": {},
        "app": app,
    }
    await entry(scope, receive, send)
    status = next(m["status"] for m in answer if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    return status, json.loads(body), reads


@pytest.fixture
async def loaded(app: FastAPI) -> Any:
    async with app.router.lifespan_context(app):
        yield app


async def test_every_endpoint_that_takes_a_model_runs_one_of_the_checks(loaded: CodecAPI) -> None:
    routes = routes_with_a_model(loaded)
    assert set(routes) == ENCODERS | DECODERS
    for path, route in routes.items():
        calls = [dependency.call for dependency in route.dependant.dependencies]
        assert len(calls) == 1 and calls[0] in CHECKS, path


@pytest.mark.parametrize("way", ["direct", "fastapi"])
async def test_the_model_then_the_version_then_the_effort_decide_before_the_body(loaded: CodecAPI, way: str) -> None:
    app = loaded
    entry: Entry = app.dispatch

    if way == "fastapi":  # what a route that does not qualify for the direct path goes through

        async def entry(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(app, scope, receive, send)

    for path in routes_with_a_model(app):
        assert app.direct.find({"method": "POST", "path": path, "type": "http"}) is not None  # else no direct path
        foreign = {"x-model-id": FOREIGN_ID}
        cases = [("model=nosuch&effort=99", foreign, 404, "unknown model 'nosuch'")]
        if path in DECODERS:
            cases.append(("model=mlp6&effort=99", foreign, 409, FOREIGN_ID))
        else:
            cases.append(("model=mlp6&effort=99", foreign, 422, "effort"))
        for query, headers, status, words in cases:
            got, body, reads = await call(app, entry, path, query, headers)
            assert (got, reads) == (status, 0), (way, path, query, body)
            assert words in body["detail"], (way, path, body)


async def test_an_override_of_a_check_holds_on_the_direct_path_too(loaded: CodecAPI) -> None:
    """`app.dependency_overrides` (FastAPI's way for tests to replace a dependency) is honoured by the direct path."""

    async def refuse(request: Request) -> checks.Encoding:
        raise UnknownModelError("overridden")

    loaded.dependency_overrides[checks.encoding] = refuse
    try:
        status, body, reads = await call(loaded, loaded.dispatch, "/encode", "", {})
    finally:
        loaded.dependency_overrides.clear()
    assert (status, body, reads) == (404, {"detail": "overridden"}, 0)

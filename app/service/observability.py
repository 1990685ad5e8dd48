"""Request ids, Prometheus metrics and one structured access-log line per request.

`install_observability(app)` adds `Observability`, a pure ASGI middleware, and the
`GET /metrics` route. Added last in `create_app`, the middleware is the outermost
of ours, so it also sees the 413s of the upload limit and the 500s of bugs.

For each HTTP request it:

- takes the client's `X-Request-Id` when it is a sane token (1 to 128 of
  `A-Z a-z 0-9 . _ : -`), else makes a new one (32 hex digits), puts it in
  `request.state.request_id` and echoes it on the response, error responses included;
- counts the request by endpoint (the route's path template; `other` for unknown
  paths and the static files, so the label set stays small), method and status, and
  times it;
- logs one JSON line on the `app.access` logger (to stdout), which replaces
  uvicorn's own access line (the service runs with `--no-access-log`).

Metrics live in a registry of the app's own (`app.state.metrics`), so several apps
in one process (the tests) do not collide. Each uvicorn process counts its own
requests: with several replicas, Prometheus scrapes each of them.
"""

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_INTERNAL_ERROR = json.dumps({"detail": "internal server error"}).encode()

access_log = logging.getLogger("app.access")

# Seconds; the codec answers in about a millisecond on a CPU, uploads may take longer.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metric families, in a registry of their own."""

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mnist_codec_requests",
            "HTTP requests answered, by endpoint (route template), method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mnist_codec_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mnist_codec_batch_size",
            "Items per model call, by endpoint; batch endpoints report theirs with observe_batch().",
            ["endpoint"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ModelInfo(app))
        # labels() takes a lock and builds a key on every call; a request only needs a dict lookup.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    def count(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        counter = self._counters.get((endpoint, method, status))
        if counter is None:
            counter = self._counters[(endpoint, method, status)] = self.requests.labels(
                endpoint=endpoint, method=method, status=str(status)
            )
        timer = self._timers.get(endpoint)
        if timer is None:
            timer = self._timers[endpoint] = self.latency.labels(endpoint=endpoint)
        counter.inc()
        timer.observe(seconds)


class ModelInfo(Collector):
    """`mnist_codec_model_info{model_id, device} 1` for each model being served, read at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mnist_codec_model_info",
            "The models being served (value 1), by model id and device.",
            labels=["model_id", "device"],
        )
        for codec in getattr(self.app.state, "codecs", None) or ():
            family.add_metric([codec.model_id, str(codec.device)], 1)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # values depend on the app's state: collect only at scrape time


def observe_batch(request: Request, size: int) -> None:
    """For batch endpoints: record how many items one request handed to the model."""
    metrics: Metrics = request.app.state.metrics
    metrics.batch_size.labels(endpoint=endpoint_of(request.scope)).observe(size)


def endpoint_of(scope: Scope) -> str:
    """The path template of the route that took the request (set by the router), or "other"."""
    route = scope.get("route")
    return str(getattr(route, "path", None) or "other")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-Id when it is a sane token, else a new random one."""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_NAME:
            text = bytes(value).decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


def configure_access_log() -> None:
    """Access lines go to stdout as they are (JSON), not through the root logger's format."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


class Observability:
    """Pure ASGI middleware: request id, metrics and the access log (see the module docstring)."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0
        sent_bytes = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _REQUEST_ID_NAME]
                message = {**message, "headers": [*headers, (_REQUEST_ID_NAME, request_id.encode())]}
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status == 0:  # answer here, so the 500 carries the request id too
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(_INTERNAL_ERROR)),
                        ],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": _INTERNAL_ERROR})
            raise  # Starlette's outer layer logs the traceback and sends nothing more
        finally:
            self._record(scope, request_id, status or 500, sent_bytes, time.perf_counter() - start)

    def _record(self, scope: Scope, request_id: str, status: int, sent_bytes: int, seconds: float) -> None:
        endpoint = endpoint_of(scope)  # the router has put the matched route in the scope by now
        metrics: Metrics = self.fastapi_app.state.metrics
        metrics.count(endpoint, scope["method"], status, seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        access_log.info(
            json.dumps(
                {
                    "ts": round(time.time(), 3),
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "endpoint": endpoint,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "bytes_out": sent_bytes,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                },
                separators=(",", ":"),
            )
        )


async def metrics(request: Request) -> Response:
    """Prometheus metrics, text exposition format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_observability(app: FastAPI) -> None:
    """Add the middleware (outermost so far) and GET /metrics to `app`."""
    disable_created_metrics()  # type: ignore[no-untyped-call] # no *_created series: they double the output and nobody reads them
    app.state.metrics = Metrics(app)
    configure_access_log()
    app.add_middleware(Observability, fastapi_app=app)
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=Response, include_in_schema=False)
    document_request_id(app)


REQUEST_ID_DOC = {
    "description": "The request's id: the client's X-Request-Id when it sent a sane one (1 to 128 of A-Z a-z 0-9 "
    "and ._:-), else a new random one; also in the access log.",
    "schema": {"type": "string"},
}


def document_request_id(app: FastAPI) -> None:
    """Declare X-Request-Id on every response in the OpenAPI document: the middleware adds it to all of them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    for response in operation.get("responses", {}).values():
                        response.setdefault("headers", {})["X-Request-Id"] = REQUEST_ID_DOC
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

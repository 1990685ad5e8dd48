"""Request ids, Prometheus metrics and one structured access-log line per request.

The guard (`app.service.middleware.Guard`), the one ASGI layer in front of the app,
uses what this module holds. For each HTTP request it:

- takes the client's `X-Request-Id` when it is a sane token (1 to 128 of
  `A-Z a-z 0-9 . _ : -`), else makes a new one (32 hex digits), puts it in
  `request.state.request_id` and echoes it on the response, error responses included;
- counts the request by endpoint (the route's path template; `other` for unknown
  paths and the static files, so the label set stays small), method and status, and
  times it (`Metrics.observe`: two dict updates; the families are built at scrape time);
- logs one JSON line on the `app.access` logger (to stdout), which replaces
  uvicorn's own access line (the service runs with `--no-access-log`).

Status 499 (nginx's "client closed request") counts a client that left before its
answer: mid-body, waiting for a slot, or while its answer was being made. It is
neither a success nor a server error, so a 5xx alert does not fire for it.

`install_observability(app)` adds `GET /metrics`. Metrics live in a registry of the
app's own (`app.state.metrics`), so several apps in one process (the tests) do not
collide. Each uvicorn process counts its own requests: with several replicas,
Prometheus scrapes each of them.
"""

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import Scope

from app.codec.codecs import Codec, Codecs

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("app.access")

# Seconds; the codec answers in about a millisecond on a CPU, uploads may take longer.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metric families, in a registry of their own."""

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestCounts()
        self.registry.register(self.requests)
        self.batch_size = Histogram(
            "mnist_codec_batch_size",
            "Items per model call, by endpoint and model version; batch endpoints report theirs with observe_batch().",
            ["endpoint", "model_id"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ModelInfo(app))

    def batch_observer(self, codec: Codec) -> Callable[[str, int], None]:
        """What `codec`'s micro-batchers call with (endpoint, size): its own series, one per version."""
        model_id = codec.model_id

        def observe(endpoint: str, size: int) -> None:
            self.batch_size.labels(endpoint=endpoint, model_id=model_id).observe(size)

        return observe

    def count(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.observe(endpoint, method, status, seconds)


class RequestCounts(Collector):
    """`mnist_codec_requests_total` and `mnist_codec_request_duration_seconds`, kept as plain numbers.

    prometheus_client's Counter and Histogram take a lock and walk the buckets on
    every observation; the guard observes from the event loop alone, so two dict
    updates and a bisect do, and the families are built when /metrics is scraped.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # endpoint -> per-bucket counts (the last +Inf), then the sum

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        row = self.latency.get(endpoint)
        if row is None:
            row = self.latency[endpoint] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        row[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "mnist_codec_requests",
            "HTTP requests answered, by endpoint (route template), method and status code "
            "(499: the client left before its answer).",
            labels=["endpoint", "method", "status"],
        )
        for (endpoint, method, status), count in list(self.counts.items()):
            requests.add_metric([endpoint, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "mnist_codec_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by endpoint.",
            labels=["endpoint"],
        )
        bounds = [*(f"{bound:g}" for bound in LATENCY_BUCKETS), "+Inf"]
        for endpoint, row in list(self.latency.items()):
            cumulative = list(itertools.accumulate(row[:-1]))
            latency.add_metric([endpoint], list(zip(bounds, cumulative, strict=True)), sum_value=row[-1])
        yield latency

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ModelInfo(Collector):
    """`mnist_codec_model_info{model_id, device, name, current} 1` for each version being served, read at scrape
    time; `current` is "true" for the version its name means."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mnist_codec_model_info",
            "The model versions being served (value 1), by model id, device, name, and whether the name means it.",
            labels=["model_id", "device", "name", "current"],
        )
        codecs: Codecs | None = getattr(self.app.state, "codecs", None)
        for codec in codecs or ():
            current = "true" if codecs is not None and codecs.means(codec) else "false"
            family.add_metric([codec.model_id, str(codec.device), codec.name, current], 1)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # values depend on the app's state: collect only at scrape time


def observe_batch(request: Request, model_id: str, size: int) -> None:
    """For batch endpoints: record how many items one request handed to the model version `model_id`."""
    metrics: Metrics = request.app.state.metrics
    metrics.batch_size.labels(endpoint=endpoint_of(request.scope), model_id=model_id).observe(size)


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


def configure_access_log() -> logging.Handler | None:
    """Access lines go to stdout as they are (JSON), not through the root logger's format.

    Returns the handler made here, or None when the logger was configured elsewhere.
    """
    if access_log.handlers:
        return None
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    return handler


class AccessLog:
    """One JSON line per request on the `app.access` logger, written without a LogRecord when it can be.

    While the logger's one handler is the stdout handler of `configure_access_log`
    (the service as shipped), a line goes straight to that stream, and the stream is
    flushed once per turn of the event loop, not once per line: the logging module's
    record, caller lookup, lock and formatter cost more than the rest of the log.
    Any other set-up (a handler added by a test or an operator, propagation,
    another level) gets the line through `logging` as before, byte for byte.
    """

    def __init__(self) -> None:
        self.handler = configure_access_log()
        self.only = [self.handler]
        self.flush_pending = False

    def write(self, line: str) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        handler = self.handler
        if handler is None or access_log.handlers != self.only or access_log.propagate:
            access_log.info(line)
            return
        stream = handler.stream  # type: ignore[attr-defined]
        stream.write(line + "\n")
        if not self.flush_pending:
            self.flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush, stream)

    def _flush(self, stream: Any) -> None:
        self.flush_pending = False
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout must not stop the service
            stream.flush()


def _json_text(text: str) -> str:
    """`text` as a JSON string; most paths need no escaping, and skip json.dumps."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


def access_line(
    scope: Scope, request_id: str, endpoint: str, status: int, seconds: float, sent_bytes: int, now: float
) -> str:
    """The access-log line: one JSON object (its keys in this order), no spaces."""
    client = scope.get("client")
    peer = f'"{client[0]}:{client[1]}"' if client else "null"
    return (
        f'{{"ts":{round(now, 3)},"request_id":"{request_id}","method":{_json_text(scope["method"])},'
        f'"path":{_json_text(scope["path"])},"endpoint":{_json_text(endpoint)},"status":{status},'
        f'"duration_ms":{round(seconds * 1000, 3)},"bytes_out":{sent_bytes},"client":{peer}}}'
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics, text exposition format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_observability(app: FastAPI) -> None:
    """Give `app` its metrics (`app.state.metrics`) and GET /metrics."""
    disable_created_metrics()  # type: ignore[no-untyped-call] # no *_created series: they double the output and nobody reads them
    app.state.metrics = Metrics(app)
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

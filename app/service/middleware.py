"""The guard: one pure ASGI layer in front of the app, doing in one pass what every request needs.

For each HTTP request, in this order:

1. **Request id**: the client's X-Request-Id when it is a sane token, else a new one
   (app.service.observability), in `request.state.request_id` and on every response.
2. **The head**: an HTTP/1.1 request without exactly one Host field is 400 (RFC 9112
   3.2); too many header fields or header bytes are 431. Both close the connection.
3. **The body**, read whole before the app runs: 413 over the size limit, at once for
   a declared Content-Length, as soon as the running count passes it for a chunked
   body (the server discards the rest); 408 past the body deadline, closing. A client
   that leaves mid-body is recorded as 499 and gets no answer.
4. **The concurrency limit**, only once the body is in, so a slow upload holds a
   connection and a few bytes, never a slot of the model's work: 503 with Retry-After
   when `limit` requests are in progress. Health probes are never refused.
5. **The app.** An unexpected exception is logged once, with its traceback, and
   answered a JSON 500 without internals.
6. **The record**: one metrics observation and one access-log line. A client gone
   before its answer was complete is 499 (nginx's "client closed request"), never a 5xx.

One layer instead of five: each layer was a coroutine call, a wrapped `send` and a
wrapped `receive` more per request (see the README, Performance).

The HTTP protocol (app.service.protocol) tells the guard two things in the scope: that the
connection was lost before the answer was complete (`CLIENT_GONE`: uvicorn drops what
is sent to a closed connection without a word), and that it refused the body itself
(`REFUSED`: a malformed chunked body, answered 400 by the protocol).
"""

import asyncio
import json
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.service.observability import AccessLog, Metrics, access_line, endpoint_of
from app.settings import Settings

log = logging.getLogger("app")

CLIENT_GONE = "mnist_codec.client_gone"  # set by the protocol: the connection closed before the answer was complete
REFUSED = "mnist_codec.refused"  # set by the protocol: the status it answered the request's body with itself
CLIENT_CLOSED = 499  # nginx's "client closed request"

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID = b"x-request-id"
_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


async def send_json(send: Send, status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> None:
    content = json.dumps(body).encode()
    raw_headers = [_JSON, (b"content-length", str(len(content)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})


CLOSE = {"Connection": "close"}


def _too_large(size: str, limit: int) -> str:
    return f"request body of {size} is over the limit of {limit} bytes"


class Guard:
    """The one ASGI layer in front of the app (see the module docstring)."""

    EXEMPT = frozenset({"/healthz", "/readyz"})  # never refused for capacity

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        per_path_body_bytes: dict[str, int] | None = None,
        max_header_fields: int,
        max_header_bytes: int,
        max_concurrency: int,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access = AccessLog()
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.per_path = per_path_body_bytes or {}  # e.g. a larger limit for the batch endpoints
        self.max_header_fields = max_header_fields
        self.max_header_bytes = max_header_bytes
        self.limit = max_concurrency
        self.retry_after = str(retry_after_s)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # One pass over the header fields for everything the guard needs from them.
        headers = scope["headers"]
        declared: bytes | None = None
        client_id: bytes | None = None
        hosts = 0
        head_bytes = 0
        for name, value in headers:
            head_bytes += len(name) + len(value) + 4  # "name: value\r\n"
            if name == b"content-length":
                declared = value
            elif name == b"host":
                hosts += 1
            elif name == _REQUEST_ID and client_id is None:
                client_id = value
        if client_id is not None and _SANE_REQUEST_ID.fullmatch(client_id):
            request_id = client_id.decode("ascii")
        else:
            request_id = os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (_REQUEST_ID, request_id.encode("ascii"))

        status = 0
        sent_bytes = 0
        complete = False
        gone = False  # the client left before its answer was complete

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_bytes, complete, gone
            if scope.get(CLIENT_GONE):  # the server will drop this message: the client never gets its answer
                gone = True
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = [item for item in message.get("headers", ()) if item[0].lower() != _REQUEST_ID]
                raw.append(id_header)
                message = {"type": "http.response.start", "status": status, "headers": raw}
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
                complete = complete or not message.get("more_body", False)
            await send(message)

        try:
            refusal = self._check_head(scope, len(headers), head_bytes, hosts)
            if refusal is not None:
                await send_json(send_with_id, refusal[0], {"detail": refusal[1]}, CLOSE)
                return
            limit = self.per_path.get(scope["path"], self.max_body_bytes)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await send_json(send_with_id, 413, {"detail": _too_large(f"{int(declared)} bytes", limit)})
                return
            body = await self._read_body(scope, receive, send_with_id, limit)
            if body is None:  # answered (413, 408), or the client left
                gone = status == 0
                return
            if self.in_flight >= self.limit and scope["path"] not in self.EXEMPT:
                detail = f"over capacity: {self.limit} requests already in progress; retry later"
                await send_json(send_with_id, 503, {"detail": detail}, {"Retry-After": self.retry_after})
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed, gone
                if replayed:  # after the body: the server's own receive (it reports a disconnect)
                    message = await receive()
                    gone = gone or (message["type"] == "http.disconnect" and not complete)
                    return message
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            self.in_flight += 1
            try:
                await self.app(scope, replay, send_with_id)
            except Exception:
                log.exception("unexpected error in %s %s", scope["method"], scope["path"])
                if status == 0:
                    await send_json(send_with_id, 500, {"detail": "internal server error"})
            finally:
                self.in_flight -= 1
        finally:
            if scope.get(REFUSED):
                status = scope[REFUSED]
            elif gone or (scope.get(CLIENT_GONE) and not complete):
                status = CLIENT_CLOSED
            self._record(scope, request_id, status or 500, sent_bytes, time.perf_counter() - start)

    def _check_head(self, scope: Scope, fields: int, size: int, hosts: int) -> tuple[int, str] | None:
        if scope.get("http_version") == "1.1" and hosts != 1:
            what = "no Host header field" if hosts == 0 else f"{hosts} Host header fields"
            return 400, f"an HTTP/1.1 request must carry exactly one Host header field; this one has {what}"
        if fields > self.max_header_fields:
            return 431, f"{fields} header fields, over the limit of {self.max_header_fields}"
        if size > self.max_header_bytes:
            return 431, f"{size} bytes of header fields, over the limit of {self.max_header_bytes}"
        return None

    async def _read_body(self, scope: Scope, receive: Receive, send: Send, limit: int) -> bytes | None:
        """The whole body, or None once it is answered (413, 408) or the client has left."""
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        if not scope.get(REFUSED):
                            log.info(
                                "client disconnected during the request body of %s %s", scope["method"], scope["path"]
                            )
                        return None
                    chunk = message.get("body", b"")
                    received += len(chunk)
                    if received > limit:
                        await send_json(send, 413, {"detail": _too_large(f"more than {limit} bytes", limit)})
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"request body not received within {self.body_timeout_s:g} s ({received} bytes came)"
            await send_json(send, 408, {"detail": detail}, CLOSE)
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _record(self, scope: Scope, request_id: str, status: int, sent_bytes: int, seconds: float) -> None:
        endpoint = endpoint_of(scope)  # the router (or the direct dispatch) has put the route in the scope
        self.metrics.count(endpoint, scope["method"], status, seconds)
        self.access.write(access_line(scope, request_id, endpoint, status, seconds, sent_bytes, time.time()))


def guard_kwargs(settings: Settings) -> dict[str, Any]:
    """The guard's limits from the service's settings."""
    return {
        "max_body_bytes": settings.max_upload_bytes,
        "body_timeout_s": settings.body_timeout_s,
        "per_path_body_bytes": {path: settings.max_batch_bytes for path in ("/encode/batch", "/decode/batch")},
        "max_header_fields": settings.max_header_fields,
        "max_header_bytes": settings.max_header_bytes,
        "max_concurrency": settings.max_concurrency,
    }

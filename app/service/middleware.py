"""Pure ASGI middleware guarding the service: headers, body, concurrency, unexpected errors.

Order, outermost first (see `create_app`): HeaderLimit refuses too many header
fields or bytes (431); ReadBody reads the whole body, 413 over the size limit,
408 past its deadline; only then does ConcurrencyLimit count the request
against the model's work (503 when full), so waiting for bytes takes no slot;
CatchUnexpected turns a crash into one log record and a generic 500.
"""

import asyncio
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app")


async def send_json(send: Send, status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> None:
    content = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})


class ReadBody:
    """Read the whole request body before the app runs: 413 over the size limit, 408 past the deadline.

    The body is read here, outside the concurrency limit, so a slow upload
    holds a connection and a few bytes of memory, never a slot of the model's
    work: a client trickling one byte a second cannot starve the others.
    The app then gets the body as one message.

    A declared Content-Length over the limit is answered at once; a chunked
    body as soon as the running count passes it; the server discards the rest
    of it (closing instead would reset a client still sending, and lose the
    413). 408 closes the connection: that client is not sending. A client that
    leaves mid-body costs one info line and no answer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.per_path = per_path or {}  # e.g. a larger limit for the batch endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_json(send, 413, {"detail": _too_large(f"{declared} bytes", limit)})
            return
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        log.info("client disconnected during the request body of %s %s", scope["method"], scope["path"])
                        return
                    chunk = message.get("body", b"")
                    received += len(chunk)
                    if received > limit:
                        await send_json(send, 413, {"detail": _too_large(f"more than {limit} bytes", limit)})
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"request body not received within {self.timeout_s:g} s ({received} bytes came)"
            await send_json(send, 408, {"detail": detail}, CLOSE)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: the server's own receive (it reports a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


CLOSE = {"Connection": "close"}


class HeaderLimit:
    """Answer 431 for a request with too many header fields, or too many header bytes.

    The server (app/protocol.py) already stops reading a head over the byte
    limit; this guard also counts the fields, which no uvicorn parser bounds,
    and holds under any server (the in-process test client included).
    """

    def __init__(self, app: ASGIApp, max_fields: int, max_bytes: int) -> None:
        self.app = app
        self.max_fields = max_fields
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if len(headers) > self.max_fields:
                detail = f"{len(headers)} header fields, over the limit of {self.max_fields}"
                await send_json(send, 431, {"detail": detail}, CLOSE)
                return
            size = sum(len(name) + len(value) + 4 for name, value in headers)  # "name: value\r\n"
            if size > self.max_bytes:
                detail = f"{size} bytes of header fields, over the limit of {self.max_bytes}"
                await send_json(send, 431, {"detail": detail}, CLOSE)
                return
        await self.app(scope, receive, send)


def _too_large(size: str, limit: int) -> str:
    return f"request body of {size} is over the limit of {limit} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ConcurrencyLimit:
    """Answer 503 with Retry-After when `limit` requests are already in progress.

    A bounded amount of work in flight instead of an ever longer queue: a
    client told to come back later beats one that times out. Health probes are
    never refused, so an overloaded replica is not taken for a dead one.
    """

    EXEMPT = frozenset({"/healthz", "/readyz"})

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(retry_after_s)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            detail = f"over capacity: {self.limit} requests already in progress; retry later"
            await send_json(send, 503, {"detail": detail}, {"Retry-After": self.retry_after})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class CatchUnexpected:
    """Log an unexpected exception once, with its traceback, and answer a bare 500.

    Starlette's own last-resort handler re-raises after answering, so the
    server would log the same traceback a second time; this stops it here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            if not started:
                await send_json(send, 500, {"detail": "internal server error"})

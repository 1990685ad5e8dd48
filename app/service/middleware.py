"""Pure ASGI middleware guarding the service: body size, concurrency, unexpected errors.

Order, outermost first (see `create_app`): ConcurrencyLimit refuses work before
anything is read; CatchUnexpected turns a crash into one log record and a
generic 500; BodySizeLimit counts the bytes a handler reads.
"""

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTooLargeError

log = logging.getLogger("app")


async def send_json(send: Send, status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> None:
    content = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, without reading the rest.

    A declared Content-Length over the limit is answered at once, before the
    app runs; a chunked body fails as soon as the running count passes the
    limit: the error is raised from `receive`, inside the handler, so the usual
    JSON error handler answers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}  # e.g. a larger limit for the batch endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_json(send, 413, {"detail": str(_too_large(f"{declared} bytes", limit))})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(f"more than {limit} bytes", limit)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(size: str, limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"request body of {size} is over the limit of {limit} bytes")


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

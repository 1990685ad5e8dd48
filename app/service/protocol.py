"""The HTTP/1.1 connection: uvicorn's httptools protocol plus the limits uvicorn leaves out.

The service runs as `uvicorn app.main:app --http app.service.protocol:LimitedHttpToolsProtocol`
(uvicorn's `--http` takes an import path as well as a name). It is uvicorn's own
httptools protocol, the fast C parser, with four additions:

- **Header limit, 431.** Once more than MNIST_CODEC_MAX_HEADER_BYTES of an
  unfinished request head are buffered, the request is answered 431 (JSON) and
  the connection closed: the rest is never read. (httptools has no limit: a 10 MB
  header was read and answered 200.) A complete head over the limit that came in
  one read, and too many header fields, are 431 from `HeaderLimit` (middleware.py).
- **A deadline for the request head** (MNIST_CODEC_HEADER_TIMEOUT_S): armed when
  the connection opens and after each answer; part of a head by then is 408, no
  byte at all a silent close. It also cuts off a client still sending a body the
  app has already refused (413). uvicorn's keep-alive timeout is only armed after
  an answer, so a connection that never sent a head was held for ever.
- **Malformed requests are refused in turn.** uvicorn answers a parse error at
  once and closes, losing the answers owed to the complete requests pipelined
  before it (or to a request whose body ran past its Content-Length). Here the
  400 waits until those are answered, in order, and nothing more is read.
- **A bound on open connections** (MNIST_CODEC_MAX_CONNECTIONS): one over it is
  closed as soon as it is accepted, and the soft descriptor limit is raised to fit
  the bound, so descriptors cannot run out. (uvicorn's `--limit-concurrency`
  answers 503 but keeps the socket.)

Why not uvicorn's h11 protocol, which gets pipelining and a header limit right
by itself: measured with `make bench`, it costs a third to a half of the
do-nothing floor's throughput on this machine (see the README, Performance).
"""

import asyncio
import http
import json
import logging
import resource
import time
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import get_settings

log = logging.getLogger("app")


def raise_descriptor_limit(max_connections: int) -> None:
    """Lift this process's soft limit on open files to what `max_connections` needs, as far as the hard limit allows.

    Many systems start processes at a soft limit of 1024 descriptors: a few
    hundred idle clients would then stop uvicorn accepting anyone at all.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 1024  # the connections, plus files, sockets and the model's own
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# uvicorn imports this module once, before it starts listening: the right moment.
raise_descriptor_limit(get_settings().max_connections)


def error_response(status: int, detail: str) -> bytes:
    """A complete JSON error response that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    _last_refusal_logged = 0.0  # class-wide: one warning per burst of refused connections

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.max_connections = settings.max_connections
        self.header_timeout_s = settings.header_timeout_s
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = False  # from a request's first byte to the end of its header fields
        self.head_bytes = 0  # of the unfinished head, counted from the read after the one it began in
        self.refusal: bytes | None = None  # an error answer waiting for the answers owed before it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            now = time.monotonic()
            if now - LimitedHttpToolsProtocol._last_refusal_logged > 10:
                LimitedHttpToolsProtocol._last_refusal_logged = now
                log.warning("over %d open connections: closing new ones as they arrive", self.max_connections)
            self.transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but a parse error is refused in turn, and an unfinished head is measured.
        if self.refusal is not None:  # a bad request waits for the answers before it: read no further
            return
        self._unset_keepalive_if_required()
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self.refuse(400, f"malformed HTTP request: {exc}")
            return
        if self.in_head and was_in_head:  # this whole read went to a head still unfinished
            self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes:
                limit = self.max_header_bytes
                self.refuse(431, f"request head (request line and header fields) over the limit of {limit} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self.pipeline or not self.cycle.response_complete:
            return  # the next pipelined request is being answered
        if self.refusal is not None:
            self.transport.write(self.refusal)
            self.transport.close()
            return
        self._arm_head_timer()  # the next head, or the rest of a body answered early (413), is owed

    def refuse(self, status: int, detail: str) -> None:
        """Answer `status` and close: at once, or once the requests before it are answered."""
        self.logger.info("refused a request: %s", detail)
        self.refusal = error_response(status, detail)
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            self.flow.pause_reading()
            return
        self.transport.write(self.refusal)
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if (
            self.in_head
        ):  # part of a head came: say why; an idle connection, or one draining a refused body, just closes
            detail = f"request head not received within {self.header_timeout_s:g} s"
            self.transport.write(error_response(408, detail))
        self.transport.close()

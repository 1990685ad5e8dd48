"""The HTTP/1.1 connection: uvicorn's h11 protocol plus the limits uvicorn leaves out.

The service runs as `uvicorn app.main:app --http app.service.protocol:LimitedH11Protocol`.
uvicorn's `--http` takes an import path as well as a name, and this class is its own
h11 protocol with four additions, each a few lines:

- **Header limit, 431.** h11 stops buffering a request head at
  `max_incomplete_event_size` bytes (we set it from MNIST_CODEC_MAX_HEADER_BYTES)
  and flags the error as 431; uvicorn answers every parse error with a plain-text
  400, so the error is kept and answered with its own status, as JSON.
- **A deadline for the request head** (MNIST_CODEC_HEADER_TIMEOUT_S). uvicorn's
  keep-alive timeout is only armed after a response: a connection that never
  finishes its first request head (or sends nothing) would be held for ever.
- **A bound on open connections** (MNIST_CODEC_MAX_CONNECTIONS). One over it is
  closed as soon as it is accepted, before anything is read, and the process's
  soft descriptor limit is raised to fit the bound, so descriptors cannot run
  out; uvicorn's `--limit-concurrency` answers 503 but keeps the socket.
- **Pipelining** needs nothing: h11 parses the next request only once the one
  before is answered, so pipelined requests are answered in order and a
  malformed one after them is refused last (httptools, uvicorn's default,
  refuses it at once and loses the answers queued before it).
"""

import asyncio
import http
import json
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
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


class _RememberingConnection(h11.Connection):
    """h11's connection, keeping the last protocol error (uvicorn catches it and forgets why)."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise


def error_response(status: int, detail: str) -> bytes:
    """A complete JSON error response that closes the connection, written without h11's state machine."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedH11Protocol(H11Protocol):
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
        self.conn = self.checked_conn = _RememberingConnection(
            h11.SERVER, max_incomplete_event_size=self.max_header_bytes
        )
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            now = time.monotonic()
            if now - LimitedH11Protocol._last_refusal_logged > 10:
                LimitedH11Protocol._last_refusal_logged = now
                log.warning("over %d open connections: closing new ones as they arrive", self.max_connections)
            self.transport.close()
            return
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Arm the deadline while the client owes us a request head; disarm it once the head is in.

        Also while h11 discards the rest of a body the app answered early (413): a
        client trickling that body for ever would otherwise hold the connection.
        """
        waiting = self._waiting() and not self.transport.is_closing()
        if waiting and self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
        elif not waiting:
            self._cancel_head_timer()

    def _waiting(self) -> bool:
        """For a request head, or for the end of a body already answered."""
        state = self.conn.their_state
        return state is h11.IDLE or (state is h11.SEND_BODY and self.conn.our_state is h11.DONE)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self._waiting():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            # Part of a head came: say why. An idle connection, or one draining a refused body, just closes.
            detail = f"request head not received within {self.header_timeout_s:g} s"
            self.transport.write(error_response(408, detail))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        error = self.checked_conn.error
        status = error.error_status_hint if error is not None else 400
        if status == 431:
            detail = f"request head (request line and header fields) over the limit of {self.max_header_bytes} bytes"
        else:
            detail = f"malformed HTTP request: {error or msg}"
        self.logger.info("refused a request: %s", detail)
        self.transport.write(error_response(status, detail))
        self.transport.close()

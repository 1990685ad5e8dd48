"""The HTTP/1.1 connection: uvicorn's httptools protocol plus the limits uvicorn leaves out.

The service runs as `uvicorn app.main:app --http app.service.protocol:LimitedHttpToolsProtocol`
(uvicorn's `--http` takes an import path as well as a name). A plain `uvicorn app.main:app`,
whose `--http` is `auto`, gets this protocol too: the app's lifespan swaps it in
(`check_protocol`) before uvicorn opens its sockets. Any other explicit choice
(`--http httptools`, `--http h11`, another server) starts with a one-line warning.
It is uvicorn's own httptools protocol, the fast C parser, with these additions:

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
  the bound, so descriptors cannot run out: at server start (`check_protocol`, from
  the app's lifespan, which uvicorn runs before it binds its sockets), never at
  import. (uvicorn's `--limit-concurrency` answers 503 but keeps the socket.)
- **A malformed body is 400 at once.** A chunk-size that is not hex, is negative or
  overflows, or a chunk with more data than its size, is a parse error in the
  middle of a request the app is still reading: it is answered 400 there and then,
  and the app's `receive` reports a disconnect (with `REFUSED` in the scope, so the
  guard records the 400). uvicorn's parser stopped reading and held the connection
  until the body deadline.
- **Lingering close.** A connection closed while the client is still sending its
  request (a 413 with `Connection: close`, a refusal) is not closed outright: the
  kernel would answer the unread bytes with a reset, and the client would lose the
  answer ("Broken pipe"). As nginx's `lingering_close` does, the answer is written,
  the sending side shut (FIN), and what still arrives of the body is read and
  discarded until the client closes, for at most LINGER_S (LINGER_IDLE_S without a
  byte) and LINGER_MAX_BYTES. A head over its limit is not lingered on: its 431
  is there to stop reading.
- **One write per small answer.** uvicorn writes a response's head and its body in
  two `send()` calls; the head is held until the body's first write and goes out with
  it (`_CycleTransport`). On loopback a `send()` was a fifth of the server's CPU.
- **The client gone.** A connection lost before its answer was complete puts
  `CLIENT_GONE` in the request's scope: uvicorn drops what is sent to a closed
  connection without a word, and the guard would log a 200 nobody received (499).

uvicorn's private internals this leans on, each with the test that fails when a
release changes it (pyproject.toml bounds uvicorn to the range they were checked
against, >=0.54,<0.55, and requirements.lock pins 0.54.0; a newer uvicorn means
re-reading httptools_impl.py against this list):

    HttpToolsProtocol.__init__(config, server_state, app_state, _loop)
        subclassed as is                       every test against a live server (test_server.py)
    HttpToolsProtocol.data_received            copied, with its private helpers
        _unset_keepalive_if_required, _should_upgrade, handle_websocket_upgrade,
        _unsupported_upgrade_warning, self.parser.feed_data
                                               test_connections.py::test_pipelined_requests_are_answered_in_order_before_a_malformed_one
    on_message_begin / on_headers_complete / on_message_complete / on_response_complete
        called by the parser and the cycle in that order; on_headers_complete makes self.cycle
                                               test_connections.py::test_a_request_head_over_the_byte_limit_is_431,
                                               test_framing.py::test_every_answer_goes_out_whole_with_its_head_joined_to_the_body
    self.connections, self.pipeline (a deque of (cycle, app)), self.cycle, self.scope, self.flow
        (pause_reading / resume_reading), self.server_state.total_requests, self.logger, self.loop
                                               test_connections.py::test_connections_over_the_bound_are_closed_and_the_rest_still_served,
                                               test_connections.py::test_a_body_longer_than_its_content_length_keeps_the_answer_before
    RequestResponseCycle.transport (replaced per cycle), response_started, response_complete,
        disconnected, message_event, scope     test_framing.py::test_a_malformed_chunked_body_is_400_at_once_and_closed,
                                               test_disconnects.py::test_a_client_that_leaves_mid_body_is_499
    Config.http, Config.http_protocol_class read per connection, after the lifespan has started
                                               test_framing.py::test_a_plain_uvicorn_start_gets_the_protections
    Server.run on the call stack of the lifespan (running_uvicorn: a frame whose `self` is the Server)
                                               test_framing.py::test_a_plain_uvicorn_start_gets_the_protections,
                                               test_descriptor_limit.py::test_the_server_start_lifts_the_limit
    Server.startup runs the lifespan before it binds the sockets (so the limit is up before the first accept)
                                               test_descriptor_limit.py::test_the_server_start_lifts_the_limit

Why not uvicorn's h11 protocol, which gets pipelining and a header limit right
by itself: measured with `make bench`, it costs a third to a half of the
do-nothing floor's throughput on this machine (see the README, Performance).
"""

import asyncio
import http
import json
import logging
import resource
import sys
import time
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import Server, ServerState

from app.service.middleware import CLIENT_GONE, REFUSED
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


def error_response(status: int, detail: str) -> bytes:
    """A complete JSON error response that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


LINGER_S = 10.0  # the longest a closing connection keeps reading what its client still sends (nginx: 30 s)
LINGER_IDLE_S = 2.0  # ... and the longest it waits for the next byte (nginx: 5 s)
LINGER_MAX_BYTES = 64 * 1024 * 1024  # ... and the most it reads: past it, the client is not about to stop


class _CycleTransport:
    """The transport as one request's cycle sees it.

    - `close` lingers while the client is still sending (`LimitedHttpToolsProtocol.close`);
    - the response head is held until the body's first write and goes out with it:
      one send() system call per small response instead of two (the head is flushed
      on its own when the body is large, and on completion or close in any case).
    """

    def __init__(self, protocol: "LimitedHttpToolsProtocol", cycle: RequestResponseCycle) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.cycle = cycle
        self.head_held: bytes | None = None
        self.head_seen = False

    def write(self, data: bytes) -> None:
        held = self.head_held
        if held is not None:
            self.head_held = None
            if len(data) <= JOIN_MAX_BYTES:
                self.transport.write(held + data)
                return
            self.transport.write(held)
        elif not self.head_seen and self.cycle.response_started and not self.cycle.response_complete:
            self.head_seen = True  # uvicorn writes the head the moment the response starts
            self.head_held = data
            self.protocol.holding = self
            return
        self.transport.write(data)

    def flush(self) -> None:
        if self.head_held is not None:
            held, self.head_held = self.head_held, None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.protocol.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing() or self.protocol.lingering

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


JOIN_MAX_BYTES = 64 * 1024  # a body up to this size is copied behind its head, to go out in one write


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
        self.in_body = False  # from the end of a request's head to the end of its body
        self.lingering = False  # answered and closing: reading only to discard (see close)
        self.linger_timer: asyncio.TimerHandle | None = None
        self.linger_deadline = 0.0
        self.linger_bytes = 0
        self.holding: _CycleTransport | None = None  # the cycle whose response head is held back, if any

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
        self._cancel_linger_timer()
        # uvicorn marks the cycle disconnected, then drops its answer without a word: tell the guard.
        for cycle in [self.cycle, *(cycle for cycle, _ in self.pipeline)]:
            if cycle is not None and not cycle.response_complete:
                cycle.scope[CLIENT_GONE] = True  # type: ignore[literal-required]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but a parse error is refused in turn, and an unfinished head is measured.
        if self.lingering:  # answered and closing: discard, and give the client a little longer
            self.linger_bytes += len(data)
            if self.linger_bytes > LINGER_MAX_BYTES:
                self.transport.close()
            else:
                self._arm_linger_timer()
            return
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
        self.in_body = True
        self._cancel_head_timer()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self.cycle.transport = _CycleTransport(self, self.cycle)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self.in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.holding is not None:  # a response without a body write (HEAD): its head goes now
            self.holding.flush()
            self.holding = None
        if self.lingering:  # the connection is closing: no keep-alive, no next request
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self.transport.is_closing() or self.pipeline or not self.cycle.response_complete:
            return  # the next pipelined request is being answered
        if self.refusal is not None:
            self.transport.write(self.refusal)
            self.close()
            return
        self._arm_head_timer()  # the next head, or the rest of a body answered early (413), is owed

    def refuse(self, status: int, detail: str) -> None:
        """Answer `status` and close: at once, or once the requests before it are answered."""
        self.logger.info("refused a request: %s", detail)
        self.refusal = error_response(status, detail)
        if self.in_body and self._refuse_body(status):
            return
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            self.flow.pause_reading()
            return
        self.transport.write(self.refusal)
        self.close()

    def _refuse_body(self, status: int) -> bool:
        """A parse error inside the body of the request being read: answer it now. False: not this case."""
        cycle: RequestResponseCycle = self.cycle
        if self.pipeline and self.pipeline[0][0] is cycle:
            # Its app has not started (earlier answers are owed first): it never will. Its answer is the
            # refusal, written once those before it are out (on_response_complete).
            self.pipeline.popleft()
            cycle.response_complete = True
            self.flow.pause_reading()
            return True
        if cycle.response_complete:  # answered early (413) and draining: the connection just ends
            return False
        answer, self.refusal = self.refusal, None
        cycle.scope[REFUSED] = status  # type: ignore[literal-required]
        cycle.disconnected = True  # the app's receive reports a disconnect; what it sends goes nowhere
        cycle.message_event.set()
        if not cycle.response_started and answer is not None:
            self.transport.write(answer)
        self.close()
        return True

    def close(self) -> None:
        """Close the connection; while the client is still sending its request, linger first (see the docstring)."""
        transport = self.transport
        if transport.is_closing() or self.lingering:
            return
        # Only a body is worth lingering for: a head over its limit (431) is refused so as to stop reading.
        if not self.in_body or not transport.can_write_eof():
            transport.close()
            return
        self.lingering = True
        self._cancel_head_timer()
        self.flow.resume_reading()  # reading may have been paused (a full body buffer, a refusal in turn)
        transport.write_eof()  # the answer goes out, then FIN: the client reads it, and may stop sending
        self.linger_deadline = self.loop.time() + LINGER_S
        self._arm_linger_timer()

    def eof_received(self) -> None:
        if self.lingering:  # the client is done: closing now loses nothing
            self.transport.close()

    def _arm_linger_timer(self) -> None:
        self._cancel_linger_timer()
        delay = min(LINGER_IDLE_S, self.linger_deadline - self.loop.time())
        self.linger_timer = self.loop.call_later(max(delay, 0), self.transport.close)

    def _cancel_linger_timer(self) -> None:
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None

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
        self.transport.close()  # no lingering: this client is not sending


def running_uvicorn() -> Server | None:
    """The uvicorn server whose lifespan is running, found up the call stack; None under anything else."""
    frame = sys._getframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Server):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def check_protocol() -> None:
    """At startup: lift the descriptor limit to the connection bound, and make uvicorn's `--http auto`
    this protocol, or warn in one line that the limits are off.

    uvicorn runs the lifespan before it binds its sockets, and builds each connection's
    protocol from `config.http_protocol_class` after that, so both are in place before
    the first connection.
    """
    server = running_uvicorn()
    if server is None:
        return  # an in-process client (the tests), or another server: its own protections apply
    raise_descriptor_limit(get_settings().max_connections)
    config = server.config
    protocol = getattr(config, "http_protocol_class", None)
    if isinstance(protocol, type) and issubclass(protocol, LimitedHttpToolsProtocol):
        return
    if config.http == "auto":
        config.http_protocol_class = LimitedHttpToolsProtocol
        log.info("HTTP protocol: app.service.protocol:LimitedHttpToolsProtocol (in place of uvicorn's auto choice)")
        return
    log.warning(
        "HTTP protocol %r lacks the service's limits (head size and deadline, framing, connection bound): "
        "serve with `make serve`, the Docker image or `mnist-codec serve`",
        config.http,
    )

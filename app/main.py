"""The FastAPI service, assembled: the routers, the lifespan that loads the models, the guard.

The routes: /encode and /decode (app.service.single), their batch forms (app.service.batch),
/models, /healthz and /readyz (app.service.info), /metrics, the demo page and /docs.

Run it with `uvicorn app.main:app --http app.service.protocol:LimitedHttpToolsProtocol` (the
Dockerfile's command; a plain `uvicorn app.main:app` gets that protocol too: see
app.service.protocol). The models are loaded once, in the lifespan, before the first
request; a checkpoint that cannot be loaded stops the process with one line. /encode and
/decode take `?model=NAME` or `?model=MODEL_ID` (see GET /models, and app.codec.codecs for how
names and versions resolve); without it they use the default.

Every HTTP request goes through the guard (app.service.middleware: limits, request id,
metrics, access log). A route declared as `async def f(request: Request, ...) -> Response`,
its other parameters the checks of app.service.checks, is then called directly
(app.service.direct); any other route takes FastAPI's own path.
"""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from app.codec.codecs import load_codecs, pick_device
from app.errors import StartupError
from app.service import batch, info, single
from app.service.direct import DirectRoutes
from app.service.docs import install_model_docs
from app.service.errors import install_error_handlers
from app.service.middleware import Guard, guard_kwargs
from app.service.observability import install_observability
from app.service.pages import install_pages
from app.service.protocol import check_protocol
from app.settings import Settings, get_settings

log = logging.getLogger("app")


def _configure_logging() -> None:
    """uvicorn configures only its own loggers; give ours a handler once."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class CodecAPI(FastAPI):
    """FastAPI behind the guard (app.service.middleware), with direct routes (app.service.direct),
    and a failed startup reported in one line instead of a traceback."""

    guard: Guard | None = None  # set by create_app, once the routes and the metrics are in place
    direct: DirectRoutes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.guard is not None:
            await self.guard(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            send = self._short_startup_failure(send)
        await super().__call__(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Inside the guard: a direct route's function, or FastAPI's whole path for every other route."""
        route = self.direct.find(scope)
        if route is None:
            await super().__call__(scope, receive, send)
        else:
            await self.direct.call(route, scope, receive, send)

    def _short_startup_failure(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error:
                message = {**message, "message": f"cannot start: {error}"}
            await send(message)

        return wrapped


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    check_protocol()  # under uvicorn: the descriptor limit lifted, and its HTTP protocol the limited one (or a warning)
    try:
        device = pick_device(settings.device)
        codecs = load_codecs(settings, device)
    except StartupError as exc:
        app.state.startup_error = str(exc)
        raise
    microbatching = settings.microbatching == "on" or (settings.microbatching == "auto" and device == "cuda")
    metrics = app.state.metrics
    for codec in codecs:
        if microbatching:
            observer = metrics.batch_observer(codec)
            codec.enable_microbatching(settings.microbatch_max_size, settings.microbatch_max_wait_us, observer)
        current = " (what the name means)" if codecs.means(codec) and len(codecs.versions[codec.name]) > 1 else ""
        log.info("serving model %s (%s) on %s%s", codec.model_id, codec.format.name, device, current)
    log.info(
        "default model %s (%s); micro-batching %s",
        codecs.default_name,
        codecs.default.model_id,
        "on" if microbatching else "off",
    )
    app.state.codecs = codecs
    app.state.codec = codecs.default
    # torch and the models leave ~200,000 long-lived objects; a full collection walks them all
    # (p99 latency spikes of 100+ ms). Freezing them keeps the collector to request garbage.
    gc.collect()
    gc.freeze()
    yield
    app.state.codec = app.state.codecs = None


def create_app(settings: Settings | None = None) -> CodecAPI:
    _configure_logging()
    app = CodecAPI(
        title="mnist-codec",
        summary="Compress 28x28 MNIST digits to 24 bytes with a learned autoencoder.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # app.service.pages serves /docs, with Swagger UI's files from the package
    )
    app.state.settings = settings = settings or get_settings()
    app.state.codec = app.state.codecs = None
    install_error_handlers(app)
    routers = (single.router, batch.router, info.router)  # /encode, /decode; their batch forms; the rest
    for router in routers:
        app.include_router(router)
    install_model_docs(app)  # /openapi.json names the served models, their effort levels, /decode's latent size
    install_pages(app)  # the demo page at /
    install_observability(app)  # app.state.metrics, GET /metrics
    # The guard: request id, Host and header limits, body limits and deadline, concurrency, metrics, access log.
    app.direct = DirectRoutes(app, routers)
    app.guard = Guard(app.dispatch, app.state.metrics, **guard_kwargs(settings))
    return app


app = create_app()

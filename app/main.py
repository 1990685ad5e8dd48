"""The FastAPI service: /encode, /decode, their batch forms, /models, /healthz, /readyz.

Run it with `uvicorn app.main:app --http app.service.protocol:LimitedHttpToolsProtocol` (the
Dockerfile's command; a plain `uvicorn app.main:app` gets that protocol too: see
app.service.protocol). The models are loaded once, in the lifespan, before the first
request; a checkpoint that cannot be loaded stops the process with one line. /encode and
/decode take `?model=NAME` or `?model=MODEL_ID` (see GET /models, and app.codec.codecs for how
names and versions resolve); without it they use the default.

Every HTTP request goes through the guard (app.service.middleware: limits, request id,
metrics, access log). A route declared as `async def f(request: Request) -> Response` is
then called directly (app.service.direct); any other route takes FastAPI's own path.
"""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.codec import imaging, latent
from app.codec.codecs import Codec, Codecs, load_codecs, pick_device
from app.errors import StartupError
from app.service.batch import router as batch_router
from app.service.direct import DirectRoutes
from app.service.docs import install_model_docs
from app.service.effort import EFFORT_PARAM, encode_digit, requested_effort
from app.service.http import (
    MODEL_ID_HEADER,
    MODEL_ID_PARAM,
    MODEL_PARAM,
    codec_for_latent,
    current_codec,
    error_responses,
    install_error_handlers,
    loaded_codecs,
    read_file_field,
)
from app.service.middleware import Guard, guard_kwargs
from app.service.observability import install_observability
from app.service.pages import install_pages
from app.service.protocol import check_protocol
from app.service.schemas import EffortInfo, Health, LatentFormatInfo, ModelInfo, ModelList, Ready
from app.settings import Settings, get_settings

log = logging.getLogger("app")

OCTET_STREAM = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}
LATENT_DOC = (
    f"{latent.LATENT_BYTES} bytes in the model's latent format (GET /models): "
    + "; ".join(
        f'{fmt.name}, {fmt.description} (numpy.fromfile(path, dtype="{fmt.symbol_dtype.str}"))'
        for fmt in latent.FORMATS.values()
    )
    + f"; {latent.ArithmeticCodedFormat.name}, {latent.ArithmeticCodedFormat.description}"
)


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
    check_protocol()  # under uvicorn: its HTTP protocol is the limited one, or a warning says it is not
    try:
        device = pick_device(settings.device)
        codecs = load_codecs(settings, device)
    except StartupError as exc:
        app.state.startup_error = str(exc)
        raise
    batching = settings.batching == "on" or (settings.batching == "auto" and device == "cuda")
    metrics = app.state.metrics
    for codec in codecs:
        if batching:
            codec.enable_batching(settings.batch_max_size, settings.batch_max_wait_us, metrics.batch_observer(codec))
        current = " (what the name means)" if codecs.means(codec) and len(codecs.versions[codec.name]) > 1 else ""
        log.info("serving model %s (%s) on %s%s", codec.model_id, codec.format.name, device, current)
    log.info(
        "default model %s (%s); micro-batching %s",
        codecs.default_name,
        codecs.default.model_id,
        "on" if batching else "off",
    )
    app.state.codecs = codecs
    app.state.codec = codecs.default
    # torch and the models leave ~200,000 long-lived objects; a full collection walks them all
    # (p99 latency spikes of 100+ ms). Freezing them keeps the collector to request garbage.
    gc.collect()
    gc.freeze()
    yield
    app.state.codec = app.state.codecs = None


def _describe(codec: Codec, codecs: Codecs) -> ModelInfo:
    test = codec.metadata.get("test", {})
    fmt = codec.format
    return ModelInfo(
        name=codec.name,
        id=codec.model_id,
        trained_at=codec.trained_at,
        current=codecs.means(codec),
        default=codec is codecs.default,
        device=str(codec.device),
        latent_format=LatentFormatInfo(
            name=fmt.name,
            bytes=fmt.nbytes,
            dtype=None if fmt.wire_dtype is None else fmt.wire_dtype.str,
            dims=fmt.dims,
            coded=fmt.wire_dtype is None,
            symbol_dtype=fmt.symbol_dtype.str,
        ),
        test_psnr_db=test.get("served_psnr_mean_db"),
        test_metrics={k: float(v) for k, v in test.items() if isinstance(v, int | float)},
        efforts=[
            EffortInfo(level=e.level, psnr_db=e.psnr_db, us_per_digit=e.us_per_digit, cost=e.cost)
            for e in codec.efforts
        ],
        default_effort=codec.default_effort,
    )


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

    @app.post(
        "/encode",
        summary="A 28x28 PNG to its 24-byte latent",
        response_class=Response,
        responses={
            200: {
                "description": LATENT_DOC + ". Header X-Model-Id names the weights.",
                "content": {OCTET_STREAM: {"schema": BINARY}},
                "headers": {"X-Model-Id": MODEL_ID_HEADER},
            },
            **error_responses(400, 404, 408, 413, 415, 422, 431, 503),
        },
        openapi_extra={
            "parameters": [MODEL_PARAM, EFFORT_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["img"], "properties": {"img": BINARY}},
                        "encoding": {"img": {"contentType": "image/png"}},
                    }
                },
            },
        },
    )
    async def encode(request: Request) -> Response:
        codec = current_codec(request)  # first, as on every endpoint: an unknown model is a 404 whatever the body
        effort = requested_effort(request, codec)  # then the effort (422), still before the body
        png = await read_file_field(request, "img", "a 28x28 PNG")
        body = await encode_digit(request, codec, imaging.read_digit(png), effort)
        return Response(body, media_type=OCTET_STREAM, headers={"X-Model-Id": codec.model_id})

    @app.post(
        "/decode",
        summary="A 24-byte latent to its 28x28 PNG",
        response_class=Response,
        responses={
            200: {
                "description": "28x28 8-bit grayscale PNG.",
                "content": {"image/png": {"schema": BINARY}},
                "headers": {"X-Model-Id": MODEL_ID_HEADER},
            },
            **error_responses(400, 404, 408, 409, 413, 422, 431, 503),
        },
        openapi_extra={
            "parameters": [MODEL_PARAM, MODEL_ID_PARAM],
            "requestBody": {
                "required": True,
                "description": LATENT_DOC + ", as the raw body or as the file field 'latent' of a multipart form.",
                "content": {
                    OCTET_STREAM: {"schema": BINARY},
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["latent"], "properties": {"latent": BINARY}},
                        "encoding": {"latent": {"contentType": OCTET_STREAM}},
                    },
                },
            },
        },
    )
    async def decode(request: Request) -> Response:
        codec = codec_for_latent(request)  # first: 404 for an unknown model, 409 for a foreign id, whatever the body
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data = await read_file_field(request, "latent", LATENT_DOC)
        else:  # any other type is the raw latent (curl --data-binary sends form-urlencoded)
            data = await request.body()
        png = await codec.decode_one(data)
        return Response(png, media_type="image/png", headers={"X-Model-Id": codec.model_id})

    app.include_router(batch_router)

    @app.get("/models", summary="The models this server holds, every version", responses=error_responses(503))
    async def models(request: Request) -> ModelList:
        codecs: Codecs = loaded_codecs(request)
        return ModelList(
            default=codecs.default_name,
            default_id=codecs.default.model_id,
            names={name: codec.model_id for name, codec in codecs.by_name.items()},
            models=[_describe(c, codecs) for c in codecs],
            max_search_work=request.app.state.settings.max_search_work,
        )

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", summary="The model is loaded and requests are served", responses=error_responses(503))
    async def readyz(request: Request) -> Ready:
        codec = loaded_codecs(request).default
        return Ready(status="ready", model_id=codec.model_id, device=str(codec.device))

    install_model_docs(app)  # /openapi.json names the served models, their effort levels, /decode's latent size
    install_pages(app)  # the demo page at /
    install_observability(app)  # app.state.metrics, GET /metrics
    # The guard: request id, Host and header limits, body limits and deadline, concurrency, metrics, access log.
    app.direct = DirectRoutes(app)
    app.guard = Guard(app.dispatch, app.state.metrics, **guard_kwargs(settings))
    return app


app = create_app()

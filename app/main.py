"""The FastAPI service: /encode, /decode, /models, /healthz, /readyz.

Run it with `uvicorn app.main:app --host 0.0.0.0 --port 8000` (the Dockerfile's
command). The model is loaded once, in the lifespan, before the first request;
a checkpoint that cannot be loaded stops the process with one line.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app import imaging, latent
from app.batch import router as batch_router
from app.codec import Codec, pick_device
from app.errors import ModelMismatchError, StartupError
from app.http import current_codec, error_responses, install_error_handlers, read_file_field
from app.middleware import BodySizeLimit, CatchUnexpected, ConcurrencyLimit
from app.model import load_checkpoint
from app.observability import install_observability
from app.pages import install_pages
from app.schemas import Health, LatentFormatInfo, ModelInfo, ModelList, Ready
from app.settings import Settings, get_settings

log = logging.getLogger("app")

OCTET_STREAM = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}
LATENT_DOC = (
    f"{latent.LATENT_BYTES} bytes: {latent.LATENT_DIMS} little-endian float32 values "
    '(numpy.fromfile(path, dtype="<f4"))'
)


def _configure_logging() -> None:
    """uvicorn configures only its own loggers; give ours a handler once."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class CodecAPI(FastAPI):
    """FastAPI, with a failed startup reported in one line instead of a traceback."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            send = self._short_startup_failure(send)
        await super().__call__(scope, receive, send)

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
    try:
        device = pick_device(settings.device)
        codec = Codec(load_checkpoint(settings.weights, device), device)
    except StartupError as exc:
        app.state.startup_error = str(exc)
        raise
    batching = settings.batching == "on" or (settings.batching == "auto" and device.type == "cuda")
    if batching:
        metrics = app.state.metrics
        codec.enable_batching(
            settings.batch_max_size,
            settings.batch_max_wait_us,
            lambda endpoint, size: metrics.batch_size.labels(endpoint=endpoint).observe(size),
        )
    app.state.codec = codec
    log.info("serving model %s on %s, micro-batching %s", codec.model_id, device, "on" if batching else "off")
    yield
    app.state.codec = None


def _check_model_id(request: Request, codec: Codec) -> None:
    """A client may say which weights made its latent; other weights would decode garbage."""
    claimed = request.headers.get("x-model-id")
    if claimed is not None and claimed != codec.model_id:
        raise ModelMismatchError(f"the latent was made by model {claimed!r}; this server has {codec.model_id!r}")


def _describe(codec: Codec) -> ModelInfo:
    test = codec.metadata.get("test", {})
    return ModelInfo(
        name=codec.name,
        id=codec.model_id,
        default=True,
        device=str(codec.device),
        latent_format=LatentFormatInfo(
            name=latent.FORMAT_NAME, bytes=latent.LATENT_BYTES, dtype=latent.DTYPE.str, dims=latent.LATENT_DIMS
        ),
        test_metrics={k: float(v) for k, v in test.items() if isinstance(v, int | float)},
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    _configure_logging()
    app = CodecAPI(
        title="mnist-codec",
        summary="Compress 28x28 MNIST digits to 24 bytes with a learned autoencoder.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings = settings or get_settings()
    app.state.codec = None
    # add_middleware wraps: the last added runs first.
    batch_limits = {path: settings.max_batch_bytes for path in ("/encode/batch", "/decode/batch")}
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, per_path=batch_limits)
    app.add_middleware(CatchUnexpected)
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrency)
    install_error_handlers(app)

    @app.post(
        "/encode",
        summary="A 28x28 PNG to its 24-byte latent",
        response_class=Response,
        responses={
            200: {
                "description": LATENT_DOC + ". Header X-Model-Id names the weights.",
                "content": {OCTET_STREAM: {"schema": BINARY}},
            },
            **error_responses(400, 413, 415, 422, 503),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["img"], "properties": {"img": BINARY}},
                        "encoding": {"img": {"contentType": "image/png"}},
                    }
                },
            }
        },
    )
    async def encode(request: Request) -> Response:
        png = await read_file_field(request, "img", "a 28x28 PNG")
        codec = current_codec(request)
        body = await codec.encode_one(imaging.read_digit(png))
        return Response(body, media_type=OCTET_STREAM, headers={"X-Model-Id": codec.model_id})

    @app.post(
        "/decode",
        summary="A 24-byte latent to its 28x28 PNG",
        response_class=Response,
        responses={
            200: {"description": "28x28 8-bit grayscale PNG.", "content": {"image/png": {"schema": BINARY}}},
            **error_responses(400, 409, 413, 422, 503),
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "X-Model-Id",
                    "in": "header",
                    "required": False,
                    "description": "The id /encode returned with this latent; other weights answer 409.",
                    "schema": {"type": "string"},
                }
            ],
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
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data = await read_file_field(request, "latent", LATENT_DOC)
        else:  # any other type is the raw latent (curl --data-binary sends form-urlencoded)
            data = await request.body()
        codec = current_codec(request)
        _check_model_id(request, codec)
        png = await codec.decode_one(data)
        return Response(png, media_type="image/png", headers={"X-Model-Id": codec.model_id})

    app.include_router(batch_router)

    @app.get("/models", summary="The models this server holds", responses=error_responses(503))
    async def models(request: Request) -> ModelList:
        codec = current_codec(request)
        return ModelList(default=codec.name, models=[_describe(codec)])

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", summary="The model is loaded and requests are served", responses=error_responses(503))
    async def readyz(request: Request) -> Ready:
        codec = current_codec(request)
        return Ready(status="ready", model_id=codec.model_id, device=str(codec.device))

    install_pages(app)  # the demo page at /
    install_observability(app)  # last: its middleware is the outermost; X-Request-Id, GET /metrics
    return app


app = create_app()

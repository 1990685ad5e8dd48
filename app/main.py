"""The FastAPI service: /encode, /decode, /models, /healthz, /readyz.

Run it with `uvicorn app.main:app --host 0.0.0.0 --port 8000` (the Dockerfile's
command). The models are loaded once, in the lifespan, before the first request;
a checkpoint that cannot be loaded stops the process with one line. /encode and
/decode take `?model=NAME` (see GET /models); without it they use the default.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from app import imaging, latent
from app.codec import Codec, Codecs, load_codecs, pick_device
from app.errors import StartupError
from app.http import BodySizeLimit, install_error_handlers, read_file_field
from app.schemas import LatentFormatInfo, ModelInfo, ModelList
from app.settings import Settings, get_settings

log = logging.getLogger("app")

OCTET_STREAM = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}
ERROR_BODY = {
    "application/json": {
        "schema": {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
    }
}
LATENT_DOC = f"{latent.LATENT_BYTES} bytes in the model's latent format (GET /models): " + "; ".join(
    f'{fmt.name}, {fmt.description} (numpy.fromfile(path, dtype="{fmt.dtype.str}"))' for fmt in latent.FORMATS.values()
)


MODEL_PARAM = {
    "name": "model",
    "in": "query",
    "required": False,
    "description": "Name of the model to use (GET /models lists them); the default model when absent.",
    "schema": {"type": "string"},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": "Error; `detail` says what was wrong.", "content": ERROR_BODY} for code in codes}


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
        app.state.codecs = load_codecs(settings, device)
    except StartupError as exc:
        app.state.startup_error = str(exc)
        raise
    app.state.codec = app.state.codecs.default
    for codec in app.state.codecs:
        log.info("serving model %s (%s) on %s", codec.model_id, codec.format.name, device)
    yield
    app.state.codec = app.state.codecs = None


def _codec(request: Request) -> Codec:
    """The model the request names with ?model=NAME, else the default; 404 for an unknown name."""
    codecs: Codecs | None = request.app.state.codecs
    if codecs is None:  # only reachable when the lifespan has not run
        raise HTTPException(503, "model not loaded")
    return codecs.get(request.query_params.get("model"))


def _describe(codec: Codec, default: bool) -> ModelInfo:
    test = codec.metadata.get("test", {})
    fmt = codec.format
    return ModelInfo(
        name=codec.name,
        id=codec.model_id,
        default=default,
        device=str(codec.device),
        latent_format=LatentFormatInfo(name=fmt.name, bytes=fmt.nbytes, dtype=fmt.dtype.str, dims=fmt.dims),
        test_psnr_db=test.get("served_psnr_mean_db"),
        test_metrics={k: float(v) for k, v in test.items() if isinstance(v, int | float)},
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    app = CodecAPI(
        title="mnist-codec",
        summary="Compress 28x28 MNIST digits to 24 bytes with a learned autoencoder.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.state.codec = app.state.codecs = None
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_upload_bytes)
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
            **_errors(400, 404, 413, 415, 422),
        },
        openapi_extra={
            "parameters": [MODEL_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["img"], "properties": {"img": BINARY}},
                    }
                },
            },
        },
    )
    async def encode(request: Request) -> Response:
        png = await read_file_field(request, "img", "a 28x28 PNG")
        codec = _codec(request)
        body = codec.encode(imaging.read_digit(png))
        return Response(body, media_type=OCTET_STREAM, headers={"X-Model-Id": codec.model_id})

    @app.post(
        "/decode",
        summary="A 24-byte latent to its 28x28 PNG",
        response_class=Response,
        responses={
            200: {"description": "28x28 8-bit grayscale PNG.", "content": {"image/png": {"schema": BINARY}}},
            **_errors(400, 404, 413, 422),
        },
        openapi_extra={
            "parameters": [MODEL_PARAM],
            "requestBody": {
                "required": True,
                "description": LATENT_DOC + ", as the raw body or as the file field 'latent' of a multipart form.",
                "content": {
                    OCTET_STREAM: {"schema": BINARY},
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["latent"], "properties": {"latent": BINARY}},
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
        codec = _codec(request)
        return Response(codec.decode(data), media_type="image/png", headers={"X-Model-Id": codec.model_id})

    @app.get("/models", summary="The models this server holds", responses=_errors(503))
    async def models(request: Request) -> ModelList:
        codecs: Codecs | None = request.app.state.codecs
        if codecs is None:
            raise HTTPException(503, "model not loaded")
        return ModelList(
            default=codecs.default_name, models=[_describe(c, c.name == codecs.default_name) for c in codecs]
        )

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The model is loaded and requests are served",
        responses={503: {"description": "Not ready yet.", "content": ERROR_BODY}},
    )
    async def readyz(request: Request) -> JSONResponse:
        codec: Codec | None = request.app.state.codec
        if codec is None:
            return JSONResponse({"detail": "model not loaded"}, status_code=503)
        return JSONResponse({"status": "ready", "model_id": codec.model_id, "device": str(codec.device)})

    return app


app = create_app()

"""The FastAPI service: /encode, /decode, /healthz, /readyz.

Run it with `uvicorn app.main:app --host 0.0.0.0 --port 8000` (the Dockerfile's
command). The model is loaded once, in the lifespan, before the first request;
a checkpoint that cannot be loaded stops the process with one line.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from app import imaging, latent
from app.codec import Codec, pick_device
from app.errors import StartupError
from app.http import BodySizeLimit, install_error_handlers, read_file_field
from app.model import load_checkpoint
from app.observability import install_observability
from app.pages import install_pages
from app.settings import Settings, get_settings

log = logging.getLogger("app")

OCTET_STREAM = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}
ERROR_BODY = {
    "application/json": {
        "schema": {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
    }
}
LATENT_DOC = (
    f"{latent.LATENT_BYTES} bytes: {latent.LATENT_DIMS} little-endian float32 values "
    '(numpy.fromfile(path, dtype="<f4"))'
)


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
        app.state.codec = Codec(load_checkpoint(settings.weights, device), device)
    except StartupError as exc:
        app.state.startup_error = str(exc)
        raise
    log.info("serving model %s on %s", app.state.codec.model_id, device)
    yield
    app.state.codec = None


def _codec(request: Request) -> Codec:
    codec: Codec | None = request.app.state.codec
    if codec is None:  # only reachable when the lifespan has not run
        raise HTTPException(503, "model not loaded")
    return codec


def create_app(settings: Settings | None = None) -> FastAPI:
    app = CodecAPI(
        title="mnist-codec",
        summary="Compress 28x28 MNIST digits to 24 bytes with a learned autoencoder.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.state.codec = None
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
            **_errors(400, 413, 415, 422),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["img"], "properties": {"img": BINARY}},
                    }
                },
            }
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
            **_errors(400, 413, 422),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": LATENT_DOC + ", as the raw body or as the file field 'latent' of a multipart form.",
                "content": {
                    OCTET_STREAM: {"schema": BINARY},
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["latent"], "properties": {"latent": BINARY}},
                    },
                },
            }
        },
    )
    async def decode(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data = await read_file_field(request, "latent", LATENT_DOC)
        else:  # any other type is the raw latent (curl --data-binary sends form-urlencoded)
            data = await request.body()
        codec = _codec(request)
        return Response(codec.decode(data), media_type="image/png", headers={"X-Model-Id": codec.model_id})

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

    install_pages(app)  # the demo page at /
    install_observability(app)  # last: its middleware is the outermost; X-Request-Id, GET /metrics
    return app


app = create_app()

"""The HTTP edge: reading request bodies and answering errors as JSON.

This is the one place that maps the domain errors of `app.errors` to status
codes. Every error body is JSON `{"detail": "<what was wrong>"}`.
"""

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from app.codec.codecs import Codec, Codecs
from app.errors import (
    CodecError,
    ImageError,
    ImageSizeError,
    LatentError,
    ModelMismatchError,
    NotPNGError,
    RequestFormatError,
    UnknownModelError,
)
from app.service import multipart
from app.service.schemas import ErrorBody

log = logging.getLogger("app")

ERROR_DESCRIPTIONS = {
    400: "Empty, corrupt or truncated upload, or a malformed multipart body.",
    404: "?model= names no model (nor model id) this server holds; the detail lists the known ones.",
    408: "The request body did not arrive within the body deadline; the connection is closed.",
    409: "X-Model-Id (or a container's id) names weights this server does not hold, or not a version of ?model=; "
    "or latents without an id decoded by a model name that has several versions here (send the id).",
    413: "Request body over the upload limit; when encoding, also more search work (digits x the effort's cost) "
    "than the server's max_search_work.",
    415: "An image, but not a PNG.",
    422: "Wrong size, wrong length, non-finite values, an effort out of the model's range, or a malformed request.",
    431: "Too many header fields, or too many header bytes.",
    503: "Model not loaded yet, or over capacity (see Retry-After).",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# Most specific first: the first match decides.
STATUS_BY_ERROR: list[tuple[type[CodecError], int]] = [
    (ModelMismatchError, 409),
    (NotPNGError, 415),
    (ImageSizeError, 422),
    (ImageError, 400),
    (LatentError, 422),
    (RequestFormatError, 422),
    (UnknownModelError, 404),
    (CodecError, 400),
]


def status_for(exc: CodecError) -> int:
    return next(status for kind, status in STATUS_BY_ERROR if isinstance(exc, kind))


def install_error_handlers(app: FastAPI) -> None:
    async def codec_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CodecError)
        return JSONResponse({"detail": str(exc)}, status_code=status_for(exc))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's last-resort layer answers with this, then re-raises: the guard logs the traceback once.
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.add_exception_handler(CodecError, codec_error)
    app.add_exception_handler(Exception, internal_error)


MODEL_ID_HEADER = {
    "description": "Id of the weights that made (or decoded) the latents: the model's name and the first 12 hex "
    "digits of the weights' SHA-256. Store it with the latents; send it back as the X-Model-Id request header.",
    "schema": {"type": "string"},
}

MODEL_ID_PARAM = {
    "name": "X-Model-Id",
    "in": "header",
    "required": False,
    "description": (
        "The id /encode returned with this latent: picks that version (even when ?model= names its model and "
        "another version is the default), or 409 when this server has no such weights (or ?model names others). "
        "Required for a model name with several versions (e.g. ec64): bare bytes do not say which one made them."
    ),
    "schema": {"type": "string"},
}

MODEL_PARAM = {
    "name": "model",
    "in": "query",
    "required": False,
    "description": "Name of the model to use (its newest or pinned version), or a model id for one version "
    "(GET /models lists them); the default model when absent.",
    "schema": {"type": "string"},
}


def loaded_codecs(request: Request) -> Codecs:
    codecs: Codecs | None = request.app.state.codecs
    if codecs is None:  # only reachable when the lifespan has not run
        raise HTTPException(503, "model not loaded")
    return codecs


def current_codec(request: Request) -> Codec:
    """The version ?model= (a name or a model id) means, else the default model's; 404 for an unknown one."""
    return loaded_codecs(request).get(request.query_params.get("model"))


def codec_for_latent(request: Request, stored: str | None = None) -> Codec:
    """For decoding: the version ?model= means, or the one the X-Model-Id header names (or `stored`, the id a
    latent container holds); `Codecs.resolve` says which, or why none (404, 409)."""
    claimed = request.headers.get("x-model-id")
    if stored is not None and claimed is not None and claimed != stored:
        raise ModelMismatchError(
            f"X-Model-Id says {claimed[:60]!r} but the container says its latents were made by {stored!r}"
        )
    return loaded_codecs(request).resolve(request.query_params.get("model"), stored or claimed)


async def read_file_field(request: Request, field: str, what: str) -> bytes:
    """The bytes of the one file part named `field` of a multipart/form-data body.

    A part counts as a file when it has a filename, or, without one, a Content-Type other
    than text, or bytes that are not UTF-8 text (`multipart.counts_as_file`): what httpx
    and the generated clients send for `File(payload=...)` with no file name.
    """
    content_type = request.headers.get("content-type", "")
    example = f"curl -F {field}=@FILE"
    if not content_type.startswith("multipart/form-data"):
        received = content_type or "no Content-Type"
        raise RequestFormatError(
            f"expected multipart/form-data with a file field '{field}' holding {what} ({example}); received {received}"
        )
    body = await request.body()
    single = multipart.one_file_part(body, content_type, field)
    if single is not None:
        return single
    try:
        form = multipart.parse(body, content_type, max_files=8, max_fields=8)
    except multipart.MultipartError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from exc
    parts = [part for part in form if part.name == field]
    if not parts:
        names = ", ".join(dict.fromkeys(repr(part.name) for part in form)) or "none"
        raise RequestFormatError(f"missing file field '{field}' holding {what} ({example}); fields received: {names}")
    if len(parts) > 1:
        raise RequestFormatError(f"expected one '{field}' field, received {len(parts)}")
    part = parts[0]
    if not multipart.counts_as_file(part.filename, part.content_type, part.data):
        raise RequestFormatError(
            f"field '{field}' must be a file upload ({example}), not a text field: this part has no filename, "
            "no Content-Type and text for bytes; give it a filename or a Content-Type such as "
            f"{'image/png' if field == 'img' else 'application/octet-stream'}"
        )
    return bytes(part.data)

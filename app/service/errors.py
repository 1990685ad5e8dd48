"""The one place that maps the domain errors of `app.errors` to HTTP status codes.

Every error body is JSON `{"detail": "<what was wrong>"}`; anything that is not a domain
error (nor an HTTPException) is a 500 that says nothing of the internals.
"""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.errors import (
    BodyFormatError,
    CodecError,
    ImageError,
    ImageSizeError,
    LatentError,
    ModelMismatchError,
    NotPNGError,
    RequestFormatError,
    UnknownModelError,
)

# Most specific first: the first match decides.
STATUS_BY_ERROR: list[tuple[type[CodecError], int]] = [
    (ModelMismatchError, 409),
    (NotPNGError, 415),
    (ImageSizeError, 422),
    (ImageError, 400),
    (LatentError, 422),
    (RequestFormatError, 422),
    (BodyFormatError, 400),
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

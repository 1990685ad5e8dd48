"""The HTTP edge: reading request bodies, the upload limit, and errors as JSON.

This is the one place that maps the domain errors of `app.errors` to status
codes. Every error body is JSON `{"detail": "<what was wrong>"}`.
"""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    BodyTooLargeError,
    CodecError,
    ImageError,
    ImageSizeError,
    LatentError,
    NotPNGError,
    RequestFormatError,
    UnknownModelError,
)

# Most specific first: the first match decides.
STATUS_BY_ERROR: list[tuple[type[CodecError], int]] = [
    (BodyTooLargeError, 413),
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

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response, and the server logs the
        # traceback once; the client learns nothing about our internals.
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.add_exception_handler(CodecError, codec_error)
    app.add_exception_handler(Exception, unexpected_error)


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, without reading the rest.

    A declared Content-Length over the limit fails on the first read; a chunked
    body fails as soon as the running count passes it. The error is raised
    from `receive`, inside the handler, so the usual JSON error handler answers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_bytes:
                raise self._too_large(f"{declared} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"more than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, size: str) -> BodyTooLargeError:
        return BodyTooLargeError(f"request body of {size} is over the limit of {self.max_bytes} bytes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_file_field(request: Request, field: str, what: str) -> bytes:
    """The bytes of the one file part named `field` of a multipart/form-data body."""
    content_type = request.headers.get("content-type", "")
    example = f"curl -F {field}=@FILE"
    if not content_type.startswith("multipart/form-data"):
        received = content_type or "no Content-Type"
        raise RequestFormatError(
            f"expected multipart/form-data with a file field '{field}' holding {what} ({example}); received {received}"
        )
    async with request.form(max_files=8, max_fields=8) as form:
        parts = form.getlist(field)
        if not parts:
            names = ", ".join(repr(name) for name in form) or "none"
            raise RequestFormatError(
                f"missing file field '{field}' holding {what} ({example}); fields received: {names}"
            )
        if len(parts) > 1:
            raise RequestFormatError(f"expected one '{field}' field, received {len(parts)}")
        part = parts[0]
        if not isinstance(part, UploadFile):
            raise RequestFormatError(f"field '{field}' must be a file upload ({example}), not a text field")
        return await part.read()

"""Batch endpoints, for clients that store many latents: /encode/batch and /decode/batch.

    POST /encode/batch   application/x-npy uint8 (N, 28, 28)  -> N x 24 latent bytes
                         or multipart, N file fields "img"     -> N x 24 latent bytes
    POST /decode/batch   N x 24 latent bytes                   -> application/x-npy uint8 (N, 28, 28)
                         or a latent container (app.codec.container) -> application/x-npy uint8 (N, 28, 28)

Both take ?model=NAME like the single endpoints, and check it first (404), as they do
(app.service.checks).
/encode/batch takes ?effort=N too (app.service.effort), every digit searched at that level.
/encode/batch answers with a latent container (model id, format, count, the latents,
and the multipart file names) instead of the raw N x 24 bytes when the request's
Accept header names its media type, application/x-mnist-latents; raw stays the default.
/decode/batch takes a container (Content-Type application/x-mnist-latents) and decodes
it with the model whose id it holds, as it would for an X-Model-Id header.

Item i of the answer is byte for byte what /encode or /decode gives for item i
alone. Errors name the index of the first bad item. The item count is checked
from the body's length (or a container's or .npy header) before anything is
unpacked; every per-item step (unpacking, coding, PNG reading, .npy and container
reading and writing, multipart parsing) runs in a worker thread unless the batch
is one small item, so the event loop, and /healthz with it, keeps answering.
"""

import asyncio
import io
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Request, Response

from app.codec import container, imaging
from app.codec.codecs import Codec
from app.errors import CodecError, LatentError, RequestFormatError
from app.service import multipart
from app.service.checks import BatchDecodeChecks, EncodeChecks, codec_for_latent, sends_container
from app.service.effort import EFFORT_PARAM, check_search_work, search_limiter
from app.service.observability import observe_batch
from app.service.openapi import (
    BINARY,
    CONTAINER,
    FORM,
    MODEL_ID_HEADER,
    MODEL_ID_PARAM,
    MODEL_PARAM,
    NPY,
    OCTET_STREAM,
    PNG,
    error_responses,
)

# A batch job runs on the event loop only when it is this small, so that no request holds the loop
# for more than about 1 ms (LOOP_BUDGET_MS); anything larger goes to a worker thread. Measured by
# `python -m bench.inline` (README, "What runs where"): one ec64 item of noise costs 0.74 ms to encode,
# two 1.8 ms; 64 KiB of multipart body about 0.2 ms. A thread hop costs 0.06 to 0.12 ms of latency.
LOOP_BUDGET_MS = 1.0
INLINE_MAX = 1  # items
INLINE_MAX_BYTES = 64 * 1024  # of request body
T = TypeVar("T")

router = APIRouter()


def _settings_limit(request: Request) -> int:
    return int(request.app.state.settings.max_batch_items)


def _read_container(body: bytes) -> tuple[container.Container, bytes]:
    stored = container.read_container(body)
    return stored, b"".join(stored.latents)


def _check_count(count: int, limit: int, what: str) -> None:
    if count == 0:
        raise RequestFormatError(f"the batch is empty; send at least one {what}")
    if count > limit:
        raise RequestFormatError(f"at most {limit} {what}s per batch; received {count}")


def npy_rows(body: bytes) -> int | None:
    """The row count a .npy body's header declares, read from the header alone; None when it has none."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape = read_header[version](stream)[0]
    except Exception:  # not a .npy, or a version read elsewhere: np.load says what is wrong
        return None
    return int(shape[0]) if shape else None


def read_npy_digits(body: bytes, limit: int) -> np.ndarray:
    """A .npy body as a (N, 28, 28) uint8 array; never unpickles anything."""
    rows = npy_rows(body)
    if rows is not None and rows > limit:  # before reading any of it
        _check_count(rows, limit, "digit")
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds for a bad file
        raise RequestFormatError(f"the body is not a readable .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape[1:] != (28, 28):
        shape = getattr(array, "shape", "?")
        dtype = getattr(array, "dtype", "?")
        raise RequestFormatError(f"expected a uint8 array of shape (N, 28, 28); received {dtype} {shape}")
    _check_count(len(array), limit, "digit")
    return array


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_png_fields(body: bytes, content_type: str, limit: int) -> tuple[list[str], np.ndarray]:
    """The file names and digits of a multipart body's "img" parts, in order (a worker thread's job)."""
    example = "curl -F img=@FILE1 -F img=@FILE2"
    images = multipart.file_parts(body, content_type, "img", "a 28x28 PNG", example, max_files=limit + 1)
    if len(images) > limit:
        raise RequestFormatError(f"at most {limit} 'img' parts per request; received more")
    for index, part in enumerate(images):
        if part.filename is None:
            raise RequestFormatError(f"item {index}: field 'img' must be a file upload, not a text field")
    return [part.filename or "" for part in images], _read_pngs([bytes(part.data) for part in images])


def _read_pngs(pngs: list[bytes]) -> np.ndarray:
    digits = np.empty((len(pngs), imaging.SIDE, imaging.SIDE), dtype=np.uint8)
    for index, png in enumerate(pngs):
        try:
            digits[index] = imaging.read_digit(png)
        except CodecError as exc:  # same kind of error, so the same status, naming the item
            raise type(exc)(f"item {index}: {exc}") from exc
    return digits


async def off_loop(request: Request, function: Callable[[], T], items: int, nbytes: int) -> T:
    """`function()`, on the event loop when the batch is small enough, else in a worker thread.

    Small: at most INLINE_MAX items and INLINE_MAX_BYTES of body, so the loop is held for at most
    about LOOP_BUDGET_MS. Large: in a worker thread, at most `batch_workers` of them at once.
    """
    if items <= INLINE_MAX and nbytes <= INLINE_MAX_BYTES:
        return function()
    return await to_thread.run_sync(function, limiter=_batch_workers(request))


def _batch_workers(request: Request) -> CapacityLimiter:
    """The app's limiter of batch jobs at once (`batch_workers`), one per event loop: a limiter is its loop's.

    Each job holds the GIL for its Python parts (the ec64 coder), and the loop takes its turn
    behind every running one: with anyio's default of 40 threads, 8 concurrent ec64 batches held
    /healthz up to 201 ms, with 2 workers 130 ms, with one 45 ms (README, "What runs where").
    """
    state = request.app.state
    by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] | None
    by_loop = getattr(state, "batch_workers", None)
    if by_loop is None:
        by_loop = state.batch_workers = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    if loop not in by_loop:
        by_loop[loop] = CapacityLimiter(state.settings.batch_workers)
    return by_loop[loop]


@router.post(
    "/encode/batch",
    summary="Many 28x28 digits to their latents, end to end",
    response_class=Response,
    responses={
        200: {
            "description": "N x 24 bytes, item i for input i; or, when Accept names "
            f"{CONTAINER}, a latent container holding them (see the README).",
            "content": {OCTET_STREAM: {"schema": BINARY}, CONTAINER: {"schema": BINARY}},
            "headers": {"X-Model-Id": MODEL_ID_HEADER},
        },
        **error_responses(400, 404, 408, 413, 415, 422, 431, 503),
    },
    openapi_extra={
        "parameters": [MODEL_PARAM, EFFORT_PARAM],
        "requestBody": {
            "required": True,
            "content": {
                NPY: {"schema": BINARY},
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["img"],
                        "properties": {"img": {"type": "array", "items": BINARY}},
                    },
                    "encoding": {"img": {"contentType": PNG}},
                },
            },
        },
    },
)
async def encode_batch(request: Request, checked: EncodeChecks) -> Response:
    codec, effort = checked.codec, checked.effort
    limit = _settings_limit(request)
    content_type = request.headers.get("content-type", "")
    boxed = wants_container(request)
    body = await request.body()
    if content_type.startswith(FORM):
        # Parts are known only once parsed; on a small body, count the delimiter lines (a C scan) instead.
        items = body.count(b"\r\n--") if len(body) <= INLINE_MAX_BYTES else len(body)

        def read() -> tuple[list[str] | None, np.ndarray]:
            return read_png_fields(body, content_type, limit)
    else:
        items = npy_rows(body) or 0
        if effort.level:  # the bound on search work (413), before any digit is read
            check_search_work(request, codec, items, effort)

        def read() -> tuple[list[str] | None, np.ndarray]:
            return None, read_npy_digits(body, limit)

    def encode() -> tuple[int, bytes]:
        names, digits = read()
        check_search_work(request, codec, len(digits), effort)  # multipart: counted only once parsed
        latents = codec.encode_many(digits, effort.level)
        return len(digits), container_bytes(codec, latents, names) if boxed else latents

    if effort.level == 0:
        count, answer = await off_loop(request, encode, items, len(body))
    else:  # a search: always in a search worker thread, whatever the batch's size
        count, answer = await to_thread.run_sync(encode, limiter=search_limiter(request))
    observe_batch(request, codec.model_id, count)
    return Response(answer, media_type=CONTAINER if boxed else OCTET_STREAM, headers={"X-Model-Id": codec.model_id})


def container_bytes(codec: Codec, latents: bytes, names: list[str] | None) -> bytes:
    step = codec.format.nbytes
    items = [latents[i : i + step] for i in range(0, len(latents), step)]
    usable = names if names and all(_fits_container(name) for name in names) else None
    return container.write_container(container.Container(codec.model_id, codec.format.name, items, usable))


def wants_container(request: Request) -> bool:
    """Accept names the container type (exactly, parameters aside); anything else gets the raw bytes."""
    accepted = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == CONTAINER for part in accepted.split(","))


def _fits_container(name: str) -> bool:
    # Names are optional in a container: file names that cannot be stored leave them out, rather than fail.
    return bool(name) and "\n" not in name and "\x00" not in name and len(name.encode()) <= container.MAX_NAME_BYTES


@router.post(
    "/decode/batch",
    summary="Many latents to their 28x28 digits",
    response_class=Response,
    responses={
        200: {
            "description": "uint8 array (N, 28, 28) in .npy format.",
            "content": {NPY: {"schema": BINARY}},
            "headers": {"X-Model-Id": MODEL_ID_HEADER},
        },
        **error_responses(400, 404, 408, 409, 413, 422, 431, 503),
    },
    openapi_extra={
        "parameters": [MODEL_PARAM, MODEL_ID_PARAM],
        "requestBody": {
            "required": True,
            "description": f"N x 24 latent bytes end to end, or (Content-Type {CONTAINER}) a latent container.",
            "content": {OCTET_STREAM: {"schema": BINARY}, CONTAINER: {"schema": BINARY}},
        },
    },
)
async def decode_batch(request: Request, raw_codec: BatchDecodeChecks) -> Response:
    limit = _settings_limit(request)
    body = await request.body()
    if sends_container(request):  # as the checks decided (None for raw_codec)
        promised = container.container_count(body)  # from the header, before any of the rest is read
        if promised is not None and promised > limit:
            _check_count(promised, limit, "latent")
        stored, data = await off_loop(request, lambda: _read_container(body), promised or 0, len(body))
        codec = codec_for_latent(request, stored.model_id)
        if stored.format_name != codec.format.name:
            raise LatentError(
                f"the container holds {stored.format_name} latents; {codec.name} reads {codec.format.name}"
            )
    else:
        assert raw_codec is not None  # raw latents: the checks resolved their version before the body
        codec, data = raw_codec, body
    step = codec.format.nbytes
    if len(data) % step == 0:  # else unpack_many says so, before decoding anything
        _check_count(len(data) // step, limit, "latent")

    def decode() -> bytes:
        return npy_bytes(codec.decode_many(codec.format.unpack_many(data)))

    answer = await off_loop(request, decode, len(data) // step, len(data))
    observe_batch(request, codec.model_id, len(data) // step)
    return Response(answer, media_type=NPY, headers={"X-Model-Id": codec.model_id})

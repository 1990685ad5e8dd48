"""Batch endpoints, for clients that store many latents: /encode/batch and /decode/batch.

    POST /encode/batch   application/x-npy uint8 (N, 28, 28)  -> N x 24 latent bytes
                         or multipart, N file fields "img"     -> N x 24 latent bytes
    POST /decode/batch   N x 24 latent bytes                   -> application/x-npy uint8 (N, 28, 28)

Both take ?model=NAME like the single endpoints.

Item i of the answer is byte for byte what /encode or /decode gives for item i
alone. Errors name the index of the first bad item. Large batches run in a
worker thread (numpy lets go of the GIL), so single requests keep flowing.
"""

import io
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Request, Response

from app.codec import imaging
from app.codec.codecs import Codec
from app.errors import CodecError, RequestFormatError
from app.service.http import MODEL_PARAM, codec_for_latent, current_codec, error_responses, read_file_fields
from app.service.observability import observe_batch

NPY = "application/x-npy"
OCTET_STREAM = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}
INLINE_MAX = 64  # batches up to this size run on the event loop: a thread hop costs more

router = APIRouter()


def _settings_limit(request: Request) -> int:
    return int(request.app.state.settings.max_batch_items)


def _check_count(count: int, limit: int, what: str) -> None:
    if count == 0:
        raise RequestFormatError(f"the batch is empty; send at least one {what}")
    if count > limit:
        raise RequestFormatError(f"at most {limit} {what}s per batch; received {count}")


def read_npy_digits(body: bytes, limit: int) -> np.ndarray:
    """A .npy body as a (N, 28, 28) uint8 array; never unpickles anything."""
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


def _read_pngs(pngs: list[bytes]) -> np.ndarray:
    digits = np.empty((len(pngs), imaging.SIDE, imaging.SIDE), dtype=np.uint8)
    for index, png in enumerate(pngs):
        try:
            digits[index] = imaging.read_digit(png)
        except CodecError as exc:  # same kind of error, so the same status, naming the item
            raise type(exc)(f"item {index}: {exc}") from exc
    return digits


async def _run(function: Any, count: int, *args: Any) -> Any:
    if count <= INLINE_MAX:
        return function(*args)
    return await to_thread.run_sync(function, *args)


@router.post(
    "/encode/batch",
    summary="Many 28x28 digits to their latents, end to end",
    response_class=Response,
    responses={
        200: {"description": "N x 24 bytes, item i for input i.", "content": {OCTET_STREAM: {"schema": BINARY}}},
        **error_responses(400, 404, 408, 413, 415, 422, 431, 503),
    },
    openapi_extra={
        "parameters": [MODEL_PARAM],
        "requestBody": {
            "required": True,
            "content": {
                NPY: {"schema": BINARY},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["img"],
                        "properties": {"img": {"type": "array", "items": BINARY}},
                    },
                    "encoding": {"img": {"contentType": "image/png"}},
                },
            },
        },
    },
)
async def encode_batch(request: Request) -> Response:
    limit = _settings_limit(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        pngs = await read_file_fields(request, "img", "a 28x28 PNG", limit)
        digits = await _run(_read_pngs, len(pngs), pngs)
    else:
        digits = read_npy_digits(await request.body(), limit)
    codec: Codec = current_codec(request)
    observe_batch(request, len(digits))
    body = await _run(codec.encode_many, len(digits), digits)
    return Response(body, media_type=OCTET_STREAM, headers={"X-Model-Id": codec.model_id})


@router.post(
    "/decode/batch",
    summary="Many latents to their 28x28 digits",
    response_class=Response,
    responses={
        200: {"description": "uint8 array (N, 28, 28) in .npy format.", "content": {NPY: {"schema": BINARY}}},
        **error_responses(400, 404, 408, 413, 422, 431, 503),
    },
    openapi_extra={
        "parameters": [MODEL_PARAM],
        "requestBody": {"required": True, "content": {OCTET_STREAM: {"schema": BINARY}}},
    },
)
async def decode_batch(request: Request) -> Response:
    codec: Codec = codec_for_latent(request)
    z = codec.format.unpack_many(await request.body())
    _check_count(len(z), _settings_limit(request), "latent")
    observe_batch(request, len(z))
    pixels = await _run(codec.decode_many, len(z), z)
    return Response(npy_bytes(pixels), media_type=NPY, headers={"X-Model-Id": codec.model_id})

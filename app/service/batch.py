"""Batch endpoints, for clients that store many latents: /encode/batch and /decode/batch.

    POST /encode/batch   application/x-npy uint8 (N, 28, 28)  -> N x 24 latent bytes
                         or multipart, N file fields "img"     -> N x 24 latent bytes
    POST /decode/batch   N x 24 latent bytes                   -> application/x-npy uint8 (N, 28, 28)
                         or a latent container (app.codec.latent) -> application/x-npy uint8 (N, 28, 28)

Both take ?model=NAME like the single endpoints, and check it first (404), as they do.
/encode/batch takes ?effort=N too (app.service.effort), every digit searched at that level.
/encode/batch answers with a latent container (model id, format, count, the latents,
and the multipart file names) instead of the raw N x 24 bytes when the request's
Accept header names its media type, application/x-mnist-latents; raw stays the default.
/decode/batch takes a container (Content-Type application/x-mnist-latents) and decodes
it with the model whose id it holds, as it would for an X-Model-Id header.

Item i of the answer is byte for byte what /encode or /decode gives for item i
alone. Errors name the index of the first bad item. Large batches run in a
worker thread (numpy lets go of the GIL), so single requests keep flowing.
"""

import io
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Request, Response

from app.codec import imaging, latent
from app.codec.codecs import Codec
from app.errors import CodecError, LatentError, RequestFormatError
from app.service.effort import EFFORT_PARAM, requested_effort, search
from app.service.http import (
    MODEL_ID_HEADER,
    MODEL_ID_PARAM,
    MODEL_PARAM,
    codec_for_latent,
    current_codec,
    error_responses,
    read_file_fields_named,
)
from app.service.observability import observe_batch

NPY = "application/x-npy"
OCTET_STREAM = "application/octet-stream"
CONTAINER = latent.CONTAINER_MEDIA_TYPE
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
    codec: Codec = current_codec(request)  # first: an unknown model is a 404 whatever the body, as on /encode
    effort = requested_effort(request, codec)  # then the effort (422), before the body, as on /encode
    limit = _settings_limit(request)
    names: list[str] | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        named = await read_file_fields_named(request, "img", "a 28x28 PNG", limit)
        pngs = [data for _, data in named]
        names = [name for name, _ in named]
        digits = await _run(_read_pngs, len(pngs), pngs)
    else:
        digits = read_npy_digits(await request.body(), limit)
    observe_batch(request, len(digits))
    if effort.level == 0:
        body = await _run(codec.encode_many, len(digits), digits)
    else:  # the bound on search work (413), then a search worker thread
        body = await search(request, codec, digits, effort)
    headers = {"X-Model-Id": codec.model_id}
    if not wants_container(request):
        return Response(body, media_type=OCTET_STREAM, headers=headers)
    step = latent.LATENT_BYTES
    items = [body[i : i + step] for i in range(0, len(body), step)]
    usable = names if names and all(_fits_container(name) for name in names) else None
    container = latent.Container(codec.model_id, codec.format.name, items, usable)
    return Response(latent.write_container(container), media_type=CONTAINER, headers=headers)


def wants_container(request: Request) -> bool:
    """Accept names the container type (exactly, parameters aside); anything else gets the raw bytes."""
    accepted = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == CONTAINER for part in accepted.split(","))


def _fits_container(name: str) -> bool:
    # Names are optional in a container: file names that cannot be stored leave them out, rather than fail.
    return bool(name) and "\n" not in name and "\x00" not in name and len(name.encode()) <= latent.MAX_NAME_BYTES


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
async def decode_batch(request: Request) -> Response:
    current_codec(request)  # first: an unknown ?model= is a 404 whatever the body, as on /decode
    body = await request.body()
    stored: latent.Container | None = None
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == CONTAINER:
        stored = latent.read_container(body)
        body = b"".join(stored.latents)
    codec: Codec = codec_for_latent(request, stored.model_id if stored else None)
    if stored is not None and stored.format_name != codec.format.name:
        raise LatentError(f"the container holds {stored.format_name} latents; {codec.name} reads {codec.format.name}")
    z = codec.format.unpack_many(body)
    _check_count(len(z), _settings_limit(request), "latent")
    observe_batch(request, len(z))
    pixels = await _run(codec.decode_many, len(z), z)
    return Response(npy_bytes(pixels), media_type=NPY, headers={"X-Model-Id": codec.model_id})

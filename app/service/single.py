"""The single endpoints: one digit's PNG to its latent, one latent to its PNG.

    POST /encode   multipart, the file field "img": a 28x28 PNG   -> the latent bytes
    POST /decode   the latent bytes, raw or as the file field "latent" -> a 28x28 PNG

Both take `?model=NAME` or `?model=MODEL_ID` (app.codec.codecs says how names and versions
resolve); /encode takes `?effort=N` (app.service.effort), /decode an X-Model-Id header. The
model, the version and the effort are checked before the body is read (app.service.checks).
"""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.codec import imaging
from app.service.checks import DecodeChecks, EncodeChecks
from app.service.effort import EFFORT_PARAM, encode_digit
from app.service.multipart import read_file_field
from app.service.openapi import (
    BINARY,
    FORM,
    LATENT_DOC,
    MODEL_ID_HEADER,
    MODEL_ID_PARAM,
    MODEL_PARAM,
    OCTET_STREAM,
    PNG,
    error_responses,
)

router = APIRouter()


@router.post(
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
                FORM: {
                    "schema": {"type": "object", "required": ["img"], "properties": {"img": BINARY}},
                    "encoding": {"img": {"contentType": PNG}},
                }
            },
        },
    },
)
async def encode(request: Request, checked: EncodeChecks) -> Response:
    codec = checked.codec
    png = await read_file_field(request, "img", "a 28x28 PNG")
    body = await encode_digit(request, codec, imaging.read_digit(png), checked.effort)
    return Response(body, media_type=OCTET_STREAM, headers={"X-Model-Id": codec.model_id})


@router.post(
    "/decode",
    summary="A 24-byte latent to its 28x28 PNG",
    response_class=Response,
    responses={
        200: {
            "description": "28x28 8-bit grayscale PNG.",
            "content": {PNG: {"schema": BINARY}},
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
                FORM: {
                    "schema": {"type": "object", "required": ["latent"], "properties": {"latent": BINARY}},
                    "encoding": {"latent": {"contentType": OCTET_STREAM}},
                },
            },
        },
    },
)
async def decode(request: Request, codec: DecodeChecks) -> Response:
    if request.headers.get("content-type", "").startswith(FORM):
        data = await read_file_field(request, "latent", LATENT_DOC)
    else:  # any other type is the raw latent (curl --data-binary sends form-urlencoded)
        data = await request.body()
    png = await codec.decode_one(data)
    return Response(png, media_type=PNG, headers={"X-Model-Id": codec.model_id})

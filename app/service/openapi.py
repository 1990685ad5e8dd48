"""The pieces of the OpenAPI document the endpoints share: media types, parameters, headers, error bodies.

Each endpoint reads its query, headers and body from the request itself (so that it can take the
direct path, app.service.direct), and declares them with `openapi_extra` from these. What can be
said only once the models are loaded (their names, /decode's latent size) is app.service.docs'.
"""

from typing import Any

from app.codec import container, latent
from app.service.schemas import ErrorBody

OCTET_STREAM = "application/octet-stream"
NPY = "application/x-npy"
PNG = "image/png"
FORM = "multipart/form-data"
CONTAINER = container.CONTAINER_MEDIA_TYPE
BINARY = {"type": "string", "format": "binary"}

LATENT_DOC = (
    f"{latent.LATENT_BYTES} bytes in the model's latent format (GET /models): "
    + "; ".join(
        f'{fmt.name}, {fmt.description} (numpy.fromfile(path, dtype="{fmt.symbol_dtype.str}"))'
        for fmt in latent.FORMATS.values()
    )
    + f"; {latent.ArithmeticCodedFormat.name}, {latent.ArithmeticCodedFormat.description}"
)

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

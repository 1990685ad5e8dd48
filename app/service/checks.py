"""What every endpoint checks before it reads a body, in one order, as FastAPI dependencies.

    1. the model: ?model= names no model this server holds             404
    2. the version: X-Model-Id names weights not held, or not ?model='s  409
    3. the effort: ?effort= is not a level of that model                 422

An unknown model is a 404 whatever the body, a foreign id a 409, and an effort out of range a
422 before an upload is even received. Each endpoint takes one of these as a parameter
(`Annotated[..., Depends(...)]`), so FastAPI runs it before the endpoint's first line, and the
direct path (app.service.direct) runs it the same way. `tests/test_checks.py` sends every
endpoint a request that breaks all three at once, and checks which answer comes first.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from app.codec.codecs import Codec, Codecs
from app.codec.search import Effort
from app.errors import ModelMismatchError
from app.service.effort import requested_effort
from app.service.openapi import CONTAINER


def loaded_codecs(request: Request) -> Codecs:
    codecs: Codecs | None = request.app.state.codecs
    if codecs is None:  # only reachable when the lifespan has not run
        raise HTTPException(503, "model not loaded")
    return codecs


def codec_for_latent(request: Request, stored: str | None = None) -> Codec:
    """For decoding: the version ?model= means, or the one the X-Model-Id header names (or `stored`, the id a
    latent container holds); `Codecs.resolve` says which, or why none (404, 409)."""
    claimed = request.headers.get("x-model-id")
    if stored is not None and claimed is not None and claimed != stored:
        raise ModelMismatchError(
            f"X-Model-Id says {claimed[:60]!r} but the container says its latents were made by {stored!r}"
        )
    return loaded_codecs(request).resolve(request.query_params.get("model"), stored or claimed)


@dataclass(frozen=True)
class Encoding:
    codec: Codec
    effort: Effort


async def encoding(request: Request) -> Encoding:
    """/encode and /encode/batch: the model ?model= means (404), then its level ?effort= asks for (422)."""
    codec = loaded_codecs(request).get(request.query_params.get("model"))
    return Encoding(codec, requested_effort(request, codec))


async def decoding(request: Request) -> Codec:
    """/decode: the version that decodes these latents (404, then 409)."""
    return codec_for_latent(request)


def sends_container(request: Request) -> bool:
    """The body is a latent container (its Content-Type, parameters aside), not raw latents."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == CONTAINER


async def batch_decoding(request: Request) -> Codec | None:
    """/decode/batch: as /decode for raw latents; for a container, only ?model= (404) now: the version is the
    one the container names, known once its header is read (`codec_for_latent(request, stored)`)."""
    if not sends_container(request):
        return codec_for_latent(request)
    loaded_codecs(request).get(request.query_params.get("model"))
    return None


EncodeChecks = Annotated[Encoding, Depends(encoding)]
DecodeChecks = Annotated[Codec, Depends(decoding)]
BatchDecodeChecks = Annotated[Codec | None, Depends(batch_decoding)]

"""Encode effort over HTTP: the `?effort=N` parameter, the bound on search work, the worker threads.

    POST /encode?effort=N          one digit, searched at level N of the model
    POST /encode/batch?effort=N    every digit of the batch at level N

Each model has levels 0..E (`Codec.efforts`, listed by GET /models); level 0 is the
encoder's single pass, byte for byte what the service always gave, and no parameter
means the model's `default_effort`. A value that is not an integer in 0..E is a 422
naming the range (`Codec.effort` raises EffortError); the model is checked before it,
so an unknown model stays a 404 whatever the effort.

Level 0 keeps its old path (the micro-batcher, batches inline or in a thread). Above
it the search is CPU work of milliseconds per digit, so it always runs in a worker
thread, never on the event loop, on a thread pool of its own (`search_threads`) so
that a queue of searches does not hold up the threads the rest of the service uses,
each with one BLAS thread (app.codec.blas).
The request keeps its concurrency slot meanwhile, so `max_concurrency` still holds.

A request's search work is its digits x the level's cost (decoder evaluations per
digit, `Effort.cost`); over `max_search_work` it is a 413 that says how many digits
fit at that level. A count, not a time budget: the bytes never depend on timing.
"""

from typing import Any

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import HTTPException, Request

from app.codec.codecs import Codec, Codecs
from app.codec.search import Effort
from app.errors import RequestFormatError

PARAM = "effort"
SETTING_ENV = "MNIST_CODEC_MAX_SEARCH_WORK"
ENDPOINTS = ("/encode", "/encode/batch")

EFFORT_PARAM: dict[str, Any] = {
    "name": PARAM,
    "in": "query",
    "required": False,
    "description": (
        "Encode effort: an integer from 0 to the model's highest level (GET /models lists each model's "
        "`efforts` with their PSNR and cost, and its `default_effort`). 0 is the encoder's single pass; higher "
        "levels search for a latent the decoder reads better, at more CPU time. Same digit, model and effort: "
        "same bytes, alone or in a batch. Without it, the model's default effort. Out of range or not an "
        "integer: 422. Digits x the level's cost over the server's search-work limit: 413."
    ),
    "schema": {"type": "integer", "minimum": 0},
}


def requested_effort(request: Request, codec: Codec) -> Effort:
    """The level `?effort=` asks of `codec`, or its default; EffortError (422) names the range."""
    values = request.query_params.getlist(PARAM)
    if len(values) > 1:
        raise RequestFormatError(f"give effort once; received {len(values)} values")
    return codec.effort(values[0] if values else None)


def check_search_work(request: Request, codec: Codec, count: int, effort: Effort) -> None:
    """413 when `count` digits at `effort` are more search work than one request may ask for."""
    limit = int(request.app.state.settings.max_search_work)
    work = count * effort.cost
    if effort.level == 0 or work <= limit:
        return
    fits = limit // effort.cost if effort.cost else count
    advice = (
        f"send at most {fits} digits per request at effort {effort.level}, or a lower effort"
        if fits
        else "use a lower effort"
    )
    raise HTTPException(
        413,
        f"too much search work: {count} digits x {effort.cost} (the cost of effort {effort.level} of model "
        f"{codec.name}) = {work}, over this server's limit of {limit} ({SETTING_ENV}); {advice}",
    )


def search_limiter(request: Request) -> CapacityLimiter:
    """The app's pool of search worker threads (`search_threads`); made on first use, inside its event loop."""
    state = request.app.state
    limiter: CapacityLimiter | None = getattr(state, "search_limiter", None)
    if limiter is None:
        limiter = state.search_limiter = CapacityLimiter(int(state.settings.search_threads))
    return limiter


async def search(request: Request, codec: Codec, digits: np.ndarray, effort: Effort) -> bytes:
    """(N, 28, 28) uint8 digits -> N latents at `effort`, in a search worker thread, after the bound."""
    check_search_work(request, codec, len(digits), effort)
    body: bytes = await to_thread.run_sync(codec.encode_many, digits, effort.level, limiter=search_limiter(request))
    return body


async def encode_digit(request: Request, codec: Codec, pixels: np.ndarray, effort: Effort) -> bytes:
    """One (28, 28) digit: level 0 as ever (through the micro-batcher when it is on), else the search."""
    if effort.level == 0:
        return await codec.encode_one(pixels)
    return await search(request, codec, pixels[np.newaxis], effort)


def describe_efforts(schema: dict[str, Any], codecs: Codecs) -> None:
    """Fill the OpenAPI `effort` parameter of the encode endpoints with each model's range and default."""

    def label(c: Codec) -> str:  # the name, or the id where the name has several versions
        return c.model_id if len(codecs.versions[c.name]) > 1 else c.name

    ranges = "; ".join(f"{label(c)}: 0 to {c.max_effort}, default {c.default_effort}" for c in codecs)
    defaults = {c.default_effort for c in codecs}
    default = {"default": defaults.pop()} if len(defaults) == 1 else {}  # one default for every model
    for path in ENDPOINTS:
        for parameter in schema.get("paths", {}).get(path, {}).get("post", {}).get("parameters", []):
            if parameter.get("name") != PARAM or parameter.get("in") != "query":
                continue
            parameter["description"] = f"{EFFORT_PARAM['description']} Levels here: {ranges}."
            parameter["schema"] = {
                "type": "integer",
                "minimum": 0,
                "maximum": max(c.max_effort for c in codecs),
                **default,
            }

"""Encode effort over HTTP (app/service/effort.py): ?effort=N on /encode and /encode/batch, the 422s,
the bound on search work, the worker threads, GET /models and the OpenAPI document."""

import asyncio
import io
import json
import threading
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from anyio import to_thread
from conftest import ROOT, asgi_client, npy
from fastapi import FastAPI
from openapi_spec_validator import validate

from app.codec import blas
from app.codec.codecs import Codec
from app.settings import Settings

pytestmark = pytest.mark.anyio

Digits = list[tuple[str, bytes, np.ndarray]]
MODELS = ["mlp6", "mlp24", "ec64"]
NPY = {"content-type": "application/x-npy"}
# The committed ec64 versions: v1, whose stored latents decode forever, and v2, what `ec64` means.
EC64_V1, EC64_V2 = "ec64-ea9647b7fd42", "ec64-360fddf1aed9"
EC64_FIGURES = {  # their own effort tables, as committed beside each (`<checkpoint>.efforts.json`)
    EC64_V1: ROOT / "model_weights" / "ec64" / "ec64.efforts.json",
    EC64_V2: ROOT / "model_weights" / "ec64" / "v2" / "ec64.efforts.json",
}


def codec_of(app: FastAPI, name: str) -> Codec:
    codec: Codec = app.state.codecs.get(name)
    return codec


def asked_as(app: FastAPI, codec: Codec) -> str:
    """What ?model= says for this version: its name where the name means it, else its id."""
    return codec.name if app.state.codecs.means(codec) else codec.model_id


async def encode(client: httpx.AsyncClient, png: bytes, query: str = "") -> httpx.Response:
    return await client.post(f"/encode{query}", files={"img": ("digit.png", png, "image/png")})


async def encode_batch(client: httpx.AsyncClient, pngs: list[bytes], query: str = "") -> httpx.Response:
    return await client.post(f"/encode/batch{query}", files=[("img", (f"d{i}.png", png)) for i, png in enumerate(pngs)])


async def encode_npy(client: httpx.AsyncClient, pixels: np.ndarray, query: str = "") -> httpx.Response:
    return await client.post(f"/encode/batch{query}", content=npy(pixels), headers=NPY)


# --------------------------------------------------------------------------- the parameter and its 422s


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("form", ["encode", "batch-multipart", "batch-npy"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("above", id="one-above-the-highest"),
        pytest.param("1000", id="far-above"),
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="not-an-integer"),
        pytest.param("1.0", id="a-float"),
        pytest.param("high", id="a-word"),
        pytest.param("", id="empty"),
    ],
)
async def test_an_effort_out_of_range_or_not_an_integer_is_422_naming_the_range(
    client: httpx.AsyncClient, app: FastAPI, digits: Digits, name: str, form: str, value: str
) -> None:
    codec = codec_of(app, name)
    if value == "above":
        value = str(codec.max_effort + 1)
    query = f"?model={name}&effort={value}"
    _, png, pixels = digits[0]
    if form == "encode":
        response = await encode(client, png, query)
    elif form == "batch-multipart":
        response = await encode_batch(client, [png, png], query)
    else:
        response = await encode_npy(client, pixels[np.newaxis], query)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "effort" in detail and f"0 to {codec.max_effort}" in detail and name in detail, detail


async def test_the_highest_level_is_served_and_one_more_is_not(
    client: httpx.AsyncClient, app: FastAPI, seven_png: bytes
) -> None:
    for name in MODELS:
        top = codec_of(app, name).max_effort
        assert top >= 1, f"{name} has no effort level above 0"
        served = await encode(client, seven_png, f"?model={name}&effort={top}")
        assert served.status_code == 200 and len(served.content) == 24, served.text
        assert (await encode(client, seven_png, f"?model={name}&effort={top + 1}")).status_code == 422


@pytest.mark.parametrize(
    ("path", "request_args"),
    [
        pytest.param("/encode", {"files": {"img": ("d.png", b"not a png")}}, id="encode-bad-png"),
        pytest.param("/encode", {"content": b""}, id="encode-no-body"),
        pytest.param("/encode/batch", {"content": b"not npy", "headers": NPY}, id="batch-bad-npy"),
    ],
)
async def test_an_unknown_model_comes_first_then_the_effort_then_the_body(
    client: httpx.AsyncClient, path: str, request_args: dict[str, Any]
) -> None:
    unknown = await client.post(f"{path}?model=nope&effort=99", **request_args)
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    bad_effort = await client.post(f"{path}?effort=99", **request_args)
    assert bad_effort.status_code == 422 and "effort" in bad_effort.json()["detail"], bad_effort.text


async def test_effort_given_twice_is_422(client: httpx.AsyncClient, seven_png: bytes) -> None:
    response = await encode(client, seven_png, "?effort=0&effort=1")
    assert response.status_code == 422
    assert "effort once" in response.json()["detail"]


# --------------------------------------------------------------------------- the bytes


def served_latents() -> dict[str, dict[str, str]]:
    """What /encode answered before effort existed (tests/data/served_bytes.json)."""
    models = json.loads((ROOT / "tests" / "data" / "served_bytes.json").read_text())["models"]
    return {name: {digit: entry["latent"] for digit, entry in by_digit.items()} for name, by_digit in models.items()}


async def test_effort_0_and_no_effort_give_the_bytes_served_before(
    client: httpx.AsyncClient, app: FastAPI, digits: Digits
) -> None:
    recorded = served_latents()  # mlp6 and mlp24; ec64 came later, and its level 0 is its one pass
    assert set(recorded) == {"mlp6", "mlp24"}
    for name in MODELS:
        assert codec_of(app, name).default_effort == 0, "a default above 0 needs its reason in the README"
        for digit, png, pixels in digits:
            expected = bytes.fromhex(recorded[name][f"{digit}.png"]) if name in recorded else None
            expected = expected or codec_of(app, name).encode(pixels, 0)
            assert (await encode(client, png, f"?model={name}")).content == expected, (name, digit)
            assert (await encode(client, png, f"?model={name}&effort=0")).content == expected, (name, digit)
            assert (await encode(client, png, f"?model={name}&effort=00")).content == expected, (name, digit)


async def test_each_level_gives_the_same_bytes_alone_and_inside_any_batch(
    client: httpx.AsyncClient, app: FastAPI, digits: Digits
) -> None:
    """Over HTTP, at every level above 0: a digit alone on /encode, inside a multipart batch of all
    the test digits, and inside an .npy batch in another order with others repeated around it."""
    pngs = [png for _, png, _ in digits]
    pixels = np.stack([p for _, _, p in digits])
    order = [5, 0, 19, 0, 7, 3, 12, 1, 1, 4]  # another composition: repeats, reversed neighbours
    alone_ones = [0, 1, 7, 19]
    for name in MODELS:
        codec = codec_of(app, name)
        for level in range(1, codec.max_effort + 1):
            query = f"?model={name}&effort={level}"
            multipart = await encode_batch(client, pngs, query)
            assert multipart.status_code == 200, multipart.text
            in_batch = [multipart.content[24 * i : 24 * i + 24] for i in range(len(pngs))]
            shuffled = await encode_npy(client, pixels[order], query)
            assert shuffled.content == b"".join(in_batch[i] for i in order), (name, level)
            for i in alone_ones:
                alone = await encode(client, pngs[i], query)
                assert alone.content == in_batch[i], (name, level, digits[i][0])
                assert alone.headers["x-model-id"] == codec.model_id
            level_0 = (await encode_batch(client, pngs, f"?model={name}&effort=0")).content
            assert multipart.content != level_0, f"{name} effort {level} changed no byte of 20 digits"


async def test_a_higher_effort_reads_better_on_the_test_digits(
    client: httpx.AsyncClient, app: FastAPI, digits: Digits
) -> None:
    """The point of it all, on the 20 test digits as served (PNG in, 24 bytes, PNG out): the
    highest level's mean PSNR is above level 0's, for every version served (ec64 v1 asked for by its id).
    The latents go back with the X-Model-Id their encode returned, as a client stores them.
    (The 10,000-digit figures are /models'.)"""
    pixels = np.stack([p for _, _, p in digits])
    for codec in app.state.codecs:
        model = asked_as(app, codec)
        psnr = {}
        for level in (0, codec.max_effort):
            encoded = await encode_npy(client, pixels, f"?model={model}&effort={level}")
            assert encoded.headers["x-model-id"] == codec.model_id, model
            claim = {"X-Model-Id": encoded.headers["x-model-id"]}
            decoded = await client.post(f"/decode/batch?model={codec.name}", content=encoded.content, headers=claim)
            assert decoded.status_code == 200, decoded.text
            out = np.load(io.BytesIO(decoded.content)).astype(np.float64)
            mse = ((out - pixels) ** 2).mean(axis=(1, 2)) / 255**2
            psnr[level] = float(np.mean(10 * np.log10(1 / np.maximum(mse, 1e-10))))
        assert psnr[codec.max_effort] > psnr[0], (model, psnr)


# --------------------------------------------------------------------------- the bound on search work


async def test_search_work_over_the_limit_is_413_and_at_the_limit_200(digits: Digits) -> None:
    pixels = np.stack([p for _, _, p in digits])
    pngs = [png for _, png, _ in digits]
    async with asgi_client() as (_, probe):
        cost = codec_of(probe, "ec64").efforts[-1].cost
        top = codec_of(probe, "ec64").max_effort
    limit = 3 * cost  # three digits at ec64's highest level, exactly
    async with asgi_client(max_search_work=limit) as (client, _):
        query = f"?model=ec64&effort={top}"
        assert (await encode_npy(client, pixels[:3], query)).status_code == 200  # at the edge
        assert (await encode_batch(client, pngs[:3], query)).status_code == 200
        for over in (await encode_npy(client, pixels[:4], query), await encode_batch(client, pngs[:4], query)):
            assert over.status_code == 413, over.text
            detail = over.json()["detail"]
            assert f"4 digits x {cost}" in detail and f"limit of {limit}" in detail, detail
            assert "MNIST_CODEC_MAX_SEARCH_WORK" in detail
            assert f"at most 3 digits per request at effort {top}, or a lower effort" in detail
        # Level 0 is not search work: the whole batch as ever.
        assert (await encode_npy(client, pixels, "?model=ec64&effort=0")).status_code == 200
        assert (await encode_npy(client, pixels, "?model=ec64")).status_code == 200


async def test_a_single_digit_over_the_limit_is_413_saying_to_lower_the_effort(seven_png: bytes) -> None:
    async with asgi_client(max_search_work=1) as (client, app):
        top = codec_of(app, "ec64").max_effort
        response = await encode(client, seven_png, f"?model=ec64&effort={top}")
        assert response.status_code == 413
        assert response.json()["detail"].endswith("use a lower effort")
        assert (await encode(client, seven_png, "?model=ec64&effort=0")).status_code == 200


async def test_a_hostile_batch_is_refused_before_any_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """The largest batch the server takes, of noise, at the highest level: 413, and the model never ran."""
    async with asgi_client() as (client, app):
        codec = codec_of(app, "ec64")
        settings = app.state.settings
        count = settings.max_batch_items
        assert count * codec.efforts[-1].cost > settings.max_search_work  # else this test proves nothing
        calls: list[int] = []
        monkeypatch.setattr(codec, "encode_many", lambda pixels, effort=0: calls.append(len(pixels)) or b"")
        noise = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
        response = await encode_npy(client, noise, f"?model=ec64&effort={codec.max_effort}")
        assert response.status_code == 413, response.text
        assert calls == []


async def test_the_default_limit_allows_1000_digits_at_every_highest_level(client: httpx.AsyncClient) -> None:
    """The issue's cost target is 5 ms per digit in a batch of 1,000 at the highest level: a batch of
    1,000 must fit the default bound for every model (and 10,000 must not, at ec64's highest)."""
    body = (await client.get("/models")).json()
    limit = Settings.model_fields["max_search_work"].default
    assert body["max_search_work"] == limit
    for model in body["models"]:
        assert 1000 * model["efforts"][-1]["cost"] <= limit, model["name"]


# --------------------------------------------------------------------------- threads and the concurrency limit


async def test_a_search_runs_in_a_worker_thread_and_level_0_as_before(
    client: httpx.AsyncClient, app: FastAPI, seven_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = codec_of(app, "mlp24")
    threads: list[tuple[int, bool]] = []
    real = codec.encode_many

    def spy(pixels: np.ndarray, effort: int = 0) -> bytes:
        threads.append((effort, threading.current_thread() is threading.main_thread()))
        return real(pixels, effort)

    monkeypatch.setattr(codec, "encode_many", spy)
    for query in ("?model=mlp24&effort=1", "?model=mlp24&effort=0"):
        assert (await encode(client, seven_png, query)).status_code == 200
    one = np.zeros((3, 28, 28), np.uint8)
    assert (await encode_npy(client, one, f"?model=mlp24&effort={codec.max_effort}")).status_code == 200
    # The searches in worker threads, never on the event loop (the main thread here); level 0 as before.
    assert [call for call in threads if call[0] > 0] == [(1, False), (codec.max_effort, False)]
    assert app.state.search_limiter.total_tokens == app.state.settings.search_threads


async def test_a_search_holds_its_concurrency_slot(seven_png: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one search runs (in its thread), the limit of 1 request in progress still refuses a second."""
    async with asgi_client(max_concurrency=1) as (client, app):
        codec = codec_of(app, "ec64")
        started, release = threading.Event(), threading.Event()
        real = codec.encode_many

        def slow(pixels: np.ndarray, effort: int = 0) -> bytes:
            started.set()
            release.wait(10)
            return real(pixels, effort)

        monkeypatch.setattr(codec, "encode_many", slow)
        results: dict[str, httpx.Response] = {}

        async def first() -> None:
            results["first"] = await encode(client, seven_png, "?model=ec64&effort=1")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            await to_thread.run_sync(started.wait, 10)  # the search is under way, off the event loop
            refused = await client.get("/models")  # the event loop still answers: with a 503, the slot taken
            release.set()
        assert refused.status_code == 503 and "over capacity" in refused.json()["detail"]
        assert results["first"].status_code == 200 and len(results["first"].content) == 24


# --------------------------------------------------------------------------- GET /models and OpenAPI


async def test_models_lists_each_models_efforts_and_default(client: httpx.AsyncClient, app: FastAPI) -> None:
    body = (await client.get("/models")).json()
    # Every version: ec64 twice, each with its own effort table.
    assert [(m["name"], m["id"]) for m in body["models"]] == [
        ("mlp6", codec_of(app, "mlp6").model_id),
        ("mlp24", codec_of(app, "mlp24").model_id),
        ("ec64", EC64_V1),
        ("ec64", EC64_V2),
    ]
    for model in body["models"]:
        codec = app.state.codecs.by_id[model["id"]]
        assert model["default_effort"] == codec.default_effort
        assert [e["level"] for e in model["efforts"]] == list(range(codec.max_effort + 1))
        for listed, effort in zip(model["efforts"], codec.efforts, strict=True):
            assert listed == {
                "level": effort.level,
                "psnr_db": effort.psnr_db,
                "us_per_digit": effort.us_per_digit,
                "cost": effort.cost,
            }
            for key in ("psnr_db", "us_per_digit"):
                assert listed[key] is None or (isinstance(listed[key], float) and listed[key] > 0), (model, key)
        costs = [e["cost"] for e in model["efforts"]]
        assert costs == sorted(costs) and costs[-1] > 0, model["name"]
    tables = {m["id"]: [e["psnr_db"] for e in m["efforts"]] for m in body["models"] if m["name"] == "ec64"}
    for model_id, path in EC64_FIGURES.items():
        figures = json.loads(path.read_text())
        assert figures["model_id"] == model_id
        assert tables[model_id] == [level["psnr_db"] for level in figures["levels"]], model_id
    assert [round(db, 2) for db in tables[EC64_V1]] == [26.64, 28.08, 28.57, 29.19]
    assert [round(db, 2) for db in tables[EC64_V2]] == [27.61, 28.50, 28.96, 29.57]


async def test_openapi_documents_the_effort_parameter(client: httpx.AsyncClient, app: FastAPI) -> None:
    document = (await client.get("/openapi.json")).json()
    validate(document)
    codecs = list(app.state.codecs)
    for path in ("/encode", "/encode/batch"):
        operation = document["paths"][path]["post"]
        (effort,) = [p for p in operation["parameters"] if p["name"] == "effort"]
        assert effort["in"] == "query" and effort["required"] is False
        assert effort["schema"] == {
            "type": "integer",
            "minimum": 0,
            "maximum": max(c.max_effort for c in codecs),
            "default": 0,
        }
        # By name, or by id where a name has several versions (ec64's two, each with its own range).
        labels = ["mlp6", "mlp24", EC64_V1, EC64_V2]
        for label, codec in zip(labels, codecs, strict=True):
            assert label in (codec.name, codec.model_id)
            assert f"{label}: 0 to {codec.max_effort}, default {codec.default_effort}" in effort["description"]
        assert "422" in operation["responses"] and "413" in operation["responses"]
    for path in ("/decode", "/decode/batch"):
        assert all(p["name"] != "effort" for p in document["paths"][path]["post"]["parameters"])


# --------------------------------------------------------------------------- on CUDA (make gpu-check runs it)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not cuda_available(), reason="no CUDA device here (make gpu-check runs these on a GPU)")
async def test_on_cuda_concurrent_searches_give_a_batchs_bytes(digits: Digits) -> None:
    """The torch search, several at once in the search threads: each digit's bytes are the ones it
    gets inside one batch request, at every model's highest level."""
    pngs = [png for _, png, _ in digits]
    pixels = np.stack([p for _, _, p in digits])
    async with asgi_client(device="cuda", microbatching="on") as (client, app):
        for codec in app.state.codecs:
            query = f"?model={codec.name}&effort={codec.max_effort}"
            batch = await encode_npy(client, pixels, query)
            assert batch.status_code == 200, batch.text
            alone = await asyncio.gather(*(encode(client, png, query) for png in pngs))
            assert b"".join(a.content for a in alone) == batch.content, codec.name


def test_a_search_thread_runs_its_blas_products_on_one_thread() -> None:
    """numpy's OpenBLAS has a per-thread count here; inside `one_thread` it is 1, and restored after,
    for the calling thread alone (a fresh thread, so nothing else's setting is touched)."""
    setter = blas.thread_local_setter()
    assert setter is not None, "numpy's OpenBLAS has no openblas_set_num_threads_local: searches split products"
    seen: dict[str, int | bool] = {}

    def in_a_thread() -> None:
        before = setter(3)
        with blas.one_thread() as done:
            seen["set"] = done
            seen["inside"] = setter(1)  # returns the count in force: 1
        seen["after"] = setter(before)  # the 3 it was before the block

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert seen == {"set": True, "inside": 1, "after": 3}

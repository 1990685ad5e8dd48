"""Batch endpoints and micro-batching: batched bytes are exactly the single-request bytes."""

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import COMMITTED_WEIGHTS, asgi_client, npy, png_bytes
from PIL import Image

from app.codec import checkpoint

pytestmark = pytest.mark.anyio

Digits = list[tuple[str, bytes, np.ndarray]]


@pytest.fixture
async def small_limits() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(max_batch_items=5, max_batch_bytes=10_000) as (client, _):
        yield client


async def singles(client: httpx.AsyncClient, digits: Digits) -> bytes:
    parts = [await client.post("/encode", files={"img": ("d.png", png)}) for _, png, _ in digits]
    return b"".join(part.content for part in parts)


async def test_npy_batch_equals_single_requests(client: httpx.AsyncClient, digits: Digits) -> None:
    stack = np.stack([pixels for _, _, pixels in digits])
    response = await client.post("/encode/batch", content=npy(stack), headers={"content-type": "application/x-npy"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == await singles(client, digits)


async def test_multipart_batch_equals_single_requests(client: httpx.AsyncClient, digits: Digits) -> None:
    files = [("img", (f"{name}.png", png, "image/png")) for name, png, _ in digits]
    response = await client.post("/encode/batch", files=files)
    assert response.status_code == 200
    assert response.content == await singles(client, digits)


async def test_decode_batch_equals_single_requests(client: httpx.AsyncClient, digits: Digits) -> None:
    latents = await singles(client, digits)
    response = await client.post("/decode/batch", content=latents)
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-npy"
    batch = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert batch.dtype == np.uint8 and batch.shape == (len(digits), 28, 28)
    for i in range(len(digits)):
        single = await client.post("/decode", content=latents[24 * i : 24 * (i + 1)])
        np.testing.assert_array_equal(batch[i], np.asarray(Image.open(io.BytesIO(single.content))))


def _bad_png_batch(seven: bytes) -> list[tuple[str, tuple[str, bytes]]]:
    return [("img", ("a.png", seven)), ("img", ("b.png", seven)), ("img", ("c.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 8))]


def as_npy(array: np.ndarray) -> dict[str, Any]:
    return {"content": npy(array), "headers": {"content-type": "application/x-npy"}}


def as_pngs(*images: bytes) -> dict[str, Any]:
    return {"files": [("img", (f"{i}.png", data)) for i, data in enumerate(images)]}


BLACK_28 = png_bytes(Image.new("L", (28, 28)))
COMMITTED_ID = checkpoint.read(COMMITTED_WEIGHTS).model_id
NAN_THIRD = np.array([[0] * 6, [0] * 6, [0, 0, np.nan, 0, 0, 0]], "<f4").tobytes()
ENCODE, DECODE = "/encode/batch", "/decode/batch"

ERRORS = [
    pytest.param(ENCODE, as_pngs(b"", BLACK_28), 400, "item 0: the upload is empty", id="empty-item-0"),
    pytest.param(ENCODE, as_pngs(BLACK_28, png_bytes(Image.new("L", (3, 3)))), 422, "item 1: expected a 28x28 PNG, received 3x3", id="wrong-size-item-1"),
    pytest.param(ENCODE, as_npy(np.zeros((2, 28, 28), np.float32)), 422, "received float32 (2, 28, 28)", id="npy-float"),
    pytest.param(ENCODE, as_npy(np.zeros((0, 28, 28), np.uint8)), 422, "empty", id="npy-empty"),
    pytest.param(ENCODE, as_npy(np.zeros((20, 28, 28), np.uint8)), 413, "over the limit", id="npy-over-body-limit"),
    pytest.param(ENCODE, {"content": b"\x93NUMPY junk", "headers": {"content-type": "application/x-npy"}}, 422, "not a readable .npy", id="npy-garbage"),
    pytest.param(ENCODE, as_npy(np.array([object()], dtype=object)), 422, "not a readable .npy", id="npy-pickled-object"),
    pytest.param(DECODE, {"content": b"\0" * 25}, 422, "multiple of 24 bytes", id="latents-25-bytes"),
    pytest.param(DECODE, {"content": b""}, 422, "empty", id="latents-empty"),
    pytest.param(DECODE, {"content": b"\0" * 24 * 6}, 422, "at most 5 latents per batch; received 6", id="latents-too-many"),
    pytest.param(DECODE, {"content": NAN_THIRD}, 422, "latent 2: latent values must be finite", id="latent-2-nan"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "request_args", "status", "detail"), ERRORS)
async def test_batch_errors_name_the_item(
    small_limits: httpx.AsyncClient, path: str, request_args: dict[str, Any], status: int, detail: str
) -> None:
    response = await small_limits.post(path, **request_args)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


async def test_multipart_batch_names_the_bad_item(client: httpx.AsyncClient, seven_png: bytes) -> None:
    response = await client.post("/encode/batch", files=_bad_png_batch(seven_png))
    assert response.status_code == 415
    assert response.json()["detail"] == "item 2: received a JPEG image; only PNG is accepted"


async def test_too_many_items_is_refused(small_limits: httpx.AsyncClient, seven_png: bytes) -> None:
    headers = {"content-type": "application/x-npy"}
    response = await small_limits.post("/encode/batch", content=npy(np.zeros((6, 28, 28), np.uint8)), headers=headers)
    assert response.status_code == 422
    assert "at most 5 digits per batch; received 6" in response.json()["detail"]
    response = await small_limits.post("/encode/batch", files=[("img", ("d.png", seven_png))] * 6)
    assert response.status_code in (400, 422)


async def test_micro_batching_changes_no_byte(digits: Digits) -> None:
    results = {}
    for mode in ("off", "on"):
        async with asgi_client(microbatching=mode, microbatch_max_size=8, microbatch_max_wait_us=20_000) as (
            client,
            app,
        ):
            encoded = await asyncio.gather(*(client.post("/encode", files={"img": ("d.png", p)}) for _, p, _ in digits))
            latents = [response.content for response in encoded]
            decoded = await asyncio.gather(*(client.post("/decode", content=z) for z in latents))
            results[mode] = (latents, [response.content for response in decoded])
            if mode == "on":
                codec = app.state.codec
                assert max(codec.encode_batcher.sizes) > 1 and max(codec.decode_batcher.sizes) > 1
                assert max(codec.encode_batcher.sizes) <= 8
    assert results["on"] == results["off"]


async def test_batch_sizes_reach_the_metrics(client: httpx.AsyncClient, digits: Digits) -> None:
    stack = np.stack([pixels for _, _, pixels in digits])
    await client.post("/encode/batch", content=npy(stack), headers={"content-type": "application/x-npy"})
    metrics = (await client.get("/metrics")).text
    labels = f'endpoint="/encode/batch",model_id="{COMMITTED_ID}"'
    assert f"mnist_codec_batch_size_count{{{labels}}} 1.0" in metrics
    assert f"mnist_codec_batch_size_sum{{{labels}}} {len(digits)}.0" in metrics


async def test_micro_batch_sizes_reach_the_metrics(digits: Digits) -> None:
    async with asgi_client(microbatching="on", microbatch_max_size=4, microbatch_max_wait_us=20_000) as (client, app):
        await asyncio.gather(*(client.post("/encode", files={"img": ("d.png", p)}) for _, p, _ in digits[:8]))
        metrics = (await client.get("/metrics")).text
        assert f'mnist_codec_batch_size_sum{{endpoint="/encode",model_id="{app.state.codec.model_id}"}} 8.0' in metrics


async def test_large_batches_split_across_threads_change_no_byte(client: httpx.AsyncClient) -> None:
    digits = np.random.default_rng(5).integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    digits[:, :4] = 0  # some zero borders, like MNIST
    latents = (await client.post("/encode/batch", **as_npy(digits))).content
    first = (await client.post("/encode/batch", **as_npy(digits[:1]))).content
    last = (await client.post("/encode/batch", **as_npy(digits[-1:]))).content
    assert len(latents) == 300 * 24 and latents[:24] == first and latents[-24:] == last
    decoded = np.load(io.BytesIO((await client.post("/decode/batch", content=latents)).content))
    one = np.load(io.BytesIO((await client.post("/decode/batch", content=latents[-24:])).content))
    np.testing.assert_array_equal(decoded[-1:], one)

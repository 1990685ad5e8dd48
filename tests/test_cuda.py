"""The CUDA path, on a machine with an NVIDIA GPU (`make gpu-check`).

Skipped where there is no CUDA device; `make gpu-check` sets MNIST_CODEC_REQUIRE_CUDA=1, and then
a missing device fails instead. For every served model: latents and PNGs byte-identical to the
CPU's (numpy) for the test digits and for random inputs, alone and micro-batched, and the
service on `cuda` with micro-batching on answering concurrent requests with the CPU's bytes.
"""

import asyncio
import os

import httpx
import numpy as np
import pytest
import torch
from conftest import ROOT

from app.codec.codecs import Codec, load_codec, pick_device
from app.main import create_app
from app.settings import Settings

REQUIRED = os.environ.get("MNIST_CODEC_REQUIRE_CUDA") == "1"
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here (make gpu-check runs these on a GPU)")
Digits = list[tuple[str, bytes, np.ndarray]]


def served_checkpoints() -> list[str]:
    settings = Settings()
    return [str(ROOT / path) for path in settings.checkpoints()]


def test_a_cuda_device_is_there_when_required() -> None:
    if REQUIRED:
        assert HAS_CUDA, "make gpu-check needs a CUDA device: torch.cuda.is_available() is False"
        assert pick_device("auto") == "cuda"


def inputs(digits: Digits) -> np.ndarray:
    rng = np.random.default_rng(5)
    real = np.stack([pixels for _, _, pixels in digits])
    return np.concatenate([real, rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)])


@needs_cuda
@pytest.mark.parametrize("path", served_checkpoints())
def test_cuda_bytes_equal_the_cpus(path: str, digits: Digits) -> None:
    cpu, gpu = load_codec(ROOT / path, "cpu"), load_codec(ROOT / path, "cuda")
    assert gpu.device == "cuda" and type(gpu.engine).__name__ == "TorchEngine"
    pixels = inputs(digits)
    latents = [cpu.encode(p) for p in pixels]
    assert [gpu.encode(p) for p in pixels] == latents, "single encodes differ"
    assert gpu.encode_many(pixels) == b"".join(latents), "a batch encode differs"
    assert [gpu.decode(z) for z in latents] == [cpu.decode(z) for z in latents], "decodes differ"


@needs_cuda
@pytest.mark.anyio
async def test_service_on_cuda_micro_batches_with_the_cpus_bytes(digits: Digits) -> None:
    settings = Settings(device="cuda", microbatching="on")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        codecs: list[Codec] = list(app.state.codecs)
        assert all(codec.encode_batcher is not None for codec in codecs), "micro-batching is off on CUDA"
        for codec in codecs:
            cpu = load_codec(next(p for p in settings.checkpoints() if p.stem == codec.name), "cpu")
            pngs = [png for _, png, _ in digits] * 4
            answers = await asyncio.gather(
                *(
                    client.post(f"/encode?model={codec.name}", files={"img": ("d.png", png, "image/png")})
                    for png in pngs
                )
            )
            expected = [cpu.encode(pixels) for _, _, pixels in digits] * 4
            assert [a.content for a in answers] == expected, codec.name
            decoded = await asyncio.gather(*(client.post(f"/decode?model={codec.name}", content=z) for z in expected))
            assert [d.content for d in decoded] == [cpu.decode(z) for z in expected], codec.name
        metrics = (await client.get("/metrics")).text
        assert "mnist_codec_batch_size" in metrics

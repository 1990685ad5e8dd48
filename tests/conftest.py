"""Shared fixtures: the committed weights, a tiny random checkpoint, an in-process client, real digits."""

import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from PIL import Image

from app.codec.model import Autoencoder, save_checkpoint
from app.main import create_app
from app.settings import Settings
from app.training import data
from bench.server import Server

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_WEIGHTS = ROOT / "model_weights" / "mlp6.safetensors"
DIGITS_DIR = Path(__file__).resolve().parent / "data" / "digits"
# GET /models' latent_format of each model: ec64's 24 bytes are a code of 64 integers (no numpy dtype reads them).
LATENT_FORMATS = {
    "mlp6": {"name": "6xf32le", "bytes": 24, "dtype": "<f4", "dims": 6, "coded": False, "symbol_dtype": "<f4"},
    "mlp24": {"name": "24xu8", "bytes": 24, "dtype": "|u1", "dims": 24, "coded": False, "symbol_dtype": "|u1"},
    "ec64": {"name": "24xac", "bytes": 24, "dtype": None, "dims": 64, "coded": True, "symbol_dtype": "<i8"},
}


def npy(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file (a batch request's body)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@asynccontextmanager
async def asgi_client(**settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with the committed weights on the CPU and these settings, inside its lifespan, and a client for it."""
    app = create_app(Settings(weights=COMMITTED_WEIGHTS, device="cpu", **settings))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        yield client, app


@contextmanager
def uvicorn_server(folder: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A real uvicorn (the container's command, bench.server) with the committed weights: ready, then stopped."""
    running = Server(COMMITTED_WEIGHTS, folder / "server.log", env=env)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def png_bytes(image: Image.Image, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def load_digits() -> list[tuple[str, bytes, np.ndarray]]:
    """(name, PNG bytes, (28, 28) uint8 pixels) of the real MNIST test digits under tests/data."""
    digits = []
    for path in sorted(DIGITS_DIR.glob("*.png")):
        data = path.read_bytes()
        digits.append((path.stem, data, np.asarray(Image.open(io.BytesIO(data)))))
    return digits


@pytest.fixture(scope="session", autouse=True)
def _repository_as_working_directory() -> Iterator[None]:
    """Every test runs in the repository, wherever pytest was started.

    `Settings` takes relative paths from the working directory, as the service does in its container;
    its defaults (`model_weights/...`) and the tests' relative paths are the repository's.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        yield


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """uvicorn runs the app on asyncio; async tests do too (not trio, even when installed)."""
    return "asyncio"


@pytest.fixture(scope="session")
def digits() -> list[tuple[str, bytes, np.ndarray]]:
    found = load_digits()
    assert len(found) >= 20, f"expected about 20 digits in {DIGITS_DIR}"
    return found


@pytest.fixture(scope="session")
def seven_png(digits: list[tuple[str, bytes, np.ndarray]]) -> bytes:
    return next(data for name, data, _ in digits if name.endswith("digit7"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised checkpoint: loads like the real one, in no time."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mlp6.safetensors"
    save_checkpoint(path, Autoencoder(), {"note": "random weights for tests"})
    return path


@pytest.fixture
def app() -> FastAPI:
    return create_app(Settings(weights=COMMITTED_WEIGHTS, device="cpu"))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """httpx against the ASGI app, inside its lifespan (the model loaded)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        yield client


@dataclass
class LiveServer:
    url: str
    log: Path  # the server's stdout and stderr
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn on a loopback port, started by `mnist-codec serve` with the committed weights."""
    from bench.server import free_port, wait_ready

    port = free_port()
    log = tmp_path_factory.mktemp("live-server") / "server.log"
    env = {**os.environ, "MNIST_CODEC_WEIGHTS": str(COMMITTED_WEIGHTS), "MNIST_CODEC_DEVICE": "cpu"}
    command = [sys.executable, "-m", "app.client.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", log, process)
    try:
        wait_ready(server.url, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def synthetic_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """IDX files of random digits under tmp_path/mnist, with EXPECTED_MD5 pointing at them."""
    root = tmp_path / "mnist"
    raw = data.raw_dir(root)
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for images, labels, n in [(data.TRAIN_IMAGES, data.TRAIN_LABELS, 96), (data.TEST_IMAGES, data.TEST_LABELS, 32)]:
        data.write_idx(raw / images, rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        data.write_idx(raw / labels, rng.integers(0, 10, size=n, dtype=np.uint8))
    monkeypatch.setattr(data, "EXPECTED_MD5", {name: data.md5_file(raw / name) for name in data.EXPECTED_MD5})
    return root

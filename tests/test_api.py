"""The HTTP contract, through httpx against the ASGI app (lifespan run, committed weights)."""

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from conftest import COMMITTED_WEIGHTS, LATENT_FORMATS, png_bytes
from fastapi import FastAPI
from PIL import Image

from app.codec import codecs
from app.codec.codecs import pick_device
from app.codec.latent import CLAMP
from app.codec.model import load_checkpoint
from app.errors import CheckpointError, StartupError
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.anyio

Digits = list[tuple[str, bytes, np.ndarray]]


async def encode(client: httpx.AsyncClient, png: bytes) -> httpx.Response:
    return await client.post("/encode", files={"img": ("digit.png", png, "image/png")})


async def test_encode_gives_24_bytes_and_the_model_id(
    client: httpx.AsyncClient, app: FastAPI, seven_png: bytes
) -> None:
    response = await encode(client, seven_png)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert len(response.content) == 24
    assert response.headers["x-model-id"] == app.state.codec.model_id


async def test_latent_bytes_are_the_encoders_output(client: httpx.AsyncClient, app: FastAPI, digits: Digits) -> None:
    """Serving arithmetic is float64 rounded to float32 (app/codec/engine.py): the torch model run that way
    gives exactly the bytes, and the float32 model it was trained as agrees to rounding."""
    model = load_checkpoint(app.state.settings.weights).model
    for name, png, pixels in digits:
        served = np.frombuffer((await encode(client, png)).content, "<f4")
        x = torch.tensor(pixels.reshape(1, 784), dtype=torch.float64) / 255
        exact = model.double().encode(x).float().numpy()[0]
        np.testing.assert_array_equal(served, exact, name)
        as_trained = model.float().encode(x.float()).numpy()[0]
        np.testing.assert_allclose(served, as_trained, rtol=0, atol=1e-4, err_msg=name)


async def test_round_trip_gives_the_digit_back(client: httpx.AsyncClient, digits: Digits) -> None:
    for name, png, pixels in digits:
        latent = (await encode(client, png)).content
        response = await client.post("/decode", content=latent, headers={"content-type": "application/octet-stream"})
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
        error = np.abs(np.asarray(image, dtype=np.int16) - pixels).mean()
        assert error < 40, f"{name}: mean absolute error {error:.1f} of 255"


async def test_decode_takes_raw_body_or_multipart(client: httpx.AsyncClient, seven_png: bytes) -> None:
    latent = (await encode(client, seven_png)).content
    raw = await client.post("/decode", content=latent)
    form = await client.post("/decode", files={"latent": ("7.lat", latent, "application/octet-stream")})
    assert raw.status_code == form.status_code == 200
    assert raw.content == form.content


async def test_huge_finite_latent_is_never_a_500(client: httpx.AsyncClient) -> None:
    """ "6xf32le" accepts every finite value and clamps it to [-CLAMP, CLAMP]: 3e38 decodes as CLAMP does."""
    huge = await client.post("/decode", content=np.full(6, 3e38, "<f4").tobytes())
    clamped = await client.post("/decode", content=np.full(6, CLAMP, "<f4").tobytes())
    assert huge.status_code == clamped.status_code == 200, huge.text
    assert Image.open(io.BytesIO(huge.content)).size == (28, 28)
    assert huge.content == clamped.content


def _big_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, size=(1100, 1100), dtype=np.uint8)
    return png_bytes(Image.fromarray(noise), compress_level=0)


ENCODE_ERRORS = [
    pytest.param({"files": {"img": ("d.png", b"", "image/png")}}, 400, "empty", id="empty-file"),
    pytest.param({"files": {"img": ("d.png", b"plain text", "image/png")}}, 400, "not a PNG", id="not-an-image"),
    pytest.param({"files": {"img": ("d.png", b"\x89PNG\r\n\x1a\n" + b"x" * 40)}}, 400, "corrupt PNG", id="png-garbage"),
    pytest.param({"files": {"img": ("d.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 40)}}, 415, "JPEG", id="jpeg"),
    pytest.param({"files": {"img": ("d.png", png_bytes(Image.new("L", (29, 28))))}}, 422, "29x28", id="29x28"),
    pytest.param({"files": {"img": ("d.png", png_bytes(Image.new("L", (1, 1))))}}, 422, "1x1", id="1x1"),
    pytest.param({"files": {"image": ("d.png", b"x")}}, 422, "missing file field 'img'", id="wrong-field-name"),
    pytest.param({"data": {"img": "not a file"}, "files": {"other": ("x", b"x")}}, 422, "file upload", id="text-field"),
    pytest.param({}, 422, "expected multipart/form-data", id="no-body"),
    pytest.param(
        {"content": b"\x89PNG", "headers": {"content-type": "image/png"}}, 422, "multipart", id="not-multipart"
    ),
    pytest.param({"files": {"img": ("big.png", _big_png())}}, 413, "over the limit", id="over-upload-limit"),
]


@pytest.mark.parametrize(("request_args", "status", "detail"), ENCODE_ERRORS)
async def test_encode_errors(client: httpx.AsyncClient, request_args: dict[str, Any], status: int, detail: str) -> None:
    response = await client.post("/encode", **request_args)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert detail in response.json()["detail"]


async def test_truncated_png_is_400(client: httpx.AsyncClient, seven_png: bytes) -> None:
    response = await encode(client, seven_png[: len(seven_png) - 30])
    assert response.status_code == 400
    assert "truncated" in response.json()["detail"] or "corrupt" in response.json()["detail"]


DECODE_ERRORS = [
    pytest.param({"content": b""}, "received 0 bytes", id="empty"),
    pytest.param({"content": b"\0" * 23}, "received 23 bytes", id="23-bytes"),
    pytest.param({"content": b"\0" * 25}, "received 25 bytes", id="25-bytes"),
    pytest.param({"files": {"latent": ("x.lat", b"\0" * 12)}}, "received 12 bytes", id="multipart-12-bytes"),
    pytest.param({"files": {"lat": ("x.lat", b"\0" * 24)}}, "missing file field 'latent'", id="wrong-field"),
    pytest.param({"content": np.array([0, np.nan, 0, 0, 0, 0], "<f4").tobytes()}, "NaN", id="nan"),
    pytest.param({"content": np.array([np.inf, 0, 0, 0, 0, 0], "<f4").tobytes()}, "infinite", id="inf"),
    pytest.param({"content": np.array([-np.inf] * 6, "<f4").tobytes()}, "infinite", id="minus-inf"),
]


@pytest.mark.parametrize(("request_args", "detail"), DECODE_ERRORS)
async def test_decode_errors(client: httpx.AsyncClient, request_args: dict[str, Any], detail: str) -> None:
    response = await client.post("/decode", **request_args)
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    if "received" in detail:
        assert "24 bytes" in response.json()["detail"]


async def test_decode_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/decode", content=b"\0" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


async def test_health_and_readiness(client: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_id"] == app.state.codec.model_id


async def test_not_ready_before_the_model_is_loaded(tiny_weights: Path) -> None:
    app = create_app(Settings(weights=tiny_weights, device="cpu"))  # lifespan not run
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/decode", content=b"\0" * 24)
        assert response.status_code == 503
        assert response.json() == {"detail": "model not loaded"}


async def test_startup_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    app = create_app(Settings(weights=tmp_path / "nope.pt", device="cpu"))
    with pytest.raises(CheckpointError, match="not found"):
        async with app.router.lifespan_context(app):
            pass
    assert app.state.codec is None


async def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path) -> None:
    monkeypatch.setenv("MNIST_CODEC_WEIGHTS", str(tiny_weights))
    monkeypatch.setenv("MNIST_CODEC_DEVICE", "cpu")
    monkeypatch.setenv("MNIST_CODEC_MAX_UPLOAD_BYTES", "100")
    settings = Settings()
    assert (settings.weights, settings.device, settings.max_upload_bytes) == (tiny_weights, "cpu", 100)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        assert (await client.post("/decode", content=b"\0" * 101)).status_code == 413
        assert (await client.post("/decode", content=b"\0" * 24)).status_code == 200


def test_device_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(codecs, "NVIDIA_DRIVER", tmp_path / "no-driver")  # no driver: CPU, without asking torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cpu"
    with pytest.raises(StartupError, match="CUDA is not available"):
        pick_device("cuda")
    (tmp_path / "no-driver").write_text("NVRM version: test\n")  # a driver: torch decides
    assert pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    assert pick_device("cpu") == "cpu"


async def test_openapi_describes_binary_bodies(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    encode_op, decode_op = paths["/encode"]["post"], paths["/decode"]["post"]
    assert encode_op["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["img"]
    assert list(encode_op["responses"]["200"]["content"]) == ["application/octet-stream"]
    assert set(decode_op["requestBody"]["content"]) == {"application/octet-stream", "multipart/form-data"}
    assert list(decode_op["responses"]["200"]["content"]) == ["image/png"]
    for code in ("400", "413", "415", "422"):
        assert "application/json" in encode_op["responses"][code]["content"]


def _flavours(pixels: np.ndarray) -> dict[str, bytes]:
    gray = Image.fromarray(pixels)
    return {
        "L": png_bytes(gray),
        "RGB": png_bytes(gray.convert("RGB")),
        "RGBA": png_bytes(gray.convert("RGBA")),
        "LA": png_bytes(gray.convert("LA")),
        "P": png_bytes(gray.convert("P")),
        "16-bit": png_bytes(Image.fromarray(pixels.astype(np.uint16) * 257)),
        "optimized": png_bytes(gray, optimize=True),
    }


async def test_every_flavour_of_a_digit_gives_the_same_latent(client: httpx.AsyncClient, digits: Digits) -> None:
    for name, _, pixels in digits[:5]:
        latents = {flavour: (await encode(client, data)).content for flavour, data in _flavours(pixels).items()}
        assert len(set(latents.values())) == 1, f"{name}: {latents}"


async def test_latents_are_identical_across_requests_and_restarts(tiny_weights: Path, digits: Digits) -> None:
    runs = []
    for _ in range(2):  # two separate app instances: a restart
        app = create_app(Settings(weights=COMMITTED_WEIGHTS, device="cpu"))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
        ):
            runs.append([(await encode(client, png)).content for _, png, _ in digits])
            runs.append([(await encode(client, png)).content for _, png, _ in digits])
    assert all(run == runs[0] for run in runs)


async def test_decode_checks_the_model_id_it_is_given(client: httpx.AsyncClient, seven_png: bytes) -> None:
    encoded = await encode(client, seven_png)
    same = await client.post("/decode", content=encoded.content, headers={"X-Model-Id": encoded.headers["x-model-id"]})
    assert same.status_code == 200
    other = await client.post("/decode", content=encoded.content, headers={"X-Model-Id": "mlp6-000000000000"})
    assert other.status_code == 409
    assert "mlp6-000000000000" in other.json()["detail"]
    assert encoded.headers["x-model-id"] in other.json()["detail"]


async def test_models_lists_the_loaded_models(client: httpx.AsyncClient, app: FastAPI) -> None:
    body = (await client.get("/models")).json()
    assert body["default"] == "mlp6"
    # Every version, in the settings' order: ec64 twice (v1, whose stored latents decode forever, then v2).
    assert [(m["name"], m["id"]) for m in body["models"]] == [
        ("mlp6", app.state.codec.model_id),
        ("mlp24", "mlp24-697856bfa9de"),
        ("ec64", "ec64-ea9647b7fd42"),
        ("ec64", "ec64-360fddf1aed9"),
    ]
    assert body["names"] == {
        "mlp6": app.state.codec.model_id,
        "mlp24": "mlp24-697856bfa9de",
        "ec64": "ec64-360fddf1aed9",  # the newest version is what the name means
    }
    assert [m["current"] for m in body["models"]] == [True, True, False, True]
    model = body["models"][0]
    assert model["id"] == app.state.codec.model_id and model["default"] is True
    assert model["latent_format"] == LATENT_FORMATS["mlp6"]
    assert model["test_metrics"]["mse"] <= 0.0225 and model["test_metrics"]["psnr_mean_db"] > 17

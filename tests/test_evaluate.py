"""`python -m app.training.evaluate` on a few synthetic digits: the table, the numbers and the plot."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.codec import imaging
from app.codec.codecs import load_codec
from app.codec.model import (
    EntropyCodedArgs,
    EntropyCodedAutoencoder,
    QuantizedArgs,
    QuantizedAutoencoder,
    save_checkpoint,
)
from app.training import evaluate, quality

DIGITS = np.random.default_rng(5).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)


@pytest.fixture
def two_models(tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The service's settings pointed at a tiny mlp6 (the default) and a tiny mlp24."""
    torch.manual_seed(0)
    quantized = tmp_path / "mlp24.safetensors"
    save_checkpoint(quantized, QuantizedAutoencoder(QuantizedArgs(hidden=(16,))), {})
    monkeypatch.setenv("MNIST_CODEC_WEIGHTS", str(tiny_weights))
    monkeypatch.setenv("MNIST_CODEC_MODELS", json.dumps([str(quantized)]))
    return [tiny_weights, quantized]


def test_writes_table_numbers_and_plot(synthetic_mnist: Path, tmp_path: Path, two_models: list[Path]) -> None:
    out = tmp_path / "docs"
    assert evaluate.main(["--limit", "5", "--data-root", str(synthetic_mnist), "--out", str(out)]) == 0

    result = json.loads((out / "rate_distortion.json").read_text())
    assert (
        result["digits"] == 5
        and result["command"] == f"python -m app.training.evaluate --limit 5 --data-root {synthetic_mnist} --out {out}"
    )
    rows = {(r["codec"], r["setting"]): r for r in result["rows"]}
    assert len(rows) == 2 + sum(evaluate.available(name) for name, _ in evaluate.CLASSIC_SETTINGS)
    assert rows["mlp6", "6xf32le"]["mean_bytes"] == rows["mlp24", "24xu8"]["mean_bytes"] == 24
    assert rows["PNG", "optimize"]["lossless"] and rows["PNG", "optimize"]["mean_psnr_db"] == 100
    assert rows["JPEG", "quality 1"]["mean_bytes"] < rows["JPEG", "quality 95"]["mean_bytes"]
    assert {codec for codec, _ in rows} >= {"mlp6", "mlp24", "PNG", "JPEG"}

    table = (out / "rate_distortion.md").read_text()
    assert "| **mlp24** (this service) | 24xu8 | 24.0 |" in table
    assert "| PNG | optimize |" in table and "| lossless |" in table
    assert (out / "rate_distortion.png").read_bytes().startswith(b"\x89PNG")


def test_model_rows_go_through_the_service_codec(tiny_weights: Path) -> None:
    codec = load_codec(tiny_weights, "cpu")
    row = evaluate.measure_model(DIGITS, codec)
    decoded = np.stack([imaging.read_digit(codec.decode(codec.encode(d))) for d in DIGITS])
    assert row.mean_psnr_db == pytest.approx(quality.psnr_db(DIGITS, decoded).mean())
    assert row.mean_ssim == pytest.approx(quality.ssim(DIGITS, decoded).mean())
    assert (row.codec, row.setting, row.mean_bytes) == ("mlp6", "6xf32le", 24)


@pytest.mark.parametrize(
    ("codec", "params"),
    [
        pytest.param(name, params, id=f"{name}-{params.get('quality', 'opt')}")
        for name, params in evaluate.CLASSIC_SETTINGS
    ],
)
def test_classic_round_trip_gives_a_28x28_digit(codec: str, params: dict[str, object]) -> None:
    if not evaluate.available(codec):
        pytest.skip(f"this Pillow cannot write {codec}")
    size, decoded = evaluate.classic_round_trip(DIGITS[0], codec, params)
    assert size > 0 and decoded.shape == (28, 28) and decoded.dtype == np.uint8
    if codec == "PNG":
        np.testing.assert_array_equal(decoded, DIGITS[0])


def test_curve_checkpoints_are_measured_at_their_own_size(
    synthetic_mnist: Path, tmp_path: Path, two_models: list[Path]
) -> None:
    torch.manual_seed(3)
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(16,), code_bytes=32))
    model.build_tables()
    curve = tmp_path / "ec32.safetensors"
    save_checkpoint(curve, model, {})
    out = tmp_path / "docs"
    argv = [
        "--limit",
        "4",
        "--no-classic",
        "--data-root",
        str(synthetic_mnist),
        "--out",
        str(out),
        "--curve",
        str(curve),
    ]
    assert evaluate.main(argv) == 0
    rows = json.loads((out / "rate_distortion.json").read_text())["rows"]
    [row] = [r for r in rows if r["kind"] == "curve"]
    assert (row["codec"], row["setting"], row["mean_bytes"]) == ("ec64 at 32 B", "24xac, 32 bytes", 32)
    assert (
        "| ec64 at 32 B (learned curve, not served) | 24xac, 32 bytes | 32.0 |"
        in (out / "rate_distortion.md").read_text()
    )

"""`python -m app.training.evaluate` on a few synthetic digits: the table, the numbers and the plot."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.codec import imaging
from app.codec.codecs import figures_path, load_codec
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


def test_efforts_measure_every_level_and_write_figures_only_for_the_whole_test_set(
    synthetic_mnist: Path, tmp_path: Path, two_models: list[Path]
) -> None:
    out = tmp_path / "docs"
    argv = ["--limit", "4", "--data-root", str(synthetic_mnist), "--out", str(out), "--no-classic", "--efforts"]
    assert evaluate.main([*argv, "--alone", "2", "--batch", "3"]) == 0
    result = json.loads((out / "rate_distortion.json").read_text())
    levels = [(r["model"], r["level"]) for r in result["efforts"]]
    assert levels == [(m, level) for m in ("mlp6", "mlp24") for level in range(4)]
    assert all(r["digits"] == 4 and r["us_per_digit"] > 0 and r["us_per_digit_batch"] > 0 for r in result["efforts"])
    by_level = {(r["model"], r["level"]): r for r in result["efforts"]}
    base = next(r for r in result["rows"] if r["codec"] == "mlp24")
    assert by_level["mlp24", 0]["psnr_db"] == pytest.approx(base["mean_psnr_db"])  # level 0 is the served pass
    assert "## Encode effort" in (out / "rate_distortion.md").read_text()
    assert "| mlp24 | 3 | 150 steps |" in (out / "rate_distortion.md").read_text()
    assert not any(p.name.endswith(".efforts.json") for p in tmp_path.iterdir())  # 4 digits: not the test set


def test_written_figures_are_what_the_codec_reports(tmp_path: Path, tiny_weights: Path) -> None:
    weights = tmp_path / "mlp6.safetensors"
    weights.write_bytes(tiny_weights.read_bytes())  # the figures go beside it: not beside the shared fixture
    codec = load_codec(weights, "cpu")
    assert all(e.psnr_db is None and e.us_per_digit is None for e in codec.efforts)
    rows = evaluate.measure_efforts(DIGITS, codec, alone=1, batch=2)
    evaluate.write_figures(figures_path(weights), rows, "python -m app.training.evaluate --efforts")
    again = load_codec(weights, "cpu")
    assert [e.psnr_db for e in again.efforts] == [r.psnr_db for r in rows]
    assert [e.us_per_digit for e in again.efforts] == [r.us_per_digit for r in rows]

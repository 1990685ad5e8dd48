"""The committed weights, judged on real MNIST test digits through the service's own code path."""

import json

import numpy as np
import torch
from conftest import COMMITTED_WEIGHTS

from app import imaging
from app.codec import Codec
from app.model import Autoencoder, LoadedModel, load_checkpoint, model_id

# The full test set gives 17.45 dB (model_weights/metrics.json); these 20 digits give 17.40 dB,
# an untrained network 6.4 dB. The bound sits close below the real figure.
MEAN_PSNR_BOUND_DB = 16.5


def psnr_db(original: np.ndarray, decoded: np.ndarray) -> float:
    mse = np.mean((original.astype(np.float64) / 255 - decoded.astype(np.float64) / 255) ** 2)
    return float(10 * np.log10(1 / max(mse, 1e-10)))


def mean_round_trip_psnr(codec: Codec, digits: list[tuple[str, bytes, np.ndarray]]) -> float:
    scores = []
    for _, png, pixels in digits:
        latent = codec.encode(imaging.read_digit(png))
        scores.append(psnr_db(pixels, imaging.read_digit(codec.decode(latent))))
    return float(np.mean(scores))


def test_committed_weights_reach_the_psnr_bound(digits: list[tuple[str, bytes, np.ndarray]]) -> None:
    codec = Codec(load_checkpoint(COMMITTED_WEIGHTS), torch.device("cpu"))
    assert mean_round_trip_psnr(codec, digits) >= MEAN_PSNR_BOUND_DB


def test_the_bound_rejects_untrained_weights(digits: list[tuple[str, bytes, np.ndarray]]) -> None:
    torch.manual_seed(0)
    untrained = Autoencoder().eval()
    loaded = LoadedModel(untrained, model_id(untrained.state_dict()), "mlp6")
    assert mean_round_trip_psnr(Codec(loaded, torch.device("cpu")), digits) < MEAN_PSNR_BOUND_DB - 3


def test_metrics_json_describes_the_committed_weights() -> None:
    metrics = json.loads((COMMITTED_WEIGHTS.parent / "metrics.json").read_text())
    assert metrics["model_id"] == load_checkpoint(COMMITTED_WEIGHTS).model_id
    assert metrics["config"]["epochs"] == 50 and metrics["train_digits"] == 60_000
    assert metrics["test_digits"] == 10_000
    assert metrics["test"]["mse"] <= 0.0225

"""The trainers give the same weights as before the one training loop (issue 20): short runs, pinned model ids.

Each id was recorded from the two copied trainers (`train.py` and `train_ec.py` before the refactor) on
the synthetic digits of `synthetic_mnist`, with torch on one CPU thread. The id hashes the weights, so a
change in the order of random draws, of the sums in a loss or of a single rounding shows here. A machine
whose torch rounds its CPU kernels differently (another torch release, another instruction set) trains
other weights from the first step: there these ids are re-recorded, not the trainers changed.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import COMMITTED_WEIGHTS

from app.training import train, train_ec

EC64_WEIGHTS = COMMITTED_WEIGHTS.parent / "ec64" / "ec64.safetensors"
PINNED = [
    pytest.param("train", ["--epochs", "2", "--batch-size", "16"], "mlp6-0465ed59a517", id="mlp6"),
    pytest.param("train", ["--arch", "mlp24", "--epochs", "2", "--batch-size", "16"], "mlp24-532cff31d83e", id="mlp24"),
    pytest.param("ec", ["--shift", "1"], "ec64-0bdde6a258a0", id="ec64-shift"),
    pytest.param("ec", ["--init-from", str(EC64_WEIGHTS)], "ec64-b5d6d2743dee", id="ec64-init-from"),
    pytest.param(
        "ec", ["--ema", "0.9", "--val-digits", "32", "--weight-decay", "0.01"], "ec64-698bc5a25b41", id="ec64-v2"
    ),
    pytest.param("ec", ["--budget", "hinge", "--bit-reward", "0.01"], "ec64-b69e641e3037", id="ec64-hinge"),
]


@pytest.mark.parametrize(("trainer", "flags", "expected"), PINNED)
def test_short_runs_train_the_recorded_weights(
    synthetic_mnist: Path, tmp_path: Path, trainer: str, flags: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    common = ["--out", str(out), "--data-root", str(synthetic_mnist), "--threads", "1"]
    if trainer == "train":
        assert train.main([*flags, *common, "--device", "cpu"]) == 0
    else:  # both phases (noise, then straight-through), each evaluated
        assert train_ec.main(["--epochs", "2", "--batch-size", "32", "--eval-every", "1", *flags, *common]) == 0
    assert json.loads((out / "metrics.json").read_text())["model_id"] == expected


@pytest.mark.parametrize("trainer", ["train", "ec"])
def test_training_leaves_denormals_as_it_found_them(synthetic_mnist: Path, tmp_path: Path, trainer: str) -> None:
    """Both trainers flush denormals to zero while they train, and only then (the flag is the thread's)."""
    common = ["--out", str(tmp_path / "out"), "--data-root", str(synthetic_mnist), "--epochs", "1"]
    if trainer == "train":
        assert train.main([*common, "--device", "cpu"]) == 0
    else:
        assert train_ec.main([*common, "--batch-size", "48"]) == 0
    assert (torch.tensor([1e-39]) * 1.0).item() > 0, "denormals are still flushed to zero after training"

"""Serving arithmetic: numpy and torch agree, and a digit's bytes never depend on its batch."""

import dataclasses
import sys

import numpy as np
import pytest
from conftest import COMMITTED_WEIGHTS
from torch import nn

from app.codec import checkpoint
from app.codec.engine import NumpyMLP, TorchEngine, make_engine
from app.codec.model import load_checkpoint, numpy_program
from app.errors import CheckpointError

rng = np.random.default_rng(3)


@pytest.fixture(scope="module")
def digits_784(digits: list[tuple[str, bytes, np.ndarray]]) -> np.ndarray:
    real = np.stack([pixels.reshape(784) for _, _, pixels in digits])
    noise = rng.integers(0, 256, size=(300, 784), dtype=np.uint8)
    return np.concatenate([real, noise])


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    return rng.normal(0, 20, size=(300, 6)).astype(np.float32)


def engines() -> tuple[NumpyMLP, TorchEngine]:
    numpy_engine = make_engine(checkpoint.read(COMMITTED_WEIGHTS), "cpu")
    assert isinstance(numpy_engine, NumpyMLP)
    return numpy_engine, TorchEngine(load_checkpoint(COMMITTED_WEIGHTS).model, "cpu")


def test_numpy_and_torch_engines_give_the_same_bytes(digits_784: np.ndarray, latents: np.ndarray) -> None:
    numpy_engine, torch_engine = engines()
    np.testing.assert_array_equal(numpy_engine.forward_encoder(digits_784), torch_engine.forward_encoder(digits_784))
    np.testing.assert_array_equal(numpy_engine.forward_decoder(latents), torch_engine.forward_decoder(latents))


@pytest.mark.parametrize("engine_index", [pytest.param(0, id="numpy"), pytest.param(1, id="torch")])
def test_results_do_not_depend_on_the_batch(engine_index: int, digits_784: np.ndarray, latents: np.ndarray) -> None:
    engine = engines()[engine_index]
    whole = engine.forward_encoder(digits_784)
    singles = np.concatenate([engine.forward_encoder(digits_784[i : i + 1]) for i in range(len(digits_784))])
    order = rng.permutation(len(digits_784))
    shuffled = np.empty_like(whole)
    for chunk in np.array_split(order, 7):  # odd batch sizes, other neighbours
        shuffled[chunk] = engine.forward_encoder(digits_784[chunk])
    assert whole.tobytes() == singles.tobytes() == shuffled.tobytes()

    decoded = engine.forward_decoder(latents)
    one_by_one = np.concatenate([engine.forward_decoder(latents[i : i + 1]) for i in range(len(latents))])
    assert decoded.tobytes() == one_by_one.tobytes()


def test_anything_but_a_plain_mlp_runs_in_torch() -> None:
    class ConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 2, 3), nn.Flatten())
            self.decoder = nn.Sequential(nn.Linear(2, 784), nn.Sigmoid())

    assert numpy_program(ConvNet()) is None  # so its checkpoint carries no numpy program
    no_program = dataclasses.replace(checkpoint.read(COMMITTED_WEIGHTS), numpy_program=None)
    assert isinstance(make_engine(no_program, "cpu"), TorchEngine)


def test_decoder_output_is_rounded_half_to_even_and_clamped() -> None:
    numpy_engine, _ = engines()
    numpy_engine.decoder = [lambda h: np.array([[-0.5, 0.0, 0.5 / 255, 1.5 / 255, 1.0, 7.0]])]
    np.testing.assert_array_equal(numpy_engine.forward_decoder(np.zeros((1, 6), np.float32)), [[0, 0, 0, 2, 255, 255]])


def test_a_network_without_numpy_program_and_no_torch_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU install (no torch), a model numpy cannot run stops the start with what to install."""
    no_program = dataclasses.replace(checkpoint.read(COMMITTED_WEIGHTS), numpy_program=None)
    monkeypatch.setitem(sys.modules, "app.codec.model", None)  # as if torch (which it imports) were missing
    with pytest.raises(CheckpointError, match=r"no numpy program, and serving it needs torch: pip install"):
        make_engine(no_program, "cpu")

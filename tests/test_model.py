from pathlib import Path

import pytest
import torch
from torch import nn

from app.errors import CheckpointError
from app.model import ARCH, Autoencoder, ModelArgs, load_checkpoint, model_id, save_checkpoint


def test_reference_architecture() -> None:
    model = Autoencoder()
    shapes = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, nn.Linear)]
    assert shapes == [(784, 128), (128, 64), (64, 12), (12, 6)]
    shapes = [(m.in_features, m.out_features) for m in model.decoder if isinstance(m, nn.Linear)]
    assert shapes == [(6, 12), (12, 64), (64, 128), (128, 784)]
    kinds = [type(m).__name__ for m in model.encoder]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "ReLU", "Linear", "Identity"]
    assert type(model.decoder[-1]).__name__ == "Sigmoid"
    x = torch.rand(3, 784)
    assert model.encode(x).shape == (3, 6)
    y = model(x)
    assert y.shape == (3, 784) and bool(((y > 0) & (y < 1)).all())


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Autoencoder()
    saved_id = save_checkpoint(tmp_path / "m.pt", model, {"test": {"mse": 0.5}})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.model_id == saved_id == model_id(model.state_dict())
    assert saved_id.startswith(f"{ARCH}-") and len(saved_id) == len(ARCH) + 13
    assert loaded.metadata == {"test": {"mse": 0.5}}
    x = torch.rand(4, 784)
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left its temp file"


def test_model_id_changes_with_any_weight() -> None:
    model = Autoencoder()
    before = model_id(model.state_dict())
    with torch.no_grad():
        model.decoder[0].bias[0] += 1e-6
    assert model_id(model.state_dict()) != before


def _truncated(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "truncated.pt"
    path.write_bytes(tiny_weights.read_bytes()[:1000])
    return path


def _wrong_arch(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "wide.pt"
    save_checkpoint(path, Autoencoder(ModelArgs(hidden=(256, 64, 12))), {})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_args"]["hidden"] = [128, 64, 12]  # claims the reference shape
    torch.save(checkpoint, path)
    return path


def _not_ours(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "plain.pt"
    torch.save(Autoencoder().state_dict(), path)
    return path


def _pickled_object(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "object.pt"
    torch.save(Autoencoder(), path)  # a whole pickled module: refused by weights_only
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda tmp, w: tmp / "missing.pt", "not found", id="missing"),
        pytest.param(_truncated, "unreadable", id="truncated"),
        pytest.param(_wrong_arch, "does not fit", id="wrong-architecture"),
        pytest.param(_not_ours, "not an mnist-codec checkpoint", id="bare-state-dict"),
        pytest.param(_pickled_object, "unreadable", id="pickled-module"),
    ],
)
def test_bad_checkpoints_are_one_line_errors(make, message: str, tmp_path: Path, tiny_weights: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(make(tmp_path, tiny_weights))
    assert "\n" not in str(info.value)

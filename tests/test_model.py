from pathlib import Path

import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

from app.codec import checkpoint
from app.codec.latent import ArithmeticCodedFormat
from app.codec.model import (
    ARCH,
    ARCHITECTURES,
    Autoencoder,
    EntropyCodedAutoencoder,
    QuantizedArgs,
    QuantizedAutoencoder,
    build_model,
    load_checkpoint,
    model_id,
    save_checkpoint,
)
from app.errors import CheckpointError


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
    y, q = model(x)
    assert y.shape == (3, 784) and bool(((y > 0) & (y < 1)).all())
    torch.testing.assert_close(q, model.encode(x), rtol=0, atol=0)  # float32 on the wire: nothing rounded


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Autoencoder()
    saved_id = save_checkpoint(tmp_path / "m.safetensors", model, {"test": {"mse": 0.5}})
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.model_id == saved_id == model_id(model.state_dict())
    assert saved_id.startswith(f"{ARCH}-") and len(saved_id) == len(ARCH) + 13
    assert loaded.metadata == {"test": {"mse": 0.5}}
    x = torch.rand(4, 784)
    torch.testing.assert_close(loaded.model(x).x_hat, model(x).x_hat, rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left its temp file"


def test_model_id_changes_with_any_weight() -> None:
    model = Autoencoder()
    before = model_id(model.state_dict())
    with torch.no_grad():
        model.decoder[0].bias[0] += 1e-6
    assert model_id(model.state_dict()) != before


def test_quantized_architecture() -> None:
    model = QuantizedAutoencoder()
    shapes = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, nn.Linear)]
    assert shapes == [(784, 512), (512, 256), (256, 24)]
    assert type(model.encoder[-1]).__name__ == type(model.decoder[-1]).__name__ == "Sigmoid"
    assert (model.arch, model.latent_format) == ("mlp24", "24xu8")
    z = model.encode(torch.rand(5, 784))
    assert z.shape == (5, 24) and bool(((z > 0) & (z < 1)).all())


def test_quantized_forward_rounds_in_eval_and_adds_noise_in_training() -> None:
    torch.manual_seed(0)
    model = QuantizedAutoencoder()
    z = torch.rand(64, 24)
    torch.testing.assert_close(model.quantize(z, "round"), torch.round(z * 255) / 255, rtol=0, atol=0)
    noise = model.quantize(z, "noise") - z
    assert bool((noise.abs() <= 0.5 / 255 + 1e-7).all()) and noise.std() > 0.1 / 255
    x = torch.rand(8, 784)
    torch.testing.assert_close(model.eval()(x).q, model.quantize(model.encode(x), "round"), rtol=0, atol=0)
    seeded = [model.train()(x, generator=torch.Generator().manual_seed(5)).q for _ in range(2)]
    torch.testing.assert_close(seeded[0], seeded[1], rtol=0, atol=0)  # the noise is the generator's


@pytest.mark.parametrize("arch", ["mlp24", "ec64"])
def test_the_models_rounding_is_the_wire_formats(arch: str) -> None:
    """`quantize(z, "round")`, what training measures, is what a latent's bytes give back to the decoder."""
    torch.manual_seed(3)
    model = build_model(arch, {"hidden": [32]}).eval().requires_grad_(False)
    if isinstance(model, EntropyCodedAutoencoder):
        model.build_tables()
    fmt = model.wire_format()
    z = model.encode(torch.rand(16, 784))
    served = torch.from_numpy(fmt.unpack_many(fmt.pack_many(z.double().numpy())))
    rounded = model.quantize(z, "round")
    if isinstance(fmt, ArithmeticCodedFormat):  # where the coder's rate control moved nothing
        kept = [i for i, row in enumerate(fmt.symbols(z.double().numpy())) if fmt.code(row)[3] == 0]
        assert len(kept) >= 8
        served, rounded = served[kept], rounded[kept]
    torch.testing.assert_close(rounded, served, rtol=0, atol=1e-6)
    straight = model.quantize(z.clone().requires_grad_(), "straight-through")
    torch.testing.assert_close(straight.detach(), model.quantize(z.detach(), "round"), rtol=0, atol=0)


def test_registry_rebuilds_each_architecture_from_its_args() -> None:
    assert set(ARCHITECTURES) == {"mlp6", "mlp24", "ec64"}
    assert isinstance(build_model("mlp6"), Autoencoder)
    model = build_model("mlp24", {"hidden": [64, 32], "latent_dim": 24})
    assert isinstance(model, QuantizedAutoencoder) and model.args == QuantizedArgs(hidden=(64, 32))
    assert isinstance(build_model("ec64", {"hidden": [32]}), EntropyCodedAutoencoder)
    with pytest.raises(ValueError, match="known: mlp6, mlp24, ec64"):
        build_model("conv99")


def test_quantized_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = QuantizedAutoencoder(QuantizedArgs(hidden=(32,)))
    saved_id = save_checkpoint(tmp_path / "q.safetensors", model, {})
    stored = checkpoint.read(tmp_path / "q.safetensors")  # without torch
    assert stored.arch == "mlp24" and stored.model_args["hidden"] == [32] and stored.latent_format == "24xu8"
    loaded = load_checkpoint(tmp_path / "q.safetensors")
    assert loaded.arch == "mlp24" and loaded.model_id == saved_id and saved_id.startswith("mlp24-")
    assert isinstance(loaded.model, QuantizedAutoencoder) and not loaded.model.training
    x = torch.rand(4, 784)
    torch.testing.assert_close(loaded.model(x).x_hat, model.eval()(x).x_hat, rtol=0, atol=0)


def _truncated(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(tiny_weights.read_bytes()[:1000])
    return path


def _rewritten(tmp_path: Path, tiny_weights: Path, **changes: object) -> Path:
    """The tiny checkpoint with header fields changed, written as a consistent file (its id recomputed)."""
    stored = checkpoint.read(tiny_weights)
    for name, value in changes.items():
        setattr(stored, name, value)
    path = tmp_path / "changed.safetensors"
    checkpoint.write(path, stored)
    return path


def _wrong_arch(tmp_path: Path, tiny_weights: Path) -> Path:
    return _rewritten(tmp_path, tiny_weights, model_args={"hidden": [256, 64, 12]})  # not the weights' shape


def _unknown_arch(tmp_path: Path, tiny_weights: Path) -> Path:
    return _rewritten(tmp_path, tiny_weights, arch="transformer")


def _not_ours(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "plain.safetensors"
    save_file({k: v.numpy() for k, v in Autoencoder().state_dict().items()}, path)
    return path


def _damaged(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "damaged.safetensors"
    data = bytearray(tiny_weights.read_bytes())
    data[-3] ^= 0x40  # one bit of the last weight
    path.write_bytes(bytes(data))
    return path


def _torch_pickle(tmp_path: Path, tiny_weights: Path) -> Path:
    path = tmp_path / "old.pt"
    torch.save({"format": 1}, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda tmp, w: tmp / "missing.safetensors", "not found", id="missing"),
        pytest.param(_truncated, "unreadable", id="truncated"),
        pytest.param(_wrong_arch, "does not fit", id="wrong-architecture"),
        pytest.param(_unknown_arch, "'transformer', expected one of: mlp6, mlp24", id="unknown-architecture"),
        pytest.param(_not_ours, "not an mnist-codec checkpoint", id="bare-state-dict"),
        pytest.param(_damaged, "is damaged: its weights hash to mlp6-", id="flipped-bit"),
        pytest.param(
            _torch_pickle,
            r"torch pickle \(format 1\); convert it once: python -m app.codec.convert",
            id="torch-pickle",
        ),
    ],
)
def test_bad_checkpoints_are_one_line_errors(make, message: str, tmp_path: Path, tiny_weights: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(make(tmp_path, tiny_weights))
    assert "\n" not in str(info.value)

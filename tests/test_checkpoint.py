"""Checkpoints without torch: safetensors files, the conversion from .pt, and a CPU service that never imports torch."""

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import COMMITTED_WEIGHTS, ROOT

from app.codec import checkpoint
from app.codec.codecs import Codec, load_codec
from app.codec.engine import NumpyMLP, TorchEngine
from app.codec.model import ARCHITECTURES, EntropyCodedAutoencoder, build_model, model_id, numpy_program
from app.main import create_app
from app.settings import Settings

MLP24_WEIGHTS = ROOT / "model_weights" / "mlp24" / "mlp24.safetensors"
RECORDED = json.loads((ROOT / "tests" / "data" / "served_bytes.json").read_text())
Digits = list[tuple[str, bytes, np.ndarray]]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(COMMITTED_WEIGHTS, "mlp6-40870c98c2d7", id="mlp6"),
        pytest.param(MLP24_WEIGHTS, "mlp24-697856bfa9de", id="mlp24"),
    ],
)
def test_converted_weights_keep_their_model_ids(path: Path, expected: str) -> None:
    """The ids the .pt files had (README, metrics.json): latents stored with them still bind."""
    stored = checkpoint.read(path)
    assert stored.model_id == expected
    assert json.loads((path.parent / "metrics.json").read_text())["model_id"] == expected
    assert stored.numpy_program is not None, "a plain MLP must run in numpy"


@pytest.mark.anyio
async def test_served_bytes_are_todays_for_every_test_digit(digits: Digits) -> None:
    """Latents and PNGs byte for byte as the torch-checkpoint service gave them (tests/data/served_bytes.json)."""
    app = create_app(Settings(device="cpu"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        for model, rows in RECORDED["models"].items():
            for name, png, _ in digits:
                encoded = await client.post(f"/encode?model={model}", files={"img": (name, png, "image/png")})
                assert encoded.content.hex() == rows[f"{name}.png"]["latent"], (model, name)
                decoded = await client.post(f"/decode?model={model}", content=encoded.content)
                assert hashlib.sha256(decoded.content).hexdigest() == rows[f"{name}.png"]["png_sha256"], (model, name)


def _old_format(path: Path, model: torch.nn.Module, arch: str, args: dict[str, object]) -> None:
    """A format-1 checkpoint as the service wrote them before: a torch pickle of a plain dict."""
    torch.save(
        {"format": 1, "arch": arch, "model_args": args, "state_dict": model.state_dict(), "metadata": {"note": "old"}},
        path,
    )


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_convert_any_registered_architecture_keeps_id_and_bytes(arch: str, tmp_path: Path, digits: Digits) -> None:
    torch.manual_seed(3)
    model = build_model(arch).eval()
    if isinstance(model, EntropyCodedAutoencoder):
        model.build_tables()  # an entropy-coded model's checkpoint holds its frequency tables
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(model.args).items()}
    source = tmp_path / f"{arch}.pt"
    _old_format(source, model, arch, args)

    result = subprocess.run(
        [sys.executable, "-m", "app.codec.convert", str(source)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    target = tmp_path / f"{arch}.safetensors"
    assert f"-> {target}: {model_id(model.state_dict(), arch)} (model id unchanged)" in result.stdout

    converted = load_codec(target, "cpu")
    assert converted.model_id == model_id(model.state_dict(), arch) and converted.metadata == {"note": "old"}
    assert isinstance(converted.engine, NumpyMLP)
    in_torch = Codec(checkpoint.read(target), "cpu")
    in_torch.engine = TorchEngine(model, "cpu")  # the torch module itself, in float64
    for _, _, pixels in digits:
        latent = converted.encode(pixels)
        assert latent == in_torch.encode(pixels)
        assert converted.decode(latent) == in_torch.decode(latent)


def test_convert_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a pickle")
    result = subprocess.run(
        [sys.executable, "-m", "app.codec.convert", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith(f"error: checkpoint {bad} is unreadable")
    assert not (tmp_path / "bad.safetensors").exists()


def test_show_says_what_a_checkpoint_holds() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.codec.checkpoint", "show", str(COMMITTED_WEIGHTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0
    assert "mlp6-40870c98c2d7: architecture mlp6" in result.stdout and "runs in numpy on the CPU" in result.stdout


def test_a_network_numpy_cannot_run_has_no_program() -> None:
    class Gelu(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(784, 6), torch.nn.GELU())
            self.decoder = torch.nn.Sequential(torch.nn.Linear(6, 784), torch.nn.Sigmoid())

    assert numpy_program(Gelu()) is None
    assert numpy_program(build_model("mlp6")) == {
        "encoder": [["linear", "encoder.0"], ["relu"], ["linear", "encoder.2"], ["relu"], ["linear", "encoder.4"],
                    ["relu"], ["linear", "encoder.6"], ["identity"]],
        "decoder": [["linear", "decoder.0"], ["relu"], ["linear", "decoder.2"], ["relu"], ["linear", "decoder.4"],
                    ["relu"], ["linear", "decoder.6"], ["sigmoid"]],
    }  # fmt: skip


def test_the_cpu_service_never_imports_torch() -> None:
    """Start-up (device 'auto' where no NVIDIA driver is loaded), both models, and requests: torch stays out."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from fastapi.testclient import TestClient
        from app.main import create_app
        from app.settings import Settings
        png = open("tests/data/digits/test0000_digit7.png", "rb").read()
        device = "cpu" if Path("/proc/driver/nvidia/version").exists() else "auto"
        with TestClient(create_app(Settings(device=device))) as client:
            for model in ("mlp6", "mlp24"):
                latent = client.post(f"/encode?model={model}", files={"img": ("7.png", png, "image/png")}).content
                assert client.post(f"/decode?model={model}", content=latent).status_code == 200
            assert client.get("/readyz").json()["device"] == "cpu"
        print("torch imported:", "torch" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "torch imported: False"  # after the JSON access lines


@pytest.mark.parametrize(
    ("path", "model_id", "trained_at"),
    [
        pytest.param("mlp6.safetensors", "mlp6-40870c98c2d7", "2026-11-25T15:53:38+00:00", id="mlp6"),
        pytest.param("mlp24/mlp24.safetensors", "mlp24-697856bfa9de", "2026-11-25T16:58:02+00:00", id="mlp24"),
        pytest.param("ec64/ec64.safetensors", "ec64-ea9647b7fd42", "2026-11-26T03:06:52+00:00", id="ec64"),
    ],
)
def test_the_committed_checkpoints_say_when_they_were_trained(path: str, model_id: str, trained_at: str) -> None:
    """Stamped with the date git first recorded their weights; the ids (and so the stored latents) are unchanged."""
    loaded = checkpoint.read(ROOT / "model_weights" / path)
    assert (loaded.model_id, loaded.trained_at) == (model_id, trained_at)


def test_stamp_sets_trained_at_and_keeps_the_id(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    target.write_bytes(COMMITTED_WEIGHTS.read_bytes())
    before = checkpoint.read(target)
    run = [sys.executable, "-m", "app.codec.checkpoint", "stamp", str(target)]
    result = subprocess.run(
        [*run, "--trained-at", "2026-01-02T03:04:05.6+01:00"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    after = checkpoint.read(target)
    assert after.model_id == before.model_id and after.trained_at == "2026-01-02T02:04:05+00:00"
    assert after.metadata == {**before.metadata, "trained_at": "2026-01-02T02:04:05+00:00"}
    bad = subprocess.run([*run, "--trained-at", "last week"], capture_output=True, text=True, cwd=ROOT)
    assert (
        bad.returncode == 1
        and bad.stderr.startswith("error: ")
        and checkpoint.read(target).trained_at == after.trained_at
    )

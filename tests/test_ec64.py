"""ec64 and its "24xac" format: every input fits 24 bytes, any 24 bytes decode, the service serves it."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import LATENT_FORMATS, ROOT, png_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.codec import arith, imaging, latent
from app.codec.codecs import Codec, load_codec
from app.codec.engine import NumpyMLP, TorchEngine, make_engine
from app.codec.model import EntropyCodedArgs, EntropyCodedAutoencoder, checkpoint_of, load_checkpoint, save_checkpoint
from app.errors import CheckpointError, LatentError
from app.main import create_app
from app.settings import Settings
from app.training import train_ec

EC64_WEIGHTS = ROOT / "model_weights" / "ec64" / "ec64.safetensors"


def tiny_model(seed: int = 2) -> EntropyCodedAutoencoder:
    torch.manual_seed(seed)
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(32,)))
    model.build_tables()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_ec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "ec64.safetensors"
    save_checkpoint(path, tiny_model(), {"test": {"served_psnr_mean_db": 8.5}})
    return path


@pytest.fixture(scope="module")
def committed() -> Codec:
    return load_codec(EC64_WEIGHTS, "cpu")


def checkerboard(cell: int) -> np.ndarray:
    y, x = np.indices((28, 28))
    return (((y // cell + x // cell) % 2) * 255).astype(np.uint8)


ADVERSARIAL = {
    "all-black": np.zeros((28, 28), np.uint8),
    "all-white": np.full((28, 28), 255, np.uint8),
    "mid-gray": np.full((28, 28), 128, np.uint8),
    "noise": np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8),
    "binary-noise": (np.random.default_rng(1).integers(0, 2, (28, 28)) * 255).astype(np.uint8),
    "checkerboard-1": checkerboard(1),
    "checkerboard-2": checkerboard(2),
    "checkerboard-4": checkerboard(4),
    "inverted-checkerboard": 255 - checkerboard(1),
    "white-frame": np.pad(np.zeros((24, 24), np.uint8), 2, constant_values=255),
    "stripes": np.tile((np.arange(28) % 2 * 255).astype(np.uint8), (28, 1)),
}


# --------------------------------------------------------------------------- the model, its tables, its engine


def test_tables_are_integers_stored_with_the_weights_and_fit_by_construction() -> None:
    model = tiny_model()
    assert model.table_offsets.dtype == model.table_freqs.dtype == torch.int64
    assert {"table_offsets", "table_freqs"} <= set(model.state_dict())
    tables = model.frequency_tables()
    assert tables.dims == 64 and all(sum(t) == arith.TOTAL for t in tables.freqs)
    assert arith.encode_symbols(tables, tables.mode)[1] <= 192


def test_a_checkpoint_without_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec64.safetensors"
    save_checkpoint(path, EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(32,))), {})
    with pytest.raises(CheckpointError, match="does not fit the ec64 architecture"):
        load_checkpoint(path)


def test_tables_whose_most_probable_latent_does_not_fit_are_refused() -> None:
    table = [arith.TOTAL // 16] * 16
    table[0], table[5] = table[0] - 1, table[5] + 1  # the mode, 5, has about 4 bits: 64 of them are 256 bits
    flat = arith.FrequencyTables([0] * 64, [table] * 64)
    with pytest.raises(ValueError, match="could not make every digit fit"):
        latent.ArithmeticCodedFormat(flat)


def test_numpy_engine_runs_gelu_as_torch_does() -> None:
    model = tiny_model()
    numpy_engine = make_engine(checkpoint_of(model, {}), "cpu")
    assert isinstance(numpy_engine, NumpyMLP)
    torch_engine = TorchEngine(tiny_model(), "cpu")
    pixels = np.random.default_rng(4).integers(0, 256, (50, 784), dtype=np.uint8)
    np.testing.assert_allclose(
        numpy_engine.forward_encoder(pixels), torch_engine.forward_encoder(pixels), rtol=1e-6, atol=1e-6
    )
    z = np.random.default_rng(5).integers(-8, 8, (50, 64)).astype(np.float32)
    assert np.abs(numpy_engine.forward_decoder(z).astype(int) - torch_engine.forward_decoder(z).astype(int)).max() <= 1


# --------------------------------------------------------------------------- the format


def test_pack_is_24_bytes_and_unpack_gives_back_the_integers_sent() -> None:
    fmt = tiny_model().wire_format()
    assert isinstance(fmt, latent.ArithmeticCodedFormat) and fmt.nbytes == 24
    for seed in range(50):
        z = np.random.default_rng(seed).normal(0, 3, 64).astype(np.float32)
        sent, m, k, _ = fmt.code(z)
        data = fmt.pack(z)
        assert len(data) == 24 and k <= 192
        assert data == arith.code_to_bytes(m, k, 24)
        np.testing.assert_array_equal(fmt.unpack(data), sent.astype(np.float32))
        assert fmt.pack(fmt.unpack(data)) == data  # the integers sent code to the same bytes


def test_latents_far_off_the_prior_are_moved_until_they_fit() -> None:
    fmt = tiny_model().wire_format()
    assert isinstance(fmt, latent.ArithmeticCodedFormat)
    z = np.full(64, 1e6, np.float32)
    _sent, _, k, steps = fmt.code(z)
    assert k <= 192 and steps > 0
    assert len(fmt.pack(z)) == 24
    assert len(fmt.pack(np.full(64, -3e38, np.float32))) == 24


@given(data=st.binary(min_size=24, max_size=24))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_24_bytes_decode_to_integers_inside_the_tables(data: bytes) -> None:
    fmt = FORMAT
    z = fmt.unpack(data)
    assert z.shape == (64,) and z.dtype == np.float32
    assert np.array_equal(z, np.rint(z))
    assert ((z >= fmt.tables.lo) & (z <= fmt.tables.hi)).all()


FORMAT = tiny_model().wire_format()
assert isinstance(FORMAT, latent.ArithmeticCodedFormat)


@pytest.mark.parametrize("size", [0, 6, 23, 25, 47])
def test_other_lengths_are_a_latent_error_naming_the_size(size: int) -> None:
    with pytest.raises(LatentError, match=f"received {size} bytes"):
        FORMAT.unpack(b"\x00" * size)
    if size % 24:
        with pytest.raises(LatentError, match="multiple of 24 bytes"):
            FORMAT.unpack_many(b"\x00" * size)


def test_unpack_many_is_unpack_one_by_one() -> None:
    rng = np.random.default_rng(9)
    blobs = [rng.integers(0, 256, 24, dtype=np.uint8).tobytes() for _ in range(5)]
    many = FORMAT.unpack_many(b"".join(blobs))
    np.testing.assert_array_equal(many, np.stack([FORMAT.unpack(b) for b in blobs]))


# --------------------------------------------------------------------------- the committed weights


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_encode_to_exactly_24_bytes(committed: Codec, name: str) -> None:
    pixels = ADVERSARIAL[name]
    data = committed.encode(pixels)
    assert len(data) == 24
    assert committed.encode(imaging.read_digit(png_bytes(Image.fromarray(pixels)))) == data
    assert imaging.read_digit(committed.decode(data)).shape == (28, 28)


def test_the_same_digit_gives_the_same_bytes_alone_and_batched(
    committed: Codec, digits: list[tuple[str, bytes, np.ndarray]]
) -> None:
    pixels = np.stack([p for _, _, p in digits] + list(ADVERSARIAL.values()))
    batched = committed.encode_many(pixels)
    alone = b"".join(committed.encode(p) for p in pixels)
    shuffled = committed.encode_many(pixels[::-1])
    assert batched == alone
    assert shuffled == b"".join(alone[i * 24 : (i + 1) * 24] for i in reversed(range(len(pixels))))


@given(data=st.binary(min_size=24, max_size=24))
@settings(max_examples=100, deadline=None)
def test_any_24_bytes_decode_to_a_digit_with_the_committed_weights(data: bytes) -> None:
    codec = _committed()
    png = codec.decode(data)
    assert imaging.read_digit(png).shape == (28, 28)
    assert codec.decode(data) == png  # and always to the same digit


_CODECS: dict[str, Codec] = {}


def _committed() -> Codec:
    if "ec64" not in _CODECS:
        _CODECS["ec64"] = load_codec(EC64_WEIGHTS, "cpu")
    return _CODECS["ec64"]


def test_a_restart_gives_the_same_bytes(digits: list[tuple[str, bytes, np.ndarray]]) -> None:
    pixels = np.stack([p for _, _, p in digits] + list(ADVERSARIAL.values()))
    first = load_codec(EC64_WEIGHTS, "cpu").encode_many(pixels)
    second = load_codec(EC64_WEIGHTS, "cpu").encode_many(pixels)
    assert first == second


def test_metrics_json_describes_the_committed_weights(committed: Codec) -> None:
    metrics = json.loads((EC64_WEIGHTS.parent / "metrics.json").read_text())
    assert metrics["model_id"] == committed.model_id
    assert metrics["test_digits"] == 10_000 and metrics["train_digits"] == 60_000
    coded = metrics["coded"]
    assert coded["code_bits_sent"]["max"] <= 192 and coded["digits"] == 10_000
    assert metrics["test"]["psnr_mean_db"] == coded["psnr_mean_db"] >= 26.5


# --------------------------------------------------------------------------- the service


async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        yield client


@pytest.fixture
async def ec_client(tiny_weights: Path, tiny_ec: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(Settings(weights=tiny_weights, models=[tiny_ec], device="cpu")):
        yield client


@pytest.mark.anyio
async def test_models_lists_ec64_with_its_format(ec_client: httpx.AsyncClient) -> None:
    body = (await ec_client.get("/models")).json()
    models = {m["name"]: m for m in body["models"]}
    assert body["default"] == "mlp6" and models["ec64"]["default"] is False
    assert models["ec64"]["latent_format"] == LATENT_FORMATS["ec64"]
    assert models["ec64"]["id"].startswith("ec64-") and models["ec64"]["test_psnr_db"] == 8.5


@pytest.mark.anyio
async def test_encode_decode_and_batch_with_model_ec64(
    ec_client: httpx.AsyncClient, digits: list[tuple[str, bytes, np.ndarray]]
) -> None:
    files = [("img", (f"{n}.png", png)) for n, png, _ in digits]
    batch = await ec_client.post("/encode/batch?model=ec64", files=files)
    assert batch.status_code == 200 and len(batch.content) == 24 * len(digits)
    singles = [await ec_client.post("/encode?model=ec64", files={"img": ("d.png", png)}) for _, png, _ in digits]
    assert all(s.status_code == 200 and len(s.content) == 24 for s in singles)
    assert batch.content == b"".join(s.content for s in singles)
    model_id = singles[0].headers["x-model-id"]
    one = await ec_client.post("/decode", content=singles[0].content, headers={"X-Model-Id": model_id})
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    decoded = await ec_client.post("/decode/batch?model=ec64", content=batch.content)
    assert decoded.status_code == 200
    array = np.load(__import__("io").BytesIO(decoded.content))
    assert array.shape == (len(digits), 28, 28)
    assert array[0].tobytes() == imaging.read_digit(one.content).tobytes()


@pytest.mark.anyio
async def test_decode_any_24_bytes_or_a_422(ec_client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(12)
    for body in [b"\x00" * 24, b"\xff" * 24, *(rng.integers(0, 256, 24, dtype=np.uint8).tobytes() for _ in range(30))]:
        response = await ec_client.post("/decode?model=ec64", content=body)
        assert response.status_code == 200 and imaging.read_digit(response.content).shape == (28, 28)
    short = await ec_client.post("/decode?model=ec64", content=b"\x00" * 23)
    assert short.status_code == 422 and "received 23 bytes" in short.json()["detail"]


# --------------------------------------------------------------------------- the trainer


def test_train_ec_dry_run_writes_a_checkpoint_the_service_loads(synthetic_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "ec"
    assert train_ec.main(["--dry-run", "--out", str(out), "--data-root", str(synthetic_mnist)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "ec64.safetensors",
        "state.pt",
        "metrics.json",
        "loss_curve.png",
        "reconstructions.png",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"].startswith("python -m app.training.train_ec --dry-run")
    assert metrics["epochs_trained"] == 1 and metrics["coded"]["code_bits_sent"]["max"] <= 192
    codec = load_codec(out / "ec64.safetensors", "cpu")
    assert codec.model_id == metrics["model_id"] and len(codec.encode(ADVERSARIAL["noise"])) == 24

    again = tmp_path / "again"
    argv = [
        "--from-state",
        str(out / "state.pt"),
        "--out",
        str(again),
        "--limit",
        "32",
        "--data-root",
        str(synthetic_mnist),
    ]
    assert train_ec.main(argv) == 0
    assert json.loads((again / "metrics.json").read_text())["model_id"] == metrics["model_id"]


@pytest.mark.anyio
async def test_the_service_refuses_a_curve_model_of_another_code_size(tiny_weights: Path, tmp_path: Path) -> None:
    """ec64 trained for 32 bytes (the rate-distortion study) loads for the evaluation, never for the API."""
    torch.manual_seed(3)
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(16,), code_bytes=32))
    model.build_tables()
    curve = tmp_path / "ec32.safetensors"
    save_checkpoint(curve, model, {})
    study = load_codec(curve, "cpu")  # what `python -m app.training.evaluate --curve` loads
    assert study.format.nbytes == 32 and len(study.encode(np.zeros((28, 28), np.uint8))) == 32
    app = create_app(Settings(weights=tiny_weights, models=[curve], device="cpu"))
    with pytest.raises(CheckpointError) as info:
        async with app.router.lifespan_context(app):
            pass
    assert str(info.value) == (
        f"checkpoint {curve} codes 32-byte latents; the service serves 24-byte latents only "
        "(evaluate it with python -m app.training.evaluate --curve)"
    )
    assert app.state.codec is None

"""Encode effort (app.codec.search): the gradient, the levels, determinism, the bounds."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from app.codec import engine, search
from app.codec.codecs import Codec, figures_path, load_codec, read_figures
from app.codec.model import load_checkpoint
from app.errors import EffortError, RequestFormatError

WEIGHTS = {
    "mlp6": ROOT / "model_weights" / "mlp6.safetensors",
    "mlp24": ROOT / "model_weights" / "mlp24" / "mlp24.safetensors",
    "ec64": ROOT / "model_weights" / "ec64" / "ec64.safetensors",
}
RECORDED = json.loads((ROOT / "tests" / "data" / "served_bytes.json").read_text())
EFFORT_BYTES = ROOT / "tests" / "data" / "effort_bytes.json"
Digits = list[tuple[str, bytes, np.ndarray]]
ALL = search.Recipe(0).candidates


@pytest.fixture(scope="module")
def codecs() -> dict[str, Codec]:
    return {name: load_codec(path, "cpu") for name, path in WEIGHTS.items()}


def stack(digits: Digits) -> np.ndarray:
    return np.stack([pixels for _, _, pixels in digits])


# --------------------------------------------------------------------------- the gradient


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_the_decoder_gradient_is_autograds_in_float64(name: str) -> None:
    """engine.backward through linear, ReLU, GELU (tanh form) and sigmoid, against torch autograd."""
    model = load_checkpoint(WEIGHTS[name]).model.double()
    layers = load_codec(WEIGHTS[name], "cpu").engine.decoder  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 2.0, (9, model.args.latent_dim))
    g_out = rng.normal(0.0, 1.0, (9, 784))
    y, trace = engine.forward_trace(layers, z)
    ours = engine.backward(layers, trace, g_out)

    zt = torch.from_numpy(z).requires_grad_(True)
    yt = model.decode(zt)
    (theirs,) = torch.autograd.grad((yt * torch.from_numpy(g_out)).sum(), zt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13, atol=1e-15)
    scale = float(np.abs(theirs.numpy()).max())
    assert np.abs(ours - theirs.numpy()).max() <= 1e-12 * scale


@pytest.mark.parametrize(
    "activation",
    [
        pytest.param("relu", id="relu"),
        pytest.param("sigmoid", id="sigmoid"),
        pytest.param("gelu_tanh", id="gelu-tanh"),
        pytest.param("identity", id="identity"),
    ],
)
def test_each_activations_derivative_is_autograds(activation: str) -> None:
    rng = np.random.default_rng(3)
    weight, bias = rng.normal(0, 1, (5, 7)), rng.normal(0, 1, 7)
    layers = engine.numpy_layers([["linear", "a"], [activation]], {"a.weight": weight.T, "a.bias": bias})
    h = rng.normal(0, 3, (11, 5))
    g = rng.normal(0, 1, (11, 7))
    _, trace = engine.forward_trace(layers, h)
    ours = engine.backward(layers, trace, g)
    module = {
        "relu": torch.nn.ReLU(),
        "sigmoid": torch.nn.Sigmoid(),
        "gelu_tanh": torch.nn.GELU(approximate="tanh"),
        "identity": torch.nn.Identity(),
    }[activation]
    ht = torch.from_numpy(h).requires_grad_(True)
    out = module(ht @ torch.from_numpy(weight) + torch.from_numpy(bias))
    (theirs,) = torch.autograd.grad((out * torch.from_numpy(g)).sum(), ht)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-14)


def test_the_snapped_sums_are_exact_in_any_order() -> None:
    """The argument for determinism: snapped operands make every float64 partial sum exact."""
    rng = np.random.default_rng(5)
    a = search.snap_rows(rng.normal(0, 3, (4, 784)))
    w = search.snap_matrix(rng.normal(0, 5, (784, 64)))
    blas = a @ w
    forward = np.zeros((4, 64))
    for k in range(784):
        forward += a[:, k : k + 1] * w[k]
    backward = np.zeros((4, 64))
    for k in reversed(range(784)):
        backward += a[:, k : k + 1] * w[k]
    assert (blas == forward).all() and (blas == backward).all()
    assert (a[1:2] @ w == blas[1:2]).all()  # alone (BLAS gemv) as in a batch (gemm)


# --------------------------------------------------------------------------- the levels


def test_every_model_has_levels_whose_recipes_are_fixed(codecs: dict[str, Codec]) -> None:
    pinned = {  # (steps, sweeps, lr, lr_end, candidates) per level: changing one changes the bytes of that level
        "24xac": [(0, 0, 0.0, 0.0, ALL), (10, 0, 0.3, 0.05, ALL), (20, 0, 0.2, 0.05, ALL), (40, 2, 0.2, 0.05, 8)],
        "24xu8": [(0, 0, 0.0, 0.0, ALL), (10, 0, 5.0, 0.5, ALL), (20, 0, 5.0, 0.5, ALL), (150, 0, 6.0, 0.05, ALL)],
        "6xf32le": [(0, 0, 0.0, 0.0, ALL), (10, 0, 0.5, 0.05, ALL), (30, 0, 0.5, 0.02, ALL), (100, 0, 0.5, 0.01, ALL)],
    }
    for fmt, levels in pinned.items():
        assert [(r.steps, r.sweeps, r.lr, r.lr_end, r.candidates) for r in search.RECIPES[fmt]] == levels
    for codec in codecs.values():
        assert [e.level for e in codec.efforts] == list(range(codec.max_effort + 1))
        assert codec.default_effort == 0 and codec.efforts[0].steps == 0 and codec.efforts[0].cost == 1
        assert all(a.cost < b.cost for a, b in zip(codec.efforts, codec.efforts[1:], strict=False))


@pytest.mark.parametrize(
    ("value", "level"),
    [
        pytest.param(None, 0, id="default"),
        pytest.param(0, 0, id="int-0"),
        pytest.param(3, 3, id="int-highest"),
        pytest.param("2", 2, id="decimal-string"),
    ],
)
def test_effort_accepts_the_levels(codecs: dict[str, Codec], value: int | str | None, level: int) -> None:
    assert codecs["ec64"].effort(value).level == level


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(7, id="too-high"),
        pytest.param(-1, id="negative"),
        pytest.param("4", id="string-too-high"),
        pytest.param("1.5", id="not-an-integer"),
        pytest.param("", id="empty"),
        pytest.param(" 1", id="space"),
        pytest.param("-0", id="signed"),
        pytest.param("\u0661", id="arabic-indic-digit"),
        pytest.param("9" * 400, id="huge"),
        pytest.param(True, id="bool"),
    ],
)
def test_effort_refuses_anything_else_naming_the_range(codecs: dict[str, Codec], value: int | str) -> None:
    with pytest.raises(EffortError) as caught:
        codecs["ec64"].effort(value)
    assert isinstance(caught.value, RequestFormatError)  # 422 through the existing mapping
    message = str(caught.value)
    assert message.startswith("effort must be an integer from 0 to 3 for model ec64; got ")
    assert len(message) < 120


def test_encode_refuses_an_effort_out_of_range(codecs: dict[str, Codec], digits: Digits) -> None:
    with pytest.raises(EffortError, match="from 0 to 3 for model mlp24; got '9'"):
        codecs["mlp24"].encode(digits[0][2], 9)


def test_effort_0_is_todays_bytes(codecs: dict[str, Codec], digits: Digits) -> None:
    for name in ("mlp6", "mlp24"):
        recorded = RECORDED["models"][name]
        batch = codecs[name].encode_many(stack(digits), 0)
        for i, (stem, _, pixels) in enumerate(digits):
            want = bytes.fromhex(recorded[stem + ".png"]["latent"])
            assert codecs[name].encode(pixels, 0) == want == batch[24 * i : 24 * i + 24]


def test_search_improves_every_model(codecs: dict[str, Codec], digits: Digits) -> None:
    from app.training import quality

    pixels = stack(digits)
    for codec in codecs.values():
        psnr = []
        for level in (0, codec.max_effort):
            z = codec.format.unpack_many(codec.encode_many(pixels, level))
            psnr.append(float(quality.psnr_db(pixels, codec.decode_many(z)).mean()))
        assert psnr[1] > psnr[0] + 0.2, (codec.name, psnr)


def test_ec64_codes_fit_at_every_level(codecs: dict[str, Codec], digits: Digits) -> None:
    codec = codecs["ec64"]
    noise = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    pixels = np.concatenate([stack(digits)[:6], noise])
    for level in range(1, codec.max_effort + 1):
        data = codec.encode_many(pixels, level)
        z = codec.format.unpack_many(data)
        for row in z:  # the bytes are the shortest code of integers that fit
            _, _, k, steps = codec.format.code(row)  # type: ignore[attr-defined]
            assert k <= 192 and steps == 0


# --------------------------------------------------------------------------- determinism


def _hostile(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    out[::3] = (out[::3] > 128) * 255
    return out.astype(np.uint8)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_a_digits_bytes_do_not_depend_on_its_batch(codecs: dict[str, Codec], digits: Digits, name: str) -> None:
    """Alone, in batches of 2, 7 and all, shuffled: the same bytes at every level."""
    codec = codecs[name]
    pixels = np.concatenate([stack(digits), _hostile(4, 1)])
    n = len(pixels)
    order = np.random.default_rng(11).permutation(n)
    for level in range(1, codec.max_effort + 1):
        alone = [codec.encode(p, level) for p in pixels]
        assert b"".join(alone) == codec.encode_many(pixels, level)
        shuffled = codec.encode_many(pixels[order], level)
        assert [shuffled[24 * j : 24 * j + 24] for j in range(n)] == [alone[i] for i in order]
        for size in (2, 7):
            chunks = b"".join(codec.encode_many(pixels[i : i + size], level) for i in range(0, n, size))
            assert chunks == b"".join(alone)


def test_a_batch_of_1000_gives_each_digit_its_own_bytes(codecs: dict[str, Codec], digits: Digits) -> None:
    """1,000 digits (the test digits, shifted copies and hostile ones) in one batch, in batches of 64
    and shuffled: the bytes of digits taken alone."""
    base = stack(digits)
    shifted = [np.roll(base, shift, axis=axis) for shift in (1, 2, -1, -2) for axis in (1, 2)]
    pixels = np.concatenate([base, *shifted, _hostile(1000 - 9 * len(base), 3)])[:1000]
    assert len(pixels) == 1000
    for name, level in (("ec64", 1), ("mlp24", 1), ("ec64", 3)):
        codec = codecs[name]
        sample = range(0, 1000, 97) if level < 3 else range(0, 1000, 331)
        if level == 3:  # the costliest level: 200 digits, sizes 64 and all
            pixels = pixels[::5]
            sample = range(0, 200, 41)
        n = len(pixels)
        whole = codec.encode_many(pixels, level)
        assert b"".join(codec.encode_many(pixels[i : i + 64], level) for i in range(0, n, 64)) == whole
        order = np.random.default_rng(4).permutation(n)
        shuffled = codec.encode_many(pixels[order], level)
        position = np.argsort(order)
        assert b"".join(shuffled[24 * p : 24 * p + 24] for p in position) == whole
        for i in sample:
            assert codec.encode(pixels[i], level) == whole[24 * i : 24 * i + 24]


def test_an_empty_batch_is_empty_at_every_level(codecs: dict[str, Codec]) -> None:
    for codec in codecs.values():
        for level in range(codec.max_effort + 1):
            assert codec.encode_many(np.zeros((0, 28, 28), np.uint8), level) == b""


def test_bytes_do_not_depend_on_the_chunk_sizes(
    codecs: dict[str, Codec], digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 1,000 is searched in chunks: other chunk sizes give the same bytes (the sums are exact)."""
    codec = codecs["ec64"]
    pixels = np.concatenate([stack(digits), _hostile(4, 2)])
    want = codec.encode_many(pixels, 2)
    monkeypatch.setattr(search, "CHUNK", 3)
    monkeypatch.setattr(search, "SWEEP_CHUNK", 5)
    assert codec.encode_many(pixels, 2) == want
    big = np.concatenate([pixels] * 3)
    monkeypatch.setattr(search, "CHUNK", 64)
    assert codec.encode_many(big, 1) == codec.encode_many(pixels, 1) * 3


def _digest(codecs: dict[str, Codec], pixels: np.ndarray) -> dict[str, list[str]]:
    return {
        name: [hashlib.sha256(codec.encode_many(pixels, level)).hexdigest() for level in range(codec.max_effort + 1)]
        for name, codec in codecs.items()
    }


def test_the_bytes_of_every_level_are_the_recorded_ones_after_a_restart(
    codecs: dict[str, Codec], digits: Digits
) -> None:
    """tests/data/effort_bytes.json: the sha256 of the test digits' latents, per model and level,
    recorded by another process; this one (and a fresh one) must give them again."""
    pixels = stack(digits)
    recorded = json.loads(EFFORT_BYTES.read_text())
    assert recorded["digits"] == [stem for stem, _, _ in digits]
    assert _digest(codecs, pixels) == recorded["sha256"]
    script = (
        "import json, sys; import numpy as np; sys.path.insert(0, 'tests'); "
        "from test_search import WEIGHTS, _digest, stack; from conftest import load_digits; "
        "from app.codec.codecs import load_codec; "
        "print(json.dumps(_digest({n: load_codec(p, 'cpu') for n, p in WEIGHTS.items()}, stack(load_digits()))))"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    )
    assert json.loads(fresh.stdout) == recorded["sha256"]


def test_the_torch_engine_searches_with_autograd_to_the_same_bytes(codecs: dict[str, Codec], digits: Digits) -> None:
    """The torch engine (CUDA's; here on the CPU in float64) gives numpy's bytes for ec64 and mlp24;
    mlp6's float32 latents, never rounded to a grid, may differ in a last bit now and then."""
    from app.codec import checkpoint
    from app.codec.engine import TorchEngine
    from app.codec.model import torch_model
    from app.codec.search_torch import TorchDecoder

    pixels = stack(digits)
    for name in ("ec64", "mlp24", "mlp6"):
        torch_codec = load_codec(WEIGHTS[name], "cpu")
        torch_codec.engine = TorchEngine(torch_model(checkpoint.read(WEIGHTS[name])), "cpu")
        assert isinstance(torch_codec.searcher(), TorchDecoder)
        for level in (1, torch_codec.max_effort):
            ours, theirs = codecs[name].encode_many(pixels, level), torch_codec.encode_many(pixels, level)
            same = sum(ours[24 * i : 24 * i + 24] == theirs[24 * i : 24 * i + 24] for i in range(len(pixels)))
            assert same == len(pixels) if name != "mlp6" else same >= len(pixels) - 3, (name, level, same)


# --------------------------------------------------------------------------- figures


def test_figures_are_read_only_for_the_same_weights(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    assert figures_path(source) == tmp_path / "m.efforts.json"
    figures_path(source).write_text(
        json.dumps({"model_id": "m-1", "levels": [{"level": 1, "psnr_db": 20.5, "us_per_digit": 300.0}]})
    )
    assert read_figures(source, "m-1") == {1: {"level": 1, "psnr_db": 20.5, "us_per_digit": 300.0}}
    assert read_figures(source, "m-2") == {}
    assert read_figures(tmp_path / "other.safetensors", "m-1") == {}
    figures_path(source).write_text("{not json")
    assert read_figures(source, "m-1") == {}


def record() -> None:
    """python tests/test_search.py: rewrite tests/data/effort_bytes.json (only when a recipe changes on purpose)."""
    from conftest import load_digits

    digits = load_digits()
    codecs = {name: load_codec(path, "cpu") for name, path in WEIGHTS.items()}
    data = {
        "about": "sha256 of the latents of the test digits under tests/data/digits, encoded as one batch, "
        "per model and effort level (index = level); written by python tests/test_search.py",
        "digits": [stem for stem, _, _ in digits],
        "sha256": _digest(codecs, stack(digits)),
    }
    EFFORT_BYTES.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    record()

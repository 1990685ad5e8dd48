"""`mnist-codec --local` knows every shipped model, as the server does; and the command line's
small traps: a missing file, `--timeout 0`, a URL without its scheme."""

from pathlib import Path

import pytest
from conftest import COMMITTED_WEIGHTS, DIGITS_DIR, LiveServer

from app.client import arguments, cli, commands, store
from app.client.backends import LocalBackend
from app.settings import Settings

EC64_V1_WEIGHTS = COMMITTED_WEIGHTS.parent / "ec64" / "ec64.safetensors"  # ec64-ea9647b7fd42
EC64_WEIGHTS = COMMITTED_WEIGHTS.parent / "ec64" / "v2" / "ec64.safetensors"  # what `ec64` means: the newest
SEVEN = DIGITS_DIR / "test0000_digit7.png"


def run(*argv: str) -> int:
    return cli.main(list(argv))


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder outside the checkout, with the service's default settings."""
    for name in ("MNIST_CODEC_WEIGHTS", "MNIST_CODEC_MODELS", "MNIST_CODEC_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(commands, "get_settings", Settings)  # read now, not the cached settings
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_local_loads_every_shipped_version(elsewhere: Path) -> None:
    """The service's settings: mlp6, mlp24 and both versions of ec64, each found from outside the checkout."""
    codec = LocalBackend(commands.local_weights(None), "cpu")
    assert [c.name for c in codec.codecs] == ["mlp6", "mlp24", "ec64", "ec64"]
    ec64 = LocalBackend([EC64_WEIGHTS], "cpu").model_id
    assert codec.served["ec64"] == ec64 != LocalBackend([EC64_V1_WEIGHTS], "cpu").model_id


@pytest.mark.parametrize(
    ("model", "weights"),
    [
        pytest.param("ec64", EC64_WEIGHTS, id="the-name-means-v2"),
        pytest.param("ec64-ea9647b7fd42", EC64_V1_WEIGHTS, id="v1-by-its-id"),
    ],
)
def test_encode_local_with_model_ec64(elsewhere: Path, model: str, weights: Path) -> None:
    assert run("encode", str(SEVEN), "-o", "lat_ec/", "--local", "--model", model, "-q") == 0
    data = (elsewhere / "lat_ec" / f"{SEVEN.stem}.lat").read_bytes()
    ec64 = LocalBackend([weights], "cpu")
    assert data == ec64.encode(SEVEN.read_bytes())
    assert store.Recorded().model_id(elsewhere / "lat_ec" / f"{SEVEN.stem}.lat") == ec64.model_id


@pytest.mark.parametrize(
    ("model", "weights", "other"),
    [
        pytest.param("ec64", EC64_WEIGHTS, EC64_V1_WEIGHTS, id="v2"),
        pytest.param("ec64-ea9647b7fd42", EC64_V1_WEIGHTS, EC64_WEIGHTS, id="v1"),
    ],
)
def test_decode_local_finds_the_packaged_weights_by_the_recorded_id(
    elsewhere: Path, model: str, weights: Path, other: Path
) -> None:
    """Two ec64 versions are shipped: the id recorded in latents.json picks the one that made the latents."""
    assert run("encode", str(DIGITS_DIR), "-o", "lat_ec/", "--local", "--model", model, "-q") == 0
    assert run("decode", "lat_ec/", "-o", "png/", "--local", "-q") == 0  # no --model: the recorded id picks it
    ec64, wrong = LocalBackend([weights], "cpu"), LocalBackend([other], "cpu")
    differ = 0
    for path in sorted((elsewhere / "lat_ec").glob("*.lat")):
        png = (elsewhere / "png" / f"{path.stem}.png").read_bytes()
        assert png == ec64.decode(path.read_bytes()), path.name
        differ += png != wrong.decode(path.read_bytes())
    assert differ > 0  # the other version reads the same bytes otherwise: the choice was tested


def test_local_model_that_did_not_make_the_latents_is_refused(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("encode", str(SEVEN), "-o", "lat_ec/", "--local", "--model", "ec64", "-q") == 0
    assert run("decode", "lat_ec/", "-o", "png/", "--local", "--model", "mlp24", "-q") == cli.MODEL_MISMATCH
    line = capsys.readouterr().err.splitlines()[-1]
    assert "were made by ec64-" in line and "model 'mlp24' (--local) is mlp24-" in line and "no --model" in line
    assert not (elsewhere / "png").exists()


def test_local_with_an_unknown_model_names_the_shipped_ones(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("encode", str(SEVEN), "-o", "7.lat", "--local", "--model", "nosuch", "-q") == cli.UNAVAILABLE
    [line] = capsys.readouterr().err.splitlines()
    assert "unknown model 'nosuch'" in line and "mlp6, mlp24, ec64" in line


def test_relative_weights_are_found_from_outside_the_checkout(elsewhere: Path) -> None:
    assert not (elsewhere / "model_weights").exists()
    weights = ["--local", "--weights", "model_weights/ec64/v2/ec64.safetensors", "-q"]
    assert run("encode", str(SEVEN), "-o", "7.lat", *weights) == 0
    assert (elsewhere / "7.lat").read_bytes() == LocalBackend([EC64_WEIGHTS], "cpu").encode(SEVEN.read_bytes())
    assert run("decode", "7.lat", "-o", "7.png", *weights) == 0


def test_a_missing_file_gets_no_note_about_its_model_id(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("decode", "nosuch.lat", "--local") == cli.FILES_FAILED
    err = capsys.readouterr().err
    assert "note:" not in err and "recorded model id" not in err
    assert "nosuch.lat: cannot read: No such file or directory" in err


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "soon"])
def test_timeout_must_be_above_zero(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("encode", str(SEVEN), "--timeout", value)
    assert exit_info.value.code == cli.USAGE
    assert "--timeout" in capsys.readouterr().err


def test_a_url_without_a_scheme_is_http(live_server: LiveServer, tmp_path: Path) -> None:
    bare = live_server.url.removeprefix("http://")  # 127.0.0.1:PORT, as curl takes it
    assert arguments.server_url(bare) == live_server.url
    assert run("encode", str(SEVEN), "-o", f"{tmp_path}/7.lat", "--url", bare, "-q") == 0
    assert (tmp_path / "7.lat").stat().st_size == 24


def test_the_summary_names_the_weights_that_did_the_work(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--local loads every shipped model; the closing line names only the one that encoded, or decoded."""
    ec64 = LocalBackend([EC64_WEIGHTS], "cpu").model_id
    assert run("encode", str(SEVEN), "-o", "lat_ec/", "--local", "--model", "ec64", "--effort", "1") == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert f"; model {ec64}; effort 1)" in line, line
    assert run("decode", "lat_ec/", "-o", "png/", "--local") == 0
    assert f"; model {ec64})" in capsys.readouterr().out.splitlines()[-1]

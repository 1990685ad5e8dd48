"""`mnist-codec encode --effort N`: every backend honours it, a bad value is a usage error (status 2)."""

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DIGITS_DIR, ROOT, LiveServer, load_digits

from app.client import cli
from app.client.backends import RemoteBackend, UsageError
from app.codec.codecs import load_codec

EC64_WEIGHTS = ROOT / "model_weights" / "ec64" / "ec64.safetensors"
SEVEN = DIGITS_DIR / "test0000_digit7.png"


def run(*argv: str) -> int:
    return cli.main(list(argv))


def levels_at(server: LiveServer, name: str) -> list[int]:
    """The effort levels of the version `name` means (the one marked current)."""
    models = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
    return [e["level"] for e in next(m for m in models if m["name"] == name and m["current"])["efforts"]]


def test_encode_help_documents_effort() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.client.cli", "encode", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--effort N" in text and "encode effort, 0 to the model's highest level" in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("high", "must be an integer (an effort level, 0 or more); got 'high'", id="a-word"),
        pytest.param("1.5", "must be an integer (an effort level, 0 or more); got '1.5'", id="not-an-integer"),
        pytest.param("-1", "must be 0 or more; got -1", id="negative"),
    ],
)
def test_a_bad_effort_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run("encode", str(SEVEN), "-o", f"{tmp_path}/7.lat", "--local", "--effort", value)
    assert stopped.value.code == cli.USAGE
    assert f"argument --effort: {message}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_effort_above_the_local_models_range_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = load_codec(EC64_WEIGHTS, "cpu").max_effort
    out = tmp_path / "7.lat"
    assert run("encode", str(SEVEN), "-o", str(out), "--local", "--weights", str(EC64_WEIGHTS), "--effort", "99") == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("mnist-codec: --effort 99: ") and f"0 to {top}" in line, line
    assert not out.exists()


def test_an_effort_above_the_servers_range_is_a_usage_error(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = max(levels_at(live_server, "mlp24"))
    out = tmp_path / "out"
    argv = ["encode", str(DIGITS_DIR), "-o", f"{out}/", "--url", live_server.url, "--model", "mlp24"]
    assert run(*argv, "--effort", str(top + 1)) == cli.USAGE
    line = capsys.readouterr().err.strip()
    assert line == f"mnist-codec: --effort {top + 1}: model 'mlp24' at {live_server.url} has effort levels 0 to {top}"
    assert not out.exists()  # refused before anything was sent or written


@pytest.mark.parametrize("model", ["mlp6", "mlp24", "ec64"])
def test_the_server_and_local_give_the_bytes_of_the_api_at_each_effort(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    """Many files (the batch endpoint; in process, one batch call) and one file, at the highest
    level: the bytes /encode?effort=N gives each digit alone."""
    top = max(levels_at(live_server, model))
    # The checkpoint each name means on the server (ec64: v2, the newest of its two versions)
    weights = {"mlp6": "mlp6.safetensors", "mlp24": "mlp24/mlp24.safetensors", "ec64": "ec64/v2/ec64.safetensors"}
    local = ["--local", "--weights", str(ROOT / "model_weights" / weights[model])]
    remote = ["--url", live_server.url, "--model", model]
    expected = {
        path.name: httpx.post(
            f"{live_server.url}/encode?model={model}&effort={top}", files={"img": path.read_bytes()}, timeout=30
        ).content
        for path in sorted(DIGITS_DIR.glob("*.png"))
    }
    for where, flags in (("server", remote), ("local", local)):
        assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/{where}/", "--effort", str(top), *flags) == 0
        summary = capsys.readouterr().out
        assert f"effort {top})" in summary, summary
        assert ("batch endpoint" if where == "server" else "in process") in summary
        for name, latent in expected.items():
            assert (tmp_path / where / name.replace(".png", ".lat")).read_bytes() == latent, (where, name)
        assert run("encode", str(SEVEN), "-o", f"{tmp_path}/{where}-7.lat", "--effort", str(top), *flags, "-q") == 0
        assert (tmp_path / f"{where}-7.lat").read_bytes() == expected[SEVEN.name]
    level_0 = load_codec(ROOT / "model_weights" / weights[model], "cpu")
    assert expected != {f"{name}.png": level_0.encode(pixels, 0) for name, _, pixels in load_digits()}


def test_without_effort_the_bytes_are_level_0s(live_server: LiveServer, tmp_path: Path) -> None:
    assert run("encode", str(SEVEN), "-o", f"{tmp_path}/7.lat", "--url", live_server.url, "-q") == 0
    alone = httpx.post(f"{live_server.url}/encode?effort=0", files={"img": SEVEN.read_bytes()}, timeout=10).content
    assert (tmp_path / "7.lat").read_bytes() == alone


def fake_server(efforts: bool, seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/models":
            model = {"name": "mlp6", "id": "mlp6-fake", "latent_format": {"name": "6xf32le"}}
            if efforts:
                model |= {"efforts": [{"level": i, "cost": i} for i in range(3)], "default_effort": 0}
            return httpx.Response(200, json={"default": "mlp6", "models": [model]})
        return httpx.Response(200, content=bytes(24), headers={"x-model-id": "mlp6-fake"})

    return httpx.MockTransport(answer)


def test_effort_goes_with_the_encode_requests_only() -> None:
    seen: list[httpx.Request] = []
    codec = RemoteBackend("http://fake", model="mlp6", transport=fake_server(True, seen), effort=2)
    codec.connect()
    codec.encode(SEVEN.read_bytes())
    codec.encode_batch([SEVEN.read_bytes()] * 2)
    codec.decode(bytes(24))
    codec.decode_batch([bytes(24)] * 2)
    params = {request.url.path: dict(request.url.params) for request in seen}
    assert params["/encode"] == params["/encode/batch"] == {"model": "mlp6", "effort": "2"}
    assert params["/models"] == params["/decode"] == params["/decode/batch"] == {"model": "mlp6"}
    assert codec.effort == 2


def test_effort_on_a_server_that_lists_no_levels_is_a_usage_error() -> None:
    """An older server would ignore ?effort= and answer level 0's bytes: refused rather than pretend."""
    seen: list[httpx.Request] = []
    codec = RemoteBackend("http://fake", transport=fake_server(False, seen), effort=1)
    with pytest.raises(UsageError, match=r"^--effort: http://fake lists no effort levels for model 'mlp6'"):
        codec.connect()
    without = RemoteBackend("http://fake", transport=fake_server(False, seen))
    without.connect()  # no --effort: fine, the server's own default
    assert without.effort is None


def test_models_shows_each_models_levels(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("models", "--url", live_server.url) == 0
    lines = capsys.readouterr().out.splitlines()
    models = httpx.get(f"{live_server.url}/models", timeout=5).json()["models"]
    names = [m["name"] for m in models]
    assert len(models) == 4 and names.count("ec64") == 2  # ec64 v1 and v2: one line each
    # Where a name has several versions, the line of the one it means says so.
    assert lines == [
        f"{m['name']}  {m['id']}  effort 0-{m['efforts'][-1]['level']} (default {m['default_effort']})"
        + ("  (current)" if m["current"] and names.count(m["name"]) > 1 else "")
        for m in models
    ]


def test_local_batches_at_effort_are_one_call_and_a_bad_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    good = tmp_path / "in" / SEVEN.name
    good.write_bytes(SEVEN.read_bytes())
    weights = ["--weights", str(EC64_WEIGHTS)]
    assert run("encode", str(tmp_path / "in"), "-o", f"{tmp_path}/out/", "--local", *weights, "--effort", "1") == 1
    err = capsys.readouterr().err
    assert f"{bad}: " in err
    codec = load_codec(EC64_WEIGHTS, "cpu")
    pixels = next(p for name, _, p in load_digits() if f"{name}.png" == SEVEN.name)
    assert (tmp_path / "out" / "test0000_digit7.lat").read_bytes() == codec.encode(np.asarray(pixels), 1)

"""The `mnist-codec` command (app/client/cli.py, app/client/backends.py): in process, against a fake and a real server."""

import argparse
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from conftest import COMMITTED_WEIGHTS, DIGITS_DIR, ROOT, LiveServer

from app.client import cli, commands
from app.client.backends import RemoteBackend
from app.client.jobs import plan_jobs
from app.settings import Settings
from bench.server import container_command, free_port


def run(*argv: str) -> int:
    return cli.main(list(argv))


def output_in(folder: Path, output: str | None) -> str | None:
    """-o as typed, under `folder` (a trailing slash kept); None and "-" as they are."""
    return output if output in (None, "-") else f"{folder}/{output}"


def test_serve_runs_the_container_command() -> None:
    assert container_command() == cli.SERVE_ARGV
    assert cli.serve_command_line("0.0.0.0", 8000) == [sys.executable, "-m", *cli.SERVE_ARGV]


def test_the_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mnist-codec"] == "app.client.cli:main"


def test_help_names_the_commands_and_exit_statuses() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.client.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for word in ("encode", "decode", "models", "serve", "exit status"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("inputs", "output", "expected"),
    [
        pytest.param(["d/7.png"], None, ["d/7.lat"], id="beside-the-input"),
        pytest.param(["d/7.png"], "x.lat", ["x.lat"], id="one-file"),
        pytest.param(["d/7.png"], "out/", ["out/7.lat"], id="into-a-folder"),
        pytest.param(["d/7.png", "d/8.png"], "out", ["out/7.lat", "out/8.lat"], id="many-into-a-folder"),
        pytest.param(["d/7.png"], "-", [None], id="stdout"),
    ],
)
def test_where_outputs_go(tmp_path: Path, inputs: list[str], output: str | None, expected: list[str | None]) -> None:
    jobs = plan_jobs([tmp_path / i for i in inputs], output_in(tmp_path, output), ".lat")
    assert [None if job.target is None else job.target.relative_to(tmp_path).as_posix() for job in jobs] == expected


def test_decoded_files_beside_their_latents_do_not_overwrite_the_originals(tmp_path: Path) -> None:
    [job] = plan_jobs([tmp_path / "7.lat"], None, ".decoded.png")
    assert job.target == tmp_path / "7.decoded.png"
    [job] = plan_jobs([tmp_path / "7.lat"], f"{tmp_path}/out/", ".decoded.png")
    assert job.target == tmp_path / "out" / "7.png"


@pytest.mark.parametrize(
    ("inputs", "output"),
    [
        pytest.param(["a/7.png", "b/7.png"], "out", id="same-name-twice"),
        pytest.param(["a/7.png", "a/8.png"], "-", id="stdout-with-several"),
    ],
)
def test_impossible_plans_are_refused(tmp_path: Path, inputs: list[str], output: str) -> None:
    with pytest.raises(ValueError):
        plan_jobs([tmp_path / i for i in inputs], output_in(tmp_path, output), ".lat")


def test_local_round_trip_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/lat/", "--local", "--weights", str(COMMITTED_WEIGHTS)) == 0
    latents = sorted((tmp_path / "lat").glob("*.lat"))
    assert len(latents) == len(list(DIGITS_DIR.glob("*.png"))) and all(p.stat().st_size == 24 for p in latents)
    assert (
        run("decode", *map(str, latents), "-o", f"{tmp_path}/png", "--local", "--weights", str(COMMITTED_WEIGHTS)) == 0
    )
    assert sorted(p.name for p in (tmp_path / "png").glob("*.png")) == sorted(p.stem + ".png" for p in latents)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"encoded {len(latents)} of {len(latents)} files ({24 * len(latents)} bytes)")
    assert "0 failed (in process; model mlp6-" in out[1]


def test_local_finds_the_committed_weights_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MNIST_CODEC_WEIGHTS", raising=False)
    monkeypatch.setattr(commands, "get_settings", Settings)  # read now, not the cached settings
    monkeypatch.chdir(tmp_path)
    assert commands.local_weights(None)[0] == COMMITTED_WEIGHTS  # the default model first, then the others
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", "7.lat", "--local", "-q") == 0
    assert (tmp_path / "7.lat").stat().st_size == 24


def test_a_bad_file_fails_alone_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    good = DIGITS_DIR / "test0000_digit7.png"
    status = run("encode", str(good), str(bad), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"), "--local")
    assert status == cli.FILES_FAILED
    errors = capsys.readouterr().err.splitlines()
    assert sorted(errors) == [
        f"mnist-codec: {bad}: the upload is not a PNG image (no PNG signature)",
        f"mnist-codec: {tmp_path / 'missing.png'}: cannot read: No such file or directory",
    ]
    assert (tmp_path / "out" / "test0000_digit7.lat").stat().st_size == 24


def test_no_server_is_exit_status_3_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", str(tmp_path / "7.lat"), "--url", url) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mnist-codec: cannot reach {url}")
    assert not (tmp_path / "7.lat").exists()


def test_bad_command_lines_are_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("encode", "7.png", "--jobs", "0")
    assert exit_info.value.code == cli.USAGE
    assert "--jobs" in capsys.readouterr().err


def test_server_and_local_give_the_same_bytes(live_server: LiveServer, tmp_path: Path) -> None:
    for mode in ("server", "local"):
        where = ["--url", live_server.url] if mode == "server" else ["--local", "--weights", str(COMMITTED_WEIGHTS)]
        assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/{mode}/lat/", "-q", *where) == 0
        assert run("decode", f"{tmp_path}/{mode}/lat", "-o", f"{tmp_path}/{mode}/png/", "-q", *where) == 0
    for kind in ("lat", "png"):
        server_files = sorted((tmp_path / "server" / kind).glob(f"*.{kind}"))
        assert len(server_files) == len(list(DIGITS_DIR.glob("*.png")))
        for path in server_files:
            assert path.read_bytes() == (tmp_path / "local" / kind / path.name).read_bytes(), path.name


def test_models_lists_what_the_server_serves(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("models", "--url", live_server.url) == 0
    models = httpx.get(f"{live_server.url}/models", timeout=5).json()["models"]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[model["name"], model["id"]] for model in models]


def test_a_server_error_names_the_file_and_the_status(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.lat"
    short.write_bytes(b"\x00" * 5)
    assert run("decode", str(short), "--url", live_server.url) == cli.FILES_FAILED
    note, line = capsys.readouterr().err.splitlines()
    assert note.startswith("mnist-codec: note: 1 of 1 latents have no recorded model id")
    assert line.startswith(f"mnist-codec: {short}: 422 a latent is exactly 24 bytes")


class FakeServer:
    """An httpx transport that answers like a server with (or without) /encode/batch, slowly
    enough (20 ms) that requests sent at once overlap; it counts how many were in flight."""

    def __init__(self, batch: bool) -> None:
        self.batch = batch
        self.requests: list[httpx.Request] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
        headers = {"x-model-id": "mlp6-fake"}
        if request.url.path == "/models":
            models = [
                {"name": name, "id": "mlp6-fake", "latent_format": {"name": "6xf32le"}} for name in ("mlp6", "small")
            ]
            return httpx.Response(200, json={"default": "mlp6", "models": models})
        if request.url.path == "/encode":
            return httpx.Response(200, content=bytes(24), headers=headers)
        if request.url.path == "/encode/batch" and self.batch:
            parts = request.read().count(b'name="img"')
            return httpx.Response(200, content=bytes(24 * parts), headers=headers)
        return httpx.Response(404, json={"detail": "Not Found"})


def convert(fake: FakeServer, sources: list[Path], out: Path, batch_size: int, model: str | None = None) -> int:
    codec = RemoteBackend("http://fake", model=model, transport=httpx.MockTransport(fake))
    codec.connect()
    args = argparse.Namespace(
        command="encode", inputs=sources, output=f"{out}/", jobs=2, batch_size=batch_size, quiet=True, local=False
    )
    return commands.encode_command(args, codec)


@pytest.mark.parametrize(
    ("batch", "requests"),
    [
        pytest.param(True, {"/encode/batch": 3, "/encode": 0}, id="batch-endpoint"),
        pytest.param(False, {"/encode/batch": 1, "/encode": 20}, id="no-batch-endpoint-asked-once"),
    ],
)
def test_many_files_use_the_batch_endpoint_where_it_exists(
    tmp_path: Path, batch: bool, requests: dict[str, int]
) -> None:
    fake = FakeServer(batch)
    sources = sorted(DIGITS_DIR.glob("*.png"))
    assert convert(fake, sources, tmp_path, batch_size=8, model="small") == 0  # jobs=2
    assert len(list(tmp_path.glob("*.lat"))) == len(sources)
    paths = [request.url.path for request in fake.requests]
    assert paths[0] == "/models"  # asked once, first: is this an mnist-codec server, and which model encodes
    assert {path: paths.count(path) for path in requests} == requests
    assert all(request.url.params["model"] == "small" for request in fake.requests)
    assert fake.most_in_flight == 2  # --jobs 2: bounded, and used


def test_without_a_batch_endpoint_files_still_go_jobs_at_a_time(tmp_path: Path) -> None:
    fake = FakeServer(batch=False)
    sources = sorted(DIGITS_DIR.glob("*.png"))
    assert convert(fake, sources, tmp_path, batch_size=64) == 0  # all 20 fit in the first, refused, batch
    assert fake.most_in_flight == 2


def test_decoding_many_files_uses_the_batch_endpoint(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/lat/", "-q", "--url", live_server.url) == 0
    assert run("decode", f"{tmp_path}/lat", "-o", f"{tmp_path}/png/", "--url", live_server.url) == 0
    assert "(batch endpoint" in capsys.readouterr().out
    for path in sorted((tmp_path / "lat").glob("*.lat")):
        single = httpx.post(f"{live_server.url}/decode", content=path.read_bytes(), timeout=10).content
        assert (tmp_path / "png" / path.name.replace(".lat", ".png")).read_bytes() == single


@pytest.mark.parametrize(
    ("model", "weights"),
    [
        pytest.param("ec64", "ec64/v2/ec64.safetensors", id="ec64-the-name-means-v2"),
        pytest.param("ec64-ea9647b7fd42", "ec64/ec64.safetensors", id="ec64-v1-by-its-id"),
    ],
)
def test_ec64_over_the_server_and_in_process_gives_the_same_bytes(
    live_server: LiveServer, tmp_path: Path, model: str, weights: str
) -> None:
    """Each ec64 version the server holds, asked for as a client would, against its checkpoint in process; the
    decode sends the id recorded in latents.json (two versions: bare bytes by name would be refused)."""
    ec64 = ROOT / "model_weights" / weights
    for mode in ("server", "local"):
        where = (
            ["--url", live_server.url, "--model", model] if mode == "server" else ["--local", "--weights", str(ec64)]
        )
        assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/{mode}/lat/", "-q", *where) == 0
        assert run("decode", f"{tmp_path}/{mode}/lat", "-o", f"{tmp_path}/{mode}/png/", "-q", *where) == 0
    for kind in ("lat", "png"):
        server_files = sorted((tmp_path / "server" / kind).glob(f"*.{kind}"))
        assert len(server_files) == len(list(DIGITS_DIR.glob("*.png")))
        for path in server_files:
            assert path.read_bytes() == (tmp_path / "local" / kind / path.name).read_bytes(), path.name
            assert kind == "png" or path.stat().st_size == 24


@pytest.mark.parametrize(
    ("listed", "size"), [pytest.param(32, 32, id="its-own-size"), pytest.param(None, 24, id="none")]
)
def test_a_batch_is_split_by_the_size_models_lists(listed: int | None, size: int) -> None:
    """The client takes a latent's size from GET /models (an older server lists none: the API's 24 bytes)."""

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            fmt = {"name": "24xac"} | ({"bytes": listed} if listed else {})
            return httpx.Response(
                200, json={"default": "ec64", "models": [{"name": "ec64", "id": "ec64-x", "latent_format": fmt}]}
            )
        count = request.read().count(b'name="img"')
        return httpx.Response(
            200, content=b"".join(bytes([i]) * size for i in range(count)), headers={"x-model-id": "ec64-x"}
        )

    codec = RemoteBackend("http://fake", transport=httpx.MockTransport(server))
    codec.connect()
    assert codec.encode_batch([b"png"] * 3) == [bytes([i]) * size for i in range(3)]

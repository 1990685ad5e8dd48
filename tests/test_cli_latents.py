"""The command keeps the model id with stored latents, writes and reads containers, and says in
one line when the URL is not an mnist-codec server (app/client/cli.py, backends.py, store.py)."""

import http.server
import io
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import COMMITTED_WEIGHTS, DIGITS_DIR, LiveServer

from app.client import arguments, cli, commands, store
from app.client.backends import BackendUnavailable, RemoteBackend
from app.codec import container, latent
from app.settings import Settings

MLP24_WEIGHTS = COMMITTED_WEIGHTS.parent / "mlp24" / "mlp24.safetensors"
N_DIGITS = len(list(DIGITS_DIR.glob("*.png")))


def run(*argv: str) -> int:
    return cli.main(list(argv))


def manifest(folder: Path) -> dict[str, str]:
    models: dict[str, str] = json.loads((folder / store.MANIFEST).read_text())["models"]
    return models


def served_id(server: LiveServer, name: str) -> str:
    models = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
    return str(next(m["id"] for m in models if m["name"] == name))


def decoded_by(server: LiveServer, name: str, data: bytes) -> bytes:
    return httpx.post(f"{server.url}/decode?model={name}", content=data, timeout=10).content


# --------------------------------------------------------------------------- 1. the id travels with the latents


def test_encode_records_each_latents_model_id_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/", "--local", "--weights", str(MLP24_WEIGHTS), "-q") == 0
    latents = sorted(tmp_path.glob("*.lat"))
    assert len(latents) == N_DIGITS and all(p.stat().st_size == 24 for p in latents)  # still the raw bytes
    assert set(manifest(tmp_path)) == {p.name for p in latents}
    assert set(manifest(tmp_path).values()) == {f"mlp24-{cli_local_id(MLP24_WEIGHTS)}"}


def cli_local_id(weights: Path) -> str:
    from app.client.backends import LocalBackend

    return LocalBackend([weights], "cpu").model_id.split("-", 1)[1]


def test_forgetting_model_on_decode_still_gives_the_right_digits(live_server: LiveServer, tmp_path: Path) -> None:
    """The issue's new user: encode with --model mlp24, decode without --model."""
    url = ["--url", live_server.url, "-q"]
    assert run("encode", str(DIGITS_DIR), "--model", "mlp24", "-o", f"{tmp_path}/lat/", *url) == 0
    assert run("decode", f"{tmp_path}/lat", "-o", f"{tmp_path}/png/", *url) == 0
    for path in sorted((tmp_path / "lat").glob("*.lat")):
        written = (tmp_path / "png" / f"{path.stem}.png").read_bytes()
        assert written == decoded_by(live_server, "mlp24", path.read_bytes()), path.name


def test_decoding_with_other_weights_is_refused_in_one_line(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", live_server.url, "-q"]
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/lat/", *url) == 0  # the default model, mlp6
    assert run("decode", f"{tmp_path}/lat", "--model", "mlp24", "-o", f"{tmp_path}/png/", *url) == cli.MODEL_MISMATCH
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mnist-codec: refused: {N_DIGITS} of {N_DIGITS} latents")
    assert served_id(live_server, "mlp6") in line and "--force" in line and "Use no --model" in line
    assert not (tmp_path / "png").exists()  # no output file, not even the folder
    # --force: the user says so; decoded with mlp24, as asked (any 24 bytes are an mlp24 latent).
    assert run("decode", f"{tmp_path}/lat", "--model", "mlp24", "--force", "-o", f"{tmp_path}/png/", *url) == 0
    seven = tmp_path / "lat" / "test0000_digit7.lat"
    assert (tmp_path / "png" / "test0000_digit7.png").read_bytes() == decoded_by(
        live_server, "mlp24", seven.read_bytes()
    )


def test_latents_of_weights_the_server_lacks_are_refused(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/", "--url", live_server.url, "-q") == 0
    body = json.loads((tmp_path / store.MANIFEST).read_text())
    body["models"]["test0000_digit7.lat"] = "mlp6-000000000000"  # made by weights retrained since
    (tmp_path / store.MANIFEST).write_text(json.dumps(body))
    status = run("decode", str(tmp_path), "-o", f"{tmp_path}/png/", "--url", live_server.url, "-q")
    assert status == cli.MODEL_MISMATCH
    [line] = capsys.readouterr().err.splitlines()
    assert f"1 of {N_DIGITS} latents (first {tmp_path / 'test0000_digit7.lat'}) were made by mlp6-000000000000" in line
    assert "Use a server that has those weights" in line
    assert not (tmp_path / "png").exists()


def test_local_checks_the_recorded_id_against_its_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local24 = ["--local", "--weights", str(MLP24_WEIGHTS), "-q"]
    local6 = ["--local", "--weights", str(COMMITTED_WEIGHTS), "-q"]
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", f"{tmp_path}/7.lat", *local24) == 0
    assert run("decode", f"{tmp_path}/7.lat", "-o", f"{tmp_path}/7.png", *local6) == cli.MODEL_MISMATCH
    [line] = capsys.readouterr().err.splitlines()
    assert "were made by mlp24-" in line and "--weights PATH" in line
    assert not (tmp_path / "7.png").exists()
    assert run("decode", f"{tmp_path}/7.lat", "-o", f"{tmp_path}/7.png", *local24) == 0
    assert (tmp_path / "7.png").exists()


def test_latents_without_a_record_are_decoded_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", f"{tmp_path}/a/7.lat", "--local", "-q") == 0
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "7.lat", tmp_path / "b" / "7.lat")  # copied without its manifest
    assert run("decode", f"{tmp_path}/b/7.lat", "--local") == 0
    err = capsys.readouterr().err
    assert "note: 1 of 1 latents have no recorded model id" in err and "decoding them with mlp6-" in err


def test_the_manifest_keeps_the_entries_of_earlier_runs(tmp_path: Path) -> None:
    seven, two = DIGITS_DIR / "test0000_digit7.png", DIGITS_DIR / "test0001_digit2.png"
    assert run("encode", str(seven), "-o", f"{tmp_path}/7.lat", "--local", "-q") == 0
    assert run("encode", str(two), "-o", f"{tmp_path}/2.lat", "--local", "--weights", str(MLP24_WEIGHTS), "-q") == 0
    ids = manifest(tmp_path)
    assert ids["7.lat"].startswith("mlp6-") and ids["2.lat"].startswith("mlp24-")


def test_a_failed_file_keeps_its_earlier_record(tmp_path: Path) -> None:
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", f"{tmp_path}/d/x.lat", "--local", "-q") == 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")  # would become d/x.lat: fails instead
    local24 = ["--local", "--weights", str(MLP24_WEIGHTS), "-q"]
    assert run("encode", f"{tmp_path}/bad/x.png", "-o", f"{tmp_path}/d/", *local24) == cli.FILES_FAILED
    assert manifest(tmp_path / "d")["x.lat"].startswith("mlp6-")  # the bytes there are still mlp6's


def test_a_damaged_manifest_stops_encode_before_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / store.MANIFEST).write_text("{not json")
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/", "--local", "-q") == cli.FILES_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mnist-codec: {tmp_path / store.MANIFEST}: cannot read the model ids recorded there")
    assert not list(tmp_path.glob("*.lat"))


def test_a_latent_to_standard_output_names_its_model(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", "-", "--local") == 0
    captured = capsysbinary.readouterr()
    assert len(captured.out) == latent.LATENT_BYTES
    assert b"note: made by model mlp6-" in captured.err and b"standard output" in captured.err


def test_help_states_the_overrides() -> None:
    help_text = arguments.parser()._subparsers._group_actions[0].choices["decode"].format_help()  # type: ignore[union-attr]
    assert "--force" in help_text and "--model" in help_text and "refused" in help_text


# --------------------------------------------------------------------------- 2. the container


def test_encode_into_a_container_and_decode_it(live_server: LiveServer, tmp_path: Path) -> None:
    url = ["--url", live_server.url, "-q"]
    box = tmp_path / "digits.lats"
    assert run("encode", str(DIGITS_DIR), "--model", "mlp24", "-o", str(box), *url) == 0
    stored = container.read_container(box.read_bytes())
    assert stored.model_id == served_id(live_server, "mlp24") and stored.format_name == "24xu8"
    assert stored.names == sorted(p.name for p in DIGITS_DIR.glob("*.png"))
    assert run("decode", str(box), *url) == 0  # no --model: the container says mlp24; beside it, in digits/
    for name, data in zip(stored.names, stored.latents, strict=True):
        assert (tmp_path / "digits" / name).read_bytes() == decoded_by(live_server, "mlp24", data), name


def test_a_local_container_decodes_locally(tmp_path: Path) -> None:
    box = tmp_path / "d.lats"
    assert run("encode", str(DIGITS_DIR), "-o", str(box), "--local", "-q") == 0
    assert run("decode", str(box), "-o", f"{tmp_path}/out/", "--local", "-q") == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == N_DIGITS
    assert run("decode", str(box), "-o", f"{tmp_path}/x/", "--local", "--weights", str(MLP24_WEIGHTS), "-q") == 4


@pytest.mark.parametrize("cut", [1, 30, 100])
def test_a_damaged_container_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cut: int
) -> None:
    box = tmp_path / "d.lats"
    assert run("encode", str(DIGITS_DIR), "-o", str(box), "--local", "-q") == 0
    box.write_bytes(box.read_bytes()[:-cut])
    assert run("decode", str(box), "-o", f"{tmp_path}/out/", "--local", "-q") == cli.FILES_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mnist-codec: {box}: truncated latent container")
    assert not (tmp_path / "out").exists()


def test_a_container_is_written_whole_or_not_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    box = tmp_path / "d.lats"
    assert run("encode", str(DIGITS_DIR), str(bad), "-o", str(box), "--local", "-q") == cli.FILES_FAILED
    assert not box.exists() and not list(tmp_path.glob(".d.lats*"))  # nor a temporary file
    assert f"{box}: not written, 1 of {N_DIGITS + 1} files failed" in capsys.readouterr().err


def test_whole_file_writes_get_the_usual_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/d.lats", "--local", "-q") == 0
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/lat/", "--local", "-q") == 0
    for path in (tmp_path / "d.lats", tmp_path / "lat" / store.MANIFEST):
        assert path.stat().st_mode == plain.stat().st_mode, path  # not mkstemp's private 0600


# --------------------------------------------------------------------------- 3. as people expect


@pytest.fixture
def not_a_codec_server() -> Iterator[str]:
    """A real HTTP server on loopback that answers 404 to everything, like a wrong URL."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["encode", "decode", "models"])
def test_a_server_that_is_not_a_codec_is_one_line(
    not_a_codec_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    inputs = {"encode": [str(DIGITS_DIR), "-o", f"{tmp_path}/out/"], "decode": [str(DIGITS_DIR)], "models": []}
    assert run(command, *inputs[command], "--url", not_a_codec_server) == cli.UNAVAILABLE
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"mnist-codec: not an mnist-codec server at {not_a_codec_server}: GET /models answered 404"
    assert not (tmp_path / "out").exists()


def test_a_server_answering_models_with_something_else_is_one_line() -> None:
    page = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hello</html>"))
    codec = RemoteBackend("http://portal", transport=page)
    with pytest.raises(
        BackendUnavailable, match=r"^not an mnist-codec server at http://portal: GET /models answered 200, but"
    ):
        codec.connect()


def test_a_model_the_server_lacks_is_one_line(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("encode", str(DIGITS_DIR), "--model", "nope", "--url", live_server.url) == cli.UNAVAILABLE
    [line] = capsys.readouterr().err.splitlines()
    ids = ", ".join(m["id"] for m in httpx.get(f"{live_server.url}/models", timeout=5).json()["models"])
    assert (
        line
        == f"mnist-codec: model 'nope' is not served at {live_server.url}; it has: mlp6, mlp24, ec64; model ids {ids}"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_shows_on_a_terminal_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], terminal: bool
) -> None:
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert run("encode", str(DIGITS_DIR), "-o", f"{tmp_path}/", "--local") == 0
    shown = stderr.getvalue()
    if terminal:
        assert f"{N_DIGITS}/{N_DIGITS}" in shown and "file/s" in shown  # tqdm: count and rate
    else:
        assert shown == ""
    assert capsys.readouterr().out.startswith(f"encoded {N_DIGITS} of {N_DIGITS} files")


def test_local_without_weights_says_how_to_point_at_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "get_settings", Settings)  # read now, not the cached settings
    monkeypatch.setenv("MNIST_CODEC_WEIGHTS", "nowhere/mlp6.pt")
    monkeypatch.chdir(tmp_path)
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "--local") == cli.UNAVAILABLE
    [line] = capsys.readouterr().err.splitlines()
    assert "checkpoint nowhere/mlp6.pt not found" in line and "--weights PATH" in line and "MNIST_CODEC_WEIGHTS" in line


def test_bare_latents_of_a_name_with_two_versions_are_refused_with_a_note_that_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The committed ec64 has two versions: latents without a record are not guessed (Codecs.refuse_a_guess),
    and the note says they will be refused, not which weights would decode them."""
    ec64 = ["--local", "--model", "ec64"]
    assert run("encode", str(DIGITS_DIR / "test0000_digit7.png"), "-o", f"{tmp_path}/a/7.lat", *ec64, "-q") == 0
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "7.lat", tmp_path / "b" / "7.lat")  # copied without its manifest
    assert run("decode", f"{tmp_path}/b/7.lat", *ec64) == cli.FILES_FAILED
    err = capsys.readouterr().err
    assert "note: 1 of 1 latents have no recorded model id" in err and "so they are refused" in err
    assert "decoding them with" not in err and not (tmp_path / "b" / "7.png").exists()

"""Versions: several checkpoints of one model served side by side, and ec64 v1's stored latents decoding forever.

tests/data/ec64_v1_latents.json holds the v1 bytes of the test digits at every effort level, recorded from
main before versions existed (python tests/v1_latents.py), with the digest of the pixels each decodes to.
Here a second ec64 (v1's weights with its decoder perturbed, trained "now") is the default, and every
recorded latent must still decode to its recorded pixels whichever way its id reaches the server.
"""

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import COMMITTED_WEIGHTS, DIGITS_DIR, ROOT
from PIL import Image
from v1_latents import RECORDED, V1_WEIGHTS, pixels_sha256

from app.client import cli, commands, store
from app.codec import checkpoint, container
from app.codec.codecs import Codecs, figures_path, load_codec, newest, parse_default_versions
from app.errors import StartupError
from app.main import create_app
from app.settings import Settings
from bench.server import Server

pytestmark = pytest.mark.anyio

V1 = json.loads(RECORDED.read_text())
V1_ID = V1["model_id"]
# (digit, level, latent bytes, sha256 of the decoded pixels): 20 digits x every level
LATENTS = [
    (stem, level, bytes.fromhex(row["latent"]), row["pixels_sha256"])
    for stem, rows in V1["latents"].items()
    for level, row in enumerate(rows)
]


def make_v2(folder: Path) -> Path:
    """A second ec64, laid out as the committed v2 will be (ec64/v2/ec64.safetensors): v1's tensors with the
    decoder's last layer perturbed (so its digits differ), trained after v1."""
    v1 = checkpoint.read(V1_WEIGHTS)
    rng = np.random.default_rng(18)
    tensors = dict(v1.tensors)
    weight = tensors["decoder.4.weight"]
    tensors["decoder.4.weight"] = (weight + rng.normal(0, 0.5 * float(weight.std()), weight.shape)).astype(np.float32)
    metadata = {**v1.metadata, "trained_at": "2026-12-01T09:00:00+00:00", "test": {}}
    path = folder / "ec64" / "v2" / "ec64.safetensors"
    checkpoint.write(
        path, checkpoint.Checkpoint(v1.arch, v1.latent_format, v1.model_args, tensors, metadata, v1.numpy_program)
    )
    return path


@pytest.fixture(scope="module")
def v2_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_v2(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def v2_id(v2_weights: Path) -> str:
    return checkpoint.read(v2_weights).model_id


@pytest.fixture
async def both(v2_weights: Path) -> AsyncIterator[httpx.AsyncClient]:
    """ec64 v1 (first in the list) and v2 (newer: what ec64 means, and the default model)."""
    app = create_app(Settings(weights=V1_WEIGHTS, models=[v2_weights], device="cpu"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        yield client


def digest_of_png(png: bytes) -> str:
    return pixels_sha256(np.asarray(Image.open(io.BytesIO(png))))


def digests_of_npy(body: bytes) -> list[str]:
    return [pixels_sha256(digit) for digit in np.load(io.BytesIO(body), allow_pickle=False)]


# --------------------------------------------------------------------------- the record


def test_the_record_covers_every_digit_and_level_of_v1() -> None:
    assert V1_ID == "ec64-ea9647b7fd42" == checkpoint.read(V1_WEIGHTS).model_id
    stems = sorted(path.stem for path in DIGITS_DIR.glob("*.png"))
    assert sorted(V1["latents"]) == stems and V1["levels"] == load_codec(V1_WEIGHTS, "cpu").max_effort + 1 == 4
    assert len({data for _, _, data, _ in LATENTS}) > len(stems)  # the levels give other bytes, not copies


# --------------------------------------------------------------------------- GET /models


async def test_models_lists_every_version_and_what_each_name_means(both: httpx.AsyncClient, v2_id: str) -> None:
    body = (await both.get("/models")).json()
    assert body["default"] == "ec64" and body["default_id"] == v2_id and body["names"] == {"ec64": v2_id}
    by_id = {m["id"]: m for m in body["models"]}
    assert list(by_id) == [V1_ID, v2_id]  # the settings' order
    v1, v2 = by_id[V1_ID], by_id[v2_id]
    assert (v1["name"], v1["trained_at"], v1["current"], v1["default"]) == (
        "ec64",
        "2026-11-26T03:06:52+00:00",
        False,
        False,
    )
    assert (v2["name"], v2["trained_at"], v2["current"], v2["default"]) == (
        "ec64",
        "2026-12-01T09:00:00+00:00",
        True,
        True,
    )
    # Each version's efforts.json beside its checkpoint: v1's measured figures, none measured for v2.
    assert [e["psnr_db"] is not None for e in v1["efforts"]] == [True] * 4
    assert [e["psnr_db"] for e in v2["efforts"]] == [None] * 4
    assert v1["latent_format"] == v2["latent_format"] and v1["default_effort"] == v2["default_effort"] == 0


async def test_openapi_names_the_models_and_their_versions(both: httpx.AsyncClient, v2_id: str) -> None:
    schema = (await both.get("/openapi.json")).json()
    assert schema["components"]["schemas"]["ModelName"]["enum"] == ["ec64", V1_ID, v2_id]
    info = schema["components"]["schemas"]["ModelInfo"]["properties"]
    assert {"name", "id", "trained_at", "current", "default", "efforts", "default_effort"} <= set(info)


# --------------------------------------------------------------------------- v1's latents decode forever


async def test_every_recorded_v1_latent_decodes_to_its_pixels_by_its_id(both: httpx.AsyncClient) -> None:
    """X-Model-Id alone, ?model=<v1 id>, and ?model=ec64 with X-Model-Id: all three pick v1, v2 being the default."""
    claims: list[tuple[str, dict[str, str]]] = [
        ("/decode", {"x-model-id": V1_ID}),
        (f"/decode?model={V1_ID}", {}),
        (f"/decode?model={V1_ID}", {"x-model-id": V1_ID}),
        ("/decode?model=ec64", {"x-model-id": V1_ID}),
    ]
    for path, headers in claims:
        for stem, level, data, digest in LATENTS:
            response = await both.post(path, content=data, headers=headers)
            assert response.status_code == 200, (path, headers, response.text)
            assert response.headers["x-model-id"] == V1_ID
            assert digest_of_png(response.content) == digest, (path, headers, stem, level)


async def test_every_recorded_v1_latent_decodes_in_a_batch_and_a_container(both: httpx.AsyncClient) -> None:
    body = b"".join(data for _, _, data, _ in LATENTS)
    digests = [digest for _, _, _, digest in LATENTS]
    for path, headers in [
        ("/decode/batch", {"x-model-id": V1_ID}),
        (f"/decode/batch?model={V1_ID}", {}),
        ("/decode/batch?model=ec64", {"x-model-id": V1_ID}),
    ]:
        response = await both.post(path, content=body, headers=headers)
        assert response.status_code == 200 and response.headers["x-model-id"] == V1_ID, (path, response.text)
        assert digests_of_npy(response.content) == digests, path
    stored = container.write_container(container.Container(V1_ID, "24xac", [data for _, _, data, _ in LATENTS], None))
    for path in ("/decode/batch", "/decode/batch?model=ec64", f"/decode/batch?model={V1_ID}"):
        response = await both.post(path, content=stored, headers={"content-type": container.CONTAINER_MEDIA_TYPE})
        assert response.status_code == 200 and response.headers["x-model-id"] == V1_ID, (path, response.text)
        assert digests_of_npy(response.content) == digests, path


async def test_without_its_id_a_bare_latent_of_a_name_with_versions_is_refused(
    both: httpx.AsyncClient, v2_id: str
) -> None:
    """24 bare bytes decoded by a name with two versions: taking the newest would give a v1 latent v2's digit
    with no error, so the answer is a 409 that says how to name the version, never a guess."""
    for path in ("/decode?model=ec64", "/decode/batch?model=ec64"):
        for _, _, data, _ in LATENTS[:3]:
            response = await both.post(path, content=data)
            assert response.status_code == 409, (path, response.text)
            detail = response.json()["detail"]
            assert "2 versions" in detail and V1_ID in detail and v2_id in detail and "X-Model-Id" in detail
    # a model id is never a guess
    response = await both.post(f"/decode?model={v2_id}", content=LATENTS[0][2])
    assert response.status_code == 200 and response.headers["x-model-id"] == v2_id


async def test_ids_that_do_not_fit_are_refused(both: httpx.AsyncClient, v2_id: str) -> None:
    data = LATENTS[0][2]
    other = await both.post(f"/decode?model={v2_id}", content=data, headers={"x-model-id": V1_ID})
    assert other.status_code == 409 and V1_ID in other.json()["detail"] and v2_id in other.json()["detail"]
    stranger = await both.post("/decode?model=ec64", content=data, headers={"x-model-id": "ec64-000000000000"})
    assert stranger.status_code == 409 and V1_ID in stranger.json()["detail"]
    unknown = await both.post("/decode?model=ec64-000000000000", content=data, headers={"x-model-id": V1_ID})
    assert unknown.status_code == 404
    assert (
        unknown.json()["detail"]
        == f"unknown model 'ec64-000000000000'; this server has: ec64; model ids {V1_ID}, {v2_id}"
    )
    batch = await both.post(f"/decode/batch?model={v2_id}", content=data, headers={"x-model-id": V1_ID})
    assert batch.status_code == 409
    stored = container.write_container(container.Container(V1_ID, "24xac", [data], None))
    boxed = await both.post(
        f"/decode/batch?model={v2_id}", content=stored, headers={"content-type": container.CONTAINER_MEDIA_TYPE}
    )
    assert boxed.status_code == 409


# --------------------------------------------------------------------------- encoding with a version


async def test_encode_with_a_model_id_gives_that_versions_bytes_at_every_effort(
    both: httpx.AsyncClient, v2_id: str
) -> None:
    seven = (DIGITS_DIR / "test0000_digit7.png").read_bytes()
    for level, row in enumerate(V1["latents"]["test0000_digit7"]):
        response = await both.post(f"/encode?model={V1_ID}&effort={level}", files={"img": ("7.png", seven)})
        assert response.status_code == 200 and response.headers["x-model-id"] == V1_ID
        assert response.content.hex() == row["latent"], level
    by_name = await both.post("/encode?model=ec64", files={"img": ("7.png", seven)})
    assert by_name.headers["x-model-id"] == v2_id
    assert (await both.post("/encode?model=ec64-000000000000", files={"img": ("7.png", seven)})).status_code == 404


async def test_encode_batch_with_a_model_id_makes_a_container_of_that_version(both: httpx.AsyncClient) -> None:
    pngs = sorted(DIGITS_DIR.glob("*.png"))
    files = [("img", (path.name, path.read_bytes())) for path in pngs]
    response = await both.post(
        f"/encode/batch?model={V1_ID}&effort=1", files=files, headers={"accept": container.CONTAINER_MEDIA_TYPE}
    )
    assert response.status_code == 200 and response.headers["x-model-id"] == V1_ID
    box = container.read_container(response.content)
    assert box.model_id == V1_ID
    assert [data.hex() for data in box.latents] == [V1["latents"][path.stem][1]["latent"] for path in pngs]
    decoded = await both.post(
        "/decode/batch", content=response.content, headers={"content-type": container.CONTAINER_MEDIA_TYPE}
    )
    assert digests_of_npy(decoded.content) == [V1["latents"][path.stem][1]["pixels_sha256"] for path in pngs]


# --------------------------------------------------------------------------- the CLI's stored ids


def v1_files(folder: Path) -> list[tuple[Path, str]]:
    """Every recorded latent as a .lat file with latents.json naming v1, as `encode` leaves them."""
    folder.mkdir()
    files = []
    for stem, level, data, digest in LATENTS:
        path = folder / f"{stem}_e{level}.lat"
        path.write_bytes(data)
        files.append((path, digest))
    store.record(dict.fromkeys((path for path, _ in files), V1_ID))
    return files


@pytest.fixture
def cli_settings(v2_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's --local reads the service's settings: v1 and v2, v2 the newer."""
    monkeypatch.setenv("MNIST_CODEC_WEIGHTS", str(V1_WEIGHTS))
    monkeypatch.setenv("MNIST_CODEC_MODELS", json.dumps([str(v2_weights)]))
    monkeypatch.delenv("MNIST_CODEC_DEFAULT_MODEL", raising=False)
    monkeypatch.delenv("MNIST_CODEC_DEFAULT_VERSIONS", raising=False)
    monkeypatch.setattr(commands, "get_settings", Settings)
    yield


def test_the_cli_decodes_v1_latents_by_their_stored_id_locally(tmp_path: Path, cli_settings: None) -> None:
    files = v1_files(tmp_path / "lat")
    for extra in ([], ["--model", "ec64"], ["--model", V1_ID]):
        out = tmp_path / f"png{len(extra)}{extra[-1][:5] if extra else ''}"
        assert cli.main(["decode", str(tmp_path / "lat"), "-o", f"{out}/", "--local", "-q", *extra]) == 0, extra
        for path, digest in files:
            assert digest_of_png((out / f"{path.stem}.png").read_bytes()) == digest, (extra, path.name)


def test_the_cli_encodes_with_a_model_id_and_records_it(
    tmp_path: Path, cli_settings: None, v2_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seven = DIGITS_DIR / "test0000_digit7.png"
    assert cli.main(["encode", str(seven), "-o", f"{tmp_path}/v1/", "--local", "--model", V1_ID, "-q"]) == 0
    written = tmp_path / "v1" / "test0000_digit7.lat"
    assert written.read_bytes().hex() == V1["latents"]["test0000_digit7"][0]["latent"]
    assert store.Recorded().model_id(written) == V1_ID
    assert cli.main(["encode", str(seven), "-o", f"{tmp_path}/v2/", "--local", "--model", "ec64", "-q"]) == 0
    assert store.Recorded().model_id(tmp_path / "v2" / "test0000_digit7.lat") == v2_id
    # --model <v2 id> on v1's latents: refused in one line, nothing written
    code = cli.main(["decode", str(tmp_path / "v1"), "-o", f"{tmp_path}/png/", "--local", "--model", v2_id, "-q"])
    assert code == cli.MODEL_MISMATCH and not (tmp_path / "png").exists()
    assert f"were made by {V1_ID}" in capsys.readouterr().err
    assert cli.main(["models", "--local"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"ec64  {V1_ID}", f"ec64  {v2_id}  (current)"]


def test_the_cli_decodes_v1_latents_by_their_stored_id_from_a_real_server(tmp_path: Path, v2_weights: Path) -> None:
    files = v1_files(tmp_path / "lat")
    stored = tmp_path / "v1.lats"
    stored.write_bytes(
        container.write_container(container.Container(V1_ID, "24xac", [p.read_bytes() for p, _ in files], None))
    )
    server = Server(V1_WEIGHTS, tmp_path / "server.log", env={"MNIST_CODEC_MODELS": json.dumps([str(v2_weights)])})
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/models").json()["names"]["ec64"] != V1_ID  # v2 is what ec64 means
        assert cli.main(["decode", str(tmp_path / "lat"), "-o", f"{tmp_path}/png/", "--url", server.url, "-q"]) == 0
        assert cli.main(["decode", str(stored), "-o", f"{tmp_path}/box/", "--url", server.url, "-q"]) == 0
    finally:
        server.stop()
    for path, digest in files:
        assert digest_of_png((tmp_path / "png" / f"{path.stem}.png").read_bytes()) == digest, path.name
    boxed = sorted((tmp_path / "box").glob("*.png"))
    assert len(boxed) == len(files)
    assert sorted(digest_of_png(p.read_bytes()) for p in boxed) == sorted(digest for _, digest in files)


# --------------------------------------------------------------------------- which version a name means


async def test_default_versions_pins_v1_and_bare_latents_decode_with_it(v2_weights: Path, v2_id: str) -> None:
    settings = Settings(weights=V1_WEIGHTS, models=[v2_weights], device="cpu", default_versions=f"ec64={V1_ID}")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        body = (await client.get("/models")).json()
        assert body["names"] == {"ec64": V1_ID} and [m["current"] for m in body["models"]] == [True, False]
        for path in ("/decode", "/decode?model=ec64"):
            for _, _, data, digest in LATENTS[:8]:
                response = await client.post(path, content=data)
                assert response.headers["x-model-id"] == V1_ID and digest_of_png(response.content) == digest
        v2 = await client.post(f"/decode?model={v2_id}", content=LATENTS[0][2])
        assert v2.status_code == 200 and v2.headers["x-model-id"] == v2_id


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        pytest.param("ec64=ec64-000000000000", "the default version ec64=ec64-000000000000 is not among", id="unknown"),
        pytest.param(
            f"mlp6={V1_ID}", f"the default version mlp6={V1_ID} is a version of ec64, not mlp6", id="other-name"
        ),
        pytest.param("ec64", "expected comma-separated NAME=MODEL_ID pairs", id="no-equals"),
        pytest.param(f"ec64={V1_ID},ec64={V1_ID}", "each name once", id="twice"),
    ],
)
async def test_a_bad_default_version_stops_the_start_in_one_line(v2_weights: Path, pins: str, message: str) -> None:
    app = create_app(Settings(weights=V1_WEIGHTS, models=[v2_weights], device="cpu", default_versions=pins))
    with pytest.raises(StartupError, match=message) as caught:
        async with app.router.lifespan_context(app):
            pass
    assert "\n" not in str(caught.value)


def test_default_versions_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_CODEC_DEFAULT_VERSIONS", f" ec64={V1_ID} , mlp6=mlp6-40870c98c2d7,")
    assert parse_default_versions(Settings().default_versions) == {"ec64": V1_ID, "mlp6": "mlp6-40870c98c2d7"}
    assert parse_default_versions("") == {}


def test_the_newest_by_trained_at_wins_ties_go_to_the_later_and_unknown_dates_sort_oldest() -> None:
    def version(tag: str, trained_at: str | None) -> Any:
        return SimpleNamespace(tag=tag, trained_at=trained_at)

    assert newest([version("a", "2026-01-01T00:00:00+00:00"), version("b", None)]).tag == "a"
    assert newest([version("a", None), version("b", None)]).tag == "b"
    assert newest([version("a", "2026-01-02T00:00:00+00:00"), version("b", "2026-01-01T00:00:00+00:00")]).tag == "a"
    assert newest([version("a", "2026-01-01T00:00:00+00:00"), version("b", "2026-01-01T00:00:00+00:00")]).tag == "b"


async def test_a_checkpoint_without_trained_at_loads_sorts_oldest_and_says_null(tmp_path: Path, v2_id: str) -> None:
    v1 = checkpoint.read(V1_WEIGHTS)
    old = tmp_path / "old.safetensors"
    checkpoint.write(
        old,
        checkpoint.Checkpoint(
            **{**v1.__dict__, "metadata": {k: v for k, v in v1.metadata.items() if k != "trained_at"}}
        ),
    )
    app = create_app(Settings(weights=old, models=[], device="cpu"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
    ):
        [model] = (await client.get("/models")).json()["models"]
    assert model["id"] == V1_ID and model["trained_at"] is None and model["current"] is True


async def test_two_paths_to_the_same_weights_are_served_once(
    tmp_path: Path, v2_weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(V1_WEIGHTS.read_bytes())
    app = create_app(Settings(weights=V1_WEIGHTS, models=[copy, v2_weights, V1_WEIGHTS], device="cpu"))
    with caplog.at_level(logging.INFO, logger="app"):
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client,
        ):
            ids = [m["id"] for m in (await client.get("/models")).json()["models"]]
    assert len(ids) == 2 and ids[0] == V1_ID
    assert f"{copy} holds {V1_ID}, loaded already; serving it once" in caplog.text


def test_codecs_resolve_is_the_one_rule(v2_weights: Path) -> None:
    v1, v2 = load_codec(V1_WEIGHTS, "cpu"), load_codec(v2_weights, "cpu")
    mlp6 = load_codec(COMMITTED_WEIGHTS, "cpu")
    codecs = Codecs([mlp6, v1, v2])
    assert codecs.default is mlp6 and codecs.by_name["ec64"] is v2
    assert codecs.resolve(None) is mlp6 and codecs.resolve(v2.model_id) is v2 and codecs.resolve(V1_ID) is v1
    assert codecs.resolve(None, V1_ID) is v1 and codecs.resolve("ec64", V1_ID) is v1
    assert codecs.resolve(V1_ID, V1_ID) is v1 and codecs.resolve(None, mlp6.model_id) is mlp6
    for model, claimed, status in [
        ("mlp6", V1_ID, 409),
        (v2.model_id, V1_ID, 409),
        ("ec64", mlp6.model_id, 409),
        (None, "ec64-000000000000", 409),
        ("ec65", V1_ID, 404),
        ("ec64", None, 409),  # bare bytes, two versions: not guessed
    ]:
        from app.service.errors import status_for

        with pytest.raises(Exception) as caught:
            codecs.resolve(model, claimed)
        assert status_for(caught.value) == status, (model, claimed)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a second ec64 folder breaks nothing


def test_a_second_ec64_folder_keeps_each_versions_efforts_and_the_evaluation(
    tmp_path: Path, synthetic_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model_weights/ec64/v2/ with its own efforts.json: each version reads its own figures, and
    `app.training.evaluate` measures both (a path listed twice: once), in rows kept apart."""
    from app.training import evaluate

    v2 = make_v2(tmp_path / "model_weights")
    v2_id = checkpoint.read(v2).model_id
    figures_path(v2).write_text(json.dumps({"model_id": v2_id, "levels": [{"level": 2, "psnr_db": 31.5}]}))
    assert figures_path(v2) == tmp_path / "model_weights" / "ec64" / "v2" / "ec64.efforts.json"
    assert load_codec(v2, "cpu").efforts[2].psnr_db == 31.5
    assert load_codec(V1_WEIGHTS, "cpu").efforts[2].psnr_db not in (None, 31.5)  # v1's own, committed

    monkeypatch.setenv("MNIST_CODEC_WEIGHTS", str(V1_WEIGHTS))
    monkeypatch.setenv("MNIST_CODEC_MODELS", json.dumps([str(v2), str(V1_WEIGHTS)]))
    out = tmp_path / "docs"
    argv = ["--limit", "2", "--data-root", str(synthetic_mnist), "--out", str(out), "--no-classic", "--efforts"]
    assert evaluate.main([*argv, "--alone", "1", "--batch", "2"]) == 0
    result = json.loads((out / "rate_distortion.json").read_text())
    assert [row["codec"] for row in result["rows"]] == [f"ec64 {V1_ID}", f"ec64 {v2_id}"]
    assert [(r["model_id"], r["level"]) for r in result["efforts"]] == [
        (i, n) for i in (V1_ID, v2_id) for n in range(4)
    ]
    assert (out / "rate_distortion.png").read_bytes().startswith(b"\x89PNG")


def test_the_committed_settings_serve_what_is_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every checkpoint under model_weights is in the default settings, and only those."""
    for name in ("MNIST_CODEC_WEIGHTS", "MNIST_CODEC_MODELS"):
        monkeypatch.delenv(name, raising=False)
    committed = sorted(path.relative_to(ROOT) for path in (ROOT / "model_weights").rglob("*.safetensors"))
    assert sorted(Settings().checkpoints()) == committed

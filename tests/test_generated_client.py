"""The Python client openapi-python-client generates from /openapi.json, with the config the repo ships:
no warnings, and a digit round-trips through it with every model."""

import importlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "clients" / "openapi-python-client.yaml"
PACKAGE = "mnist_codec_client"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def generated(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    out = tmp_path_factory.mktemp("client")
    bin_dir = str(Path(sys.executable).parent)  # its ruff post-hooks, from this environment
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    command = [str(Path(bin_dir) / "openapi-python-client"), "generate", "--url", f"{live_server.url}/openapi.json"]
    command += ["--config", str(CONFIG), "--output-path", str(out / PACKAGE), "--meta", "none"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr  # no unsupported content types
    sys.path.insert(0, str(out))
    try:
        names = ["client", "types", "models", "api.default.encode_encode_post", "api.default.decode_decode_post"]
        names += ["api.default.models_models_get"]
        yield {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
    finally:
        sys.path.remove(str(out))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_a_digit_round_trips_with_every_model(
    generated: dict[str, ModuleType], live_server: LiveServer, seven_png: bytes
) -> None:
    with generated["client"].Client(base_url=live_server.url, raise_on_unexpected_status=True) as client:
        round_trips(client, generated, seven_png)


def round_trips(client: Any, generated: dict[str, ModuleType], seven_png: bytes) -> None:
    models: Any = generated["models"]
    types: Any = generated["types"]
    encode: Any = generated["api.default.encode_encode_post"]
    decode: Any = generated["api.default.decode_decode_post"]
    listed = generated["api.default.models_models_get"].sync(client=client)
    names = list(dict.fromkeys(info.name for info in listed.models))
    # ?model= takes a name (its current version) or a model id (exactly that version)
    current = {info.name: info.id for info in listed.models if info.current}
    assert all(isinstance(info.trained_at, str) for info in listed.models)
    assert names == ["mlp6", "mlp24", "ec64"] and len(listed.models) == 4  # the committed models: ec64 v1 and v2
    assert sorted(model.value for model in models.ModelName) == sorted([*names, *(i.id for i in listed.models)])
    for name in models.ModelName:
        body = models.EncodeEncodePostBody(img=types.File(payload=io.BytesIO(seven_png), file_name="7.png"))
        encoded = encode.sync_detailed(client=client, body=body, model=name)
        assert encoded.status_code == 200, encoded.content
        latent = encoded.parsed.payload.read()
        assert len(latent) == 24
        model_id = encoded.headers["x-model-id"]
        assert model_id == current.get(name.value, name.value)
        # The X-Model-Id the encode returned goes back with the bytes, as a client that stores latents does:
        # ec64's bytes alone are a 409 (two versions), and other weights would read them as another digit.
        png = decode.sync(client=client, body=types.File(payload=io.BytesIO(latent)), x_model_id=model_id)
        assert isinstance(png, types.File), png  # not None: image/png is octet-stream to the generator
        assert png.payload.read().startswith(PNG_SIGNATURE)
        # File(payload=...) without a file name, as users write it first: a part with no filename
        nameless = models.EncodeEncodePostBody(img=types.File(payload=io.BytesIO(seven_png)))
        again = encode.sync(client=client, body=nameless, model=name)
        assert isinstance(again, types.File), again
        assert again.payload.read() == latent
        if name.value == "ec64":  # without the id, 24 bytes of a name with two versions are refused, not guessed
            bare = decode.sync_detailed(client=client, body=types.File(payload=io.BytesIO(latent)), model=name)
            assert bare.status_code == 409, bare.content

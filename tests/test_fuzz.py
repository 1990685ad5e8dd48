"""Property and schema fuzzing, bounded so the suite stays fast.

schemathesis generates requests from the app's own OpenAPI schema (in process,
ASGI) with strategies that also make valid PNG digits and valid 24-byte
latents, and checks every answer: never a 5xx, and status code, content type
and body always as the schema says.
"""

import io
from collections import Counter

import numpy as np
import schemathesis
from conftest import COMMITTED_WEIGHTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.codec import container, imaging, latent
from app.codec.codecs import load_codec
from app.errors import LatentError
from app.main import create_app
from app.settings import Settings

F32 = latent.get_format("6xf32le")  # the reference format, mlp6's

FINITE_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
MODES = st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1"])


@st.composite
def digit_pngs(draw: st.DrawFn) -> bytes:
    """A valid 28x28 PNG in one of several flavours."""
    pixels = np.frombuffer(draw(st.binary(min_size=784, max_size=784)), dtype=np.uint8).reshape(28, 28)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(draw(MODES)).save(buffer, format="PNG")
    return buffer.getvalue()


latents = st.lists(FINITE_F32, min_size=6, max_size=6).map(lambda z: F32.pack(np.array(z, dtype=np.float32)))
png_uploads = st.one_of(
    digit_pngs(),
    digit_pngs().map(lambda data: data[: len(data) // 2]),  # truncated
    st.binary(max_size=200).map(lambda tail: imaging.PNG_SIGNATURE + tail),  # magic then garbage
    st.binary(max_size=200),
)
latent_bodies = st.one_of(latents, st.lists(latents, max_size=4).map(b"".join), st.binary(max_size=64))


@st.composite
def npy_digits(draw: st.DrawFn) -> bytes:
    """A .npy body: mostly the expected uint8 (N, 28, 28), sometimes another dtype or shape."""
    count = draw(st.integers(1, 3))
    shape, dtype = draw(
        st.sampled_from(
            [((count, 28, 28), "u1")] * 4 + [((count, 784), "u1"), ((count, 28, 28), "<f4"), ((0, 28, 28), "u1")]
        )
    )
    array = np.frombuffer(draw(st.binary(min_size=1, max_size=1)) * int(np.prod(shape)), dtype="u1")
    buffer = io.BytesIO()
    np.save(buffer, array.reshape(shape).astype(dtype))
    return buffer.getvalue()


npy_bodies = st.one_of(npy_digits(), st.binary(max_size=200))


@st.composite
def containers(draw: st.DrawFn) -> bytes:
    """A latent container (app.codec.latent): mostly well formed, sometimes cut short or with a byte changed."""
    items = draw(st.lists(latents, min_size=1, max_size=3))
    model_id = draw(st.sampled_from(["mlp6-40870c98c2d7", "mlp24-000000000000", "x"]))
    data = container.write_container(container.Container(model_id, "6xf32le", items, None))
    cut = draw(st.sampled_from([len(data)] * 3 + [len(data) - 1, 40, 8]))
    data = data[:cut]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


container_bodies = st.one_of(containers(), st.binary(max_size=120).map(lambda tail: container.CONTAINER_MAGIC + tail))

schemathesis.openapi.media_type("image/png", png_uploads)
schemathesis.openapi.media_type("application/octet-stream", latent_bodies)
schemathesis.openapi.media_type("application/x-npy", npy_bodies)
schemathesis.openapi.media_type(container.CONTAINER_MEDIA_TYPE, container_bodies)

app = create_app(Settings(weights=COMMITTED_WEIGHTS, device="cpu"))
app.state.codec = load_codec(COMMITTED_WEIGHTS, "cpu")  # the lifespan's work
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
statuses: Counter[tuple[str, int]] = Counter()

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_conforms_to_the_schema(case: schemathesis.Case) -> None:
    response = case.call()
    statuses[(case.path, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


def test_the_fuzzer_reached_success_and_failure_paths() -> None:
    """The strategies above are not just noise: both endpoints saw 200s and 4xx."""
    for path in ("/encode", "/decode", "/encode/batch", "/decode/batch"):
        assert statuses[(path, 200)] > 0, statuses
        assert any(status >= 400 for (p, status) in statuses if p == path), statuses


@given(st.lists(FINITE_F32, min_size=6, max_size=6))
@settings(max_examples=200, deadline=None)
def test_any_finite_latent_decodes_to_a_28x28_png(values: list[float]) -> None:
    png = CODEC.decode(F32.pack(np.array(values, dtype=np.float32)))
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))


@given(st.binary().filter(lambda data: len(data) != latent.LATENT_BYTES))
@settings(max_examples=200)
def test_any_other_length_is_rejected(data: bytes) -> None:
    try:
        F32.unpack(data)
    except LatentError as exc:
        assert f"received {len(data)} bytes" in str(exc)
    else:
        raise AssertionError("accepted a latent of the wrong length")


@given(st.binary(min_size=24, max_size=24))
@settings(max_examples=300)
def test_pack_unpack_round_trip_is_exact(data: bytes) -> None:
    z = np.frombuffer(data, dtype="<f4")
    if np.isfinite(z).all():
        assert F32.pack(F32.unpack(data)) == data
    else:
        try:
            F32.unpack(data)
        except LatentError:
            return
        raise AssertionError("accepted a NaN or infinite value")


CODEC = app.state.codec

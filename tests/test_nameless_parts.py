"""A file part with no filename, as httpx and the generated client send `File(payload=...)`:
accepted when it carries a non-text Content-Type or binary bytes, on the one-part shortcut and
on the full parser's path alike; a true text field gets a 422 that names the case."""

import httpx
import numpy as np
import pytest

from app.service import multipart
from app.service.multipart import one_file_part

pytestmark = pytest.mark.anyio

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PREAMBLE = b"A preamble, which sends the body down the full parser's path.\r\n"


def nameless(name: str, data: bytes, part_type: str | None) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'
    if part_type is not None:
        head += f"Content-Type: {part_type}\r\n"
    return (head + "\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


PATHS = [pytest.param(b"", id="shortcut"), pytest.param(PREAMBLE, id="full-parser")]
TYPES = [pytest.param("image/png", id="image-png"), pytest.param("application/octet-stream", id="octet")]
TYPES += [pytest.param(None, id="no-type")]


@pytest.mark.parametrize("preamble", PATHS)
@pytest.mark.parametrize("part_type", TYPES)
async def test_encode_accepts_a_png_part_without_a_filename(
    client: httpx.AsyncClient, seven_png: bytes, preamble: bytes, part_type: str | None
) -> None:
    plain = await client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
    body = preamble + nameless("img", seven_png, part_type)
    response = await client.post("/encode", content=body, headers={"content-type": CONTENT_TYPE})
    assert response.status_code == 200, response.text
    assert response.content == plain.content


@pytest.mark.parametrize("preamble", PATHS)
async def test_decode_accepts_a_latent_part_without_a_filename(
    client: httpx.AsyncClient, seven_png: bytes, preamble: bytes
) -> None:
    latent = (await client.post("/encode", files={"img": ("7.png", seven_png)})).content
    plain = await client.post("/decode", content=latent)
    body = preamble + nameless("latent", latent, "application/octet-stream")
    response = await client.post("/decode", content=body, headers={"content-type": CONTENT_TYPE})
    assert response.status_code == 200, response.text
    assert response.content == plain.content


async def test_httpx_files_without_a_filename_encode(client: httpx.AsyncClient, seven_png: bytes) -> None:
    """What `File(payload=BytesIO(png))` of the generated client becomes: (None, data, None)."""
    plain = await client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
    response = await client.post("/encode", files={"img": (None, seven_png, None)})
    assert response.status_code == 200, response.text
    assert response.content == plain.content


@pytest.mark.parametrize("preamble", PATHS)
@pytest.mark.parametrize("part_type", [pytest.param(None, id="no-type"), pytest.param("text/plain", id="text")])
async def test_a_text_field_is_a_422_that_names_the_case(
    client: httpx.AsyncClient, preamble: bytes, part_type: str | None
) -> None:
    body = preamble + nameless("img", b"7.png", part_type)  # curl -F img=7.png: the @ forgotten
    response = await client.post("/encode", content=body, headers={"content-type": CONTENT_TYPE})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "must be a file upload" in detail and "no filename" in detail and "image/png" in detail


@pytest.mark.parametrize(
    ("data", "part_type"),
    [
        (b"\x89PNG\r\n\x1a\n....", None),
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"plain text", None),
        (b"plain text", "text/plain; charset=utf-8"),
        (b"plain text", "application/octet-stream"),
        (np.arange(24, dtype=np.uint8).tobytes(), None),  # ASCII-only bytes: text, without a type
    ],
)
def test_the_shortcut_and_the_full_parser_agree(data: bytes, part_type: str | None) -> None:
    body = nameless("img", data, part_type)
    (part,) = multipart.parse(body, CONTENT_TYPE, 8, 8)
    full = bytes(part.data) if multipart.counts_as_file(part.filename, part.content_type, part.data) else None
    assert one_file_part(body, CONTENT_TYPE, "img") == full
    text = data.isascii() and (part_type is None or part_type.startswith("text/"))
    assert (full is None) == text

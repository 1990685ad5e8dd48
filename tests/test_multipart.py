"""Multipart bodies as RFC 2046 (5.1.1) frames them: the preamble and the epilogue are ignored."""

from collections.abc import AsyncGenerator

import httpx
import pytest

from app.service.multipart import one_file_part, skip_preamble

pytestmark = pytest.mark.anyio

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="d.png"\r\n'
    return (head + "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"


def framed(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    return preamble + b"".join(parts) + f"--{BOUNDARY}--\r\n".encode() + epilogue


PREAMBLE = b"This is the preamble: mail readers show it to people without MIME.\r\nA second line.\r\n"
EPILOGUE = b"An epilogue, also to be ignored, even one naming --b0undary.\r\n"


@pytest.mark.parametrize(
    ("preamble", "epilogue"),
    [
        pytest.param(PREAMBLE, b"", id="preamble"),
        pytest.param(b"", EPILOGUE, id="epilogue"),
        pytest.param(PREAMBLE, EPILOGUE, id="both"),
        pytest.param(b"\r\n", b"", id="bare-crlf-preamble"),
    ],
)
async def test_encode_ignores_the_preamble_and_epilogue(
    client: httpx.AsyncClient, seven_png: bytes, preamble: bytes, epilogue: bytes
) -> None:
    plain = await client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
    body = framed(part("img", seven_png), preamble=preamble, epilogue=epilogue)
    response = await client.post("/encode", content=body, headers={"content-type": CONTENT_TYPE})
    assert response.status_code == 200, response.text
    assert response.content == plain.content


async def test_batch_encode_ignores_the_preamble(client: httpx.AsyncClient, seven_png: bytes) -> None:
    single = await client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})
    body = framed(part("img", seven_png), part("img", seven_png), preamble=PREAMBLE, epilogue=EPILOGUE)
    response = await client.post("/encode/batch", content=body, headers={"content-type": CONTENT_TYPE})
    assert response.status_code == 200, response.text
    assert response.content == single.content * 2


async def test_a_body_with_no_boundary_at_all_is_still_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/encode", content=b"no parts here", headers={"content-type": CONTENT_TYPE})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed multipart body")


def test_skip_preamble_finds_the_first_delimiter_line_only() -> None:
    body = framed(part("img", b"x"))
    assert skip_preamble(body, CONTENT_TYPE) == body
    assert skip_preamble(PREAMBLE + body, CONTENT_TYPE) == body
    # A boundary string inside a preamble line is not a delimiter: only one at a line's start is.
    tricky = b"mentions --b0undary mid-line\r\n" + body
    assert skip_preamble(tricky, CONTENT_TYPE) == body


def text(name: str, value: bytes) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"


async def test_the_batch_parser_reads_what_starlettes_reads() -> None:
    """app/service/multipart.py (the batch endpoint's, in a worker thread) against Starlette's parser."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartParser

    from app.service import multipart

    tricky = b"\r\n--b0undar, not a delimiter\r\n"
    body = framed(
        part("img", b"PNG one"), text("note", "caf\u00e9".encode()), part("other", b"x" * 70_000), part("img", tricky)
    )

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    form = await MultiPartParser(Headers({"content-type": CONTENT_TYPE}), stream()).parse()
    theirs = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            theirs.append((name, value.filename, await value.read()))
        else:
            theirs.append((name, None, value.encode()))
    await form.close()
    ours = [(p.name, p.filename, bytes(p.data)) for p in multipart.parse(body, CONTENT_TYPE, 10, 10)]
    assert ours == theirs and len(ours) == 4


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        pytest.param(framed(text("img", b"not a file")), 422, "item 0: field 'img' must be a file upload", id="text"),
        pytest.param(
            framed(b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nx\r\n"),
            400,
            'malformed multipart body: The Content-Disposition header field "name" must be provided.',
            id="no-name",
        ),
        pytest.param(framed(b"--b0undary\r\nno colon\r\n\r\nx\r\n"), 400, "Invalid multipart data", id="bad-header"),
        pytest.param(framed(*[text(f"t{i}", b"x") for i in range(9)]), 400, "Too many fields", id="fields"),
    ],
)
async def test_batch_multipart_errors(client: httpx.AsyncClient, body: bytes, status: int, detail: str) -> None:
    response = await client.post("/encode/batch", content=body, headers={"content-type": CONTENT_TYPE})
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(framed(part("img", b"\x89PNG data")), id="one-part"),
        pytest.param(framed(part("img", b"data ending --b0undar")), id="boundary-prefix-in-data"),
        pytest.param(framed(part("img", b"x"), epilogue=EPILOGUE), id="epilogue"),
    ],
)
def test_the_one_part_shortcut_finds_what_the_full_parser_finds(body: bytes) -> None:
    data = one_file_part(body, CONTENT_TYPE, "img")
    start = body.index(b"\r\n\r\n") + 4
    assert data == body[start : body.index(b"\r\n--" + BOUNDARY.encode(), start)]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(framed(part("img", b"x"), preamble=PREAMBLE), id="preamble"),
        pytest.param(framed(part("img", b"x"), part("img", b"y")), id="two-parts"),
        pytest.param(framed(part("other", b"x")), id="other-name"),
        pytest.param(
            framed(part("img", b"x").replace(b'; filename="d.png"', b"").replace(b"image/png", b"text/plain")),
            id="text-field",
        ),
        pytest.param(framed(part("img", b"x").replace(b"Content-Type", b"Content-Transfer-Encoding")), id="odd-header"),
        pytest.param(framed(part("img", b"x"))[:-12], id="no-close-delimiter"),
        pytest.param(b"no parts here", id="not-multipart"),
    ],
)
def test_the_one_part_shortcut_leaves_everything_else_to_the_full_parser(body: bytes) -> None:
    assert one_file_part(body, CONTENT_TYPE, "img") is None

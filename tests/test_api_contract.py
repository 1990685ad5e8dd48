"""What the API promises its clients: containers from the batch endpoints, one error order
for single and batch endpoints, and an OpenAPI document that declares what is sent."""

from typing import Any

import httpx
import numpy as np
import pytest
from openapi_spec_validator import validate

from app.codec import container

pytestmark = pytest.mark.anyio

Digits = list[tuple[str, bytes, np.ndarray]]
CONTAINER = container.CONTAINER_MEDIA_TYPE


async def test_encode_batch_returns_a_container_when_asked(client: httpx.AsyncClient, digits: Digits) -> None:
    files = [("img", (f"{name}.png", png, "image/png")) for name, png, _ in digits[:5]]
    raw = await client.post("/encode/batch?model=mlp24", files=files)
    boxed = await client.post("/encode/batch?model=mlp24", files=files, headers={"accept": CONTAINER})
    assert raw.headers["content-type"] == "application/octet-stream"  # raw stays the default
    assert boxed.status_code == 200 and boxed.headers["content-type"] == CONTAINER
    stored = container.read_container(boxed.content)
    assert stored.model_id == boxed.headers["x-model-id"] == raw.headers["x-model-id"]
    assert stored.format_name == "24xu8"
    assert b"".join(stored.latents) == raw.content
    assert stored.names == [f"{name}.png" for name, _, _ in digits[:5]]


async def test_an_npy_batch_gives_a_container_without_names(client: httpx.AsyncClient, digits: Digits) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.stack([pixels for _, _, pixels in digits[:3]]))
    response = await client.post(
        "/encode/batch", content=buffer.getvalue(), headers={"content-type": "application/x-npy", "accept": CONTAINER}
    )
    stored = container.read_container(response.content)
    assert stored.names is None and len(stored.latents) == 3 and stored.format_name == "6xf32le"


async def test_decode_batch_takes_a_container_and_its_model(client: httpx.AsyncClient, digits: Digits) -> None:
    files = [("img", (f"{name}.png", png, "image/png")) for name, png, _ in digits[:4]]
    boxed = await client.post("/encode/batch?model=mlp24", files=files, headers={"accept": CONTAINER})
    stored = container.read_container(boxed.content)
    # No ?model=: the container's model id picks mlp24, as X-Model-Id would.
    from_box = await client.post("/decode/batch", content=boxed.content, headers={"content-type": CONTAINER})
    from_raw = await client.post(
        "/decode/batch?model=mlp24",
        content=b"".join(stored.latents),
        headers={"content-type": "application/octet-stream"},
    )
    assert from_box.status_code == 200, from_box.text
    assert from_box.content == from_raw.content
    assert from_box.headers["x-model-id"] == stored.model_id


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        pytest.param({"model_id": "mlp24-000000000000"}, 409, "mlp24-000000000000", id="weights-not-here"),
        pytest.param({"query": "?model=mlp6"}, 409, "model 'mlp6' here is", id="other-model-named"),
        pytest.param({"header": "mlp6-000000000000"}, 409, "X-Model-Id says", id="header-disagrees"),
        pytest.param({"cut": 10}, 422, "truncated latent container", id="truncated"),
    ],
)
async def test_decode_batch_refuses_a_container_it_must_not_decode(
    client: httpx.AsyncClient, digits: Digits, change: dict[str, Any], status: int, detail: str
) -> None:
    boxed = (
        await client.post(
            "/encode/batch?model=mlp24", files=[("img", ("a.png", digits[0][1]))], headers={"accept": CONTAINER}
        )
    ).content
    if "model_id" in change:
        box = container.read_container(boxed)
        boxed = container.write_container(
            container.Container(change["model_id"], box.format_name, box.latents, box.names)
        )
    if "cut" in change:
        boxed = boxed[: -change["cut"]]
    headers = {"content-type": CONTAINER}
    if "header" in change:
        headers["x-model-id"] = change["header"]
    response = await client.post(f"/decode/batch{change.get('query', '')}", content=boxed, headers=headers)
    assert response.status_code == status
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "request_args"),
    [
        pytest.param("/encode", {"files": {"img": ("a.gif", b"GIF89a....")}}, id="encode-not-a-png"),
        pytest.param("/encode", {"content": b"no form"}, id="encode-no-form"),
        pytest.param("/encode/batch", {"files": [("img", ("a.gif", b"GIF89a...."))]}, id="batch-not-a-png"),
        pytest.param(
            "/encode/batch",
            {"content": b"not npy", "headers": {"content-type": "application/x-npy"}},
            id="batch-not-npy",
        ),
        pytest.param("/decode", {"content": b"short"}, id="decode-short"),
        pytest.param("/decode/batch", {"content": b"short"}, id="decode-batch-short"),
        pytest.param(
            "/decode/batch",
            {"content": b"MNISTLAT", "headers": {"content-type": CONTAINER}},
            id="decode-batch-bad-container",
        ),
    ],
)
async def test_an_unknown_model_is_the_first_error_everywhere(
    client: httpx.AsyncClient, path: str, request_args: dict[str, Any]
) -> None:
    response = await client.post(f"{path}?model=nope", **request_args)
    assert response.status_code == 404, response.text
    assert "unknown model 'nope'" in response.json()["detail"]


async def test_the_openapi_document_is_valid(client: httpx.AsyncClient) -> None:
    validate((await client.get("/openapi.json")).json())


async def test_openapi_declares_the_response_headers(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/encode", "/decode", "/encode/batch", "/decode/batch"):
        assert "X-Model-Id" in paths[path]["post"]["responses"]["200"]["headers"], path
    for path, item in paths.items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response.get("headers", {}), (method, path, status)


async def test_openapi_documents_the_container(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert CONTAINER in paths["/encode/batch"]["post"]["responses"]["200"]["content"]
    assert CONTAINER in paths["/decode/batch"]["post"]["requestBody"]["content"]
    assert "409" in paths["/decode/batch"]["post"]["responses"]

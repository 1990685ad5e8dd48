"""X-Request-Id, GET /metrics and the JSON access log (app/service/observability.py)."""

import json
import logging
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import LiveServer
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families

from app.service.observability import observe_batch

pytestmark = pytest.mark.anyio

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, object]]]:
    """The JSON access-log lines written while the test runs."""
    lines: list[dict[str, object]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    handler = Collect()
    logger = logging.getLogger("app.access")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


async def test_each_response_gets_a_new_request_id(client: httpx.AsyncClient) -> None:
    first, second = (await client.get("/healthz")).headers, (await client.get("/healthz")).headers
    assert GENERATED_ID.fullmatch(first["x-request-id"]) and GENERATED_ID.fullmatch(second["x-request-id"])
    assert first["x-request-id"] != second["x-request-id"]


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param("abc-123", id="token"),
        pytest.param("trace:1.2_x", id="punctuation"),
        pytest.param("a" * 128, id="128-chars"),
    ],
)
async def test_a_sane_client_request_id_is_echoed(client: httpx.AsyncClient, sent: str) -> None:
    response = await client.get("/healthz", headers={"x-request-id": sent})
    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"a" * 129, id="too-long"),
        pytest.param(b"two words", id="space"),
        pytest.param(b"", id="empty"),
        pytest.param("caf\u00e9".encode("latin-1"), id="non-ascii"),
        pytest.param(b'a"b', id="quote"),
    ],
)
async def test_an_odd_client_request_id_is_replaced(client: httpx.AsyncClient, sent: bytes) -> None:
    response = await client.get("/healthz", headers={"x-request-id": sent})
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/no-such-page", None, 404, id="not-found"),
        pytest.param("GET", "/encode", None, 405, id="wrong-method"),
        pytest.param("POST", "/decode", b"short", 422, id="bad-latent"),
        pytest.param("POST", "/decode", b"x" * (2 << 20), 413, id="too-large"),
    ],
)
async def test_error_responses_carry_the_request_id(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    response = await client.request(method, path, content=body, headers={"x-request-id": "err-1"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "err-1"


async def test_a_crash_is_a_500_with_the_request_id_and_is_counted(app: FastAPI) -> None:
    async def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/crash", crash)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://codec.test") as client:
        response = await client.get("/crash", headers={"x-request-id": "bug-1"})
        assert (response.status_code, response.json()) == (500, {"detail": "internal server error"})
        assert response.headers["x-request-id"] == "bug-1"
        metrics = samples((await client.get("/metrics")).text)
    assert metrics[("mnist_codec_requests_total", (("endpoint", "/crash"), ("method", "GET"), ("status", "500")))] == 1


async def test_metrics_count_requests_by_endpoint_and_status(
    client: httpx.AsyncClient, app: FastAPI, seven_png: bytes
) -> None:
    assert (await client.post("/encode", files={"img": ("7.png", seven_png, "image/png")})).status_code == 200
    assert (await client.post("/decode", content=b"short")).status_code == 422
    assert (await client.post("/decode", content=b"short")).status_code == 422
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    metrics = samples(response.text)
    assert (
        metrics[("mnist_codec_requests_total", (("endpoint", "/encode"), ("method", "POST"), ("status", "200")))] == 1
    )
    assert (
        metrics[("mnist_codec_requests_total", (("endpoint", "/decode"), ("method", "POST"), ("status", "422")))] == 2
    )
    assert metrics[("mnist_codec_request_duration_seconds_count", (("endpoint", "/decode"),))] == 2
    assert metrics[("mnist_codec_request_duration_seconds_sum", (("endpoint", "/decode"),))] > 0
    model = app.state.codec.model_id
    info = (("current", "true"), ("device", "cpu"), ("model_id", model), ("name", app.state.codec.name))
    assert metrics[("mnist_codec_model_info", info)] == 1


async def test_unknown_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.get(f"/scan/{n}")
    metrics = samples((await client.get("/metrics")).text)
    assert metrics[("mnist_codec_requests_total", (("endpoint", "other"), ("method", "GET"), ("status", "404")))] == 3


async def test_batch_endpoints_report_their_sizes(app: FastAPI) -> None:
    async def fake_batch(request: Request) -> dict[str, int]:
        observe_batch(request, "mlp6-0123456789ab", 5)
        return {"items": 5}

    app.add_api_route("/fake/batch", fake_batch, methods=["POST"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as client:
        await client.post("/fake/batch")
        metrics = samples((await client.get("/metrics")).text)
    labels = (("endpoint", "/fake/batch"), ("model_id", "mlp6-0123456789ab"))
    assert metrics[("mnist_codec_batch_size_count", labels)] == 1
    assert metrics[("mnist_codec_batch_size_sum", labels)] == 5


async def test_one_json_access_line_per_request(
    client: httpx.AsyncClient, access_lines: list[dict[str, object]]
) -> None:
    await client.post("/decode", content=b"short", headers={"x-request-id": "log-1"})
    [line] = access_lines
    assert line["request_id"] == "log-1"
    assert (line["method"], line["path"], line["endpoint"], line["status"]) == ("POST", "/decode", "/decode", 422)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert isinstance(line["bytes_out"], int) and line["bytes_out"] > 0


def test_the_real_server_logs_json_lines_instead_of_uvicorns(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/healthz", headers={"x-request-id": "live-log-1"}, timeout=5)
    assert response.headers["x-request-id"] == "live-log-1"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in live_server.log.read_text().splitlines() if "live-log-1" in line]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1, live_server.log.read_text()
    assert json.loads(lines[0])["endpoint"] == "/healthz"
    assert '"GET /healthz HTTP/1.1"' not in live_server.log.read_text()  # uvicorn's access line is off

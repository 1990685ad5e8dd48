"""No request blocks the event loop: /healthz answers within 100 ms while the largest batches run.

Against a real uvicorn (the container's command, bench/server.py) on a loopback port,
serving mlp6, mlp24 and ec64 (two versions: latents go back with the X-Model-Id of the
version that made them, as clients send them, or they are a 409 before any work). A prober thread asks /healthz on a kept-alive connection,
over and over, while one batch request is in flight; every probe that overlapped the
request must have been answered within PROBE_LIMIT_S. The batches are the largest the
default settings allow (10,000 items), of every batch endpoint and body kind, for every
model, and the oversize bodies that must be refused from their length alone (a 16 MiB
body of random bytes is 699,050 ec64 latents: decoding them first held the loop 36 s).
"""

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import load_digits, npy, uvicorn_server

from app.codec import container, latent
from app.settings import Settings
from bench.server import Server

PROBE_LIMIT_S = 0.1
MAX_ITEMS = Settings().max_batch_items  # 10,000
MAX_BYTES = Settings().max_batch_bytes  # 16 MiB
FORMATS = {"mlp6": "6xf32le", "mlp24": "24xu8", "ec64": "24xac"}  # the latent format each model speaks
MODELS = tuple(FORMATS)
NPY, CONTAINER = "application/x-npy", container.CONTAINER_MEDIA_TYPE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with uvicorn_server(tmp_path_factory.mktemp("event-loop")) as running:
        yield running


PROBE = """
import select, sys, time
import httpx
with httpx.Client(base_url=sys.argv[1], timeout=120) as client:
    client.get("/healthz")  # connected before the window
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:  # until the test closes our stdin
        start = time.monotonic()
        status = client.get("/healthz").status_code
        print(start, time.monotonic(), status, flush=True)
        time.sleep(0.005)
"""


class Prober:
    """/healthz again and again on one kept-alive connection, from a process of its own (so that the
    test's own work, sending and reading 16 MiB, cannot delay a probe); the probes of a time window."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.probes: list[tuple[float, float]] = []  # (start, end), time.monotonic: one clock for all processes
        self.failures: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> "Prober":
        command = [sys.executable, "-c", PROBE, self.url]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None and self._process.stdout.readline() == "ready\n"
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            start, end, status = line.split()
            self.probes.append((float(start), float(end)))
            if status != "200":
                self.failures.append(f"/healthz answered {status}")

    def __exit__(self, *exc: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(120)
        self._reader.join(10)
        assert self._process.stdout is not None
        self._process.stdout.close()

    def slowest_during(self, start: float, end: float) -> float:
        """The slowest probe that overlapped [start, end], once one that began after `end` is in."""
        deadline = time.monotonic() + 120
        while not any(s > end for s, _ in self.probes[-3:]) and time.monotonic() < deadline:
            time.sleep(0.01)
        overlapping = [e - s for s, e in self.probes if s < end and e > start]
        assert overlapping, "no /healthz probe overlapped the request"
        return max(overlapping)


def post(url: str, path: str, body: bytes, headers: dict[str, str], prober: Prober) -> tuple[httpx.Response, float]:
    """One request while the prober runs: its response, and the slowest /healthz during it.

    A probe over the limit but under a second is taken once more: on two cores shared with other
    jobs, the scheduler alone can hold a process that long now and then. A blocked loop is
    slow every time (and a probe held for seconds is not retried at all).
    """
    response, slowest = _post_once(url, path, body, headers, prober)
    if PROBE_LIMIT_S <= slowest < 1.0:
        print(f"{path}: /healthz took {slowest * 1000:.0f} ms; once more")
        response, slowest = _post_once(url, path, body, headers, prober)
    return response, slowest


def _post_once(
    url: str, path: str, body: bytes, headers: dict[str, str], prober: Prober
) -> tuple[httpx.Response, float]:
    with httpx.Client(base_url=url, timeout=300) as client:
        client.get("/healthz")  # connected before the clock starts
        time.sleep(0.05)  # a few probes before
        start = time.monotonic()
        response = client.post(path, content=body, headers=headers)
        end = time.monotonic()
        time.sleep(0.05)  # and after: a probe held up by the request ends after it
    return response, prober.slowest_during(start, end)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """MAX_ITEMS real MNIST test digits (the 20 under tests/data, over and over)."""
    real = np.stack([pixels for _, _, pixels in load_digits()])
    return np.resize(real, (MAX_ITEMS, 28, 28))


def multipart(pngs: list[bytes]) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://x/", files=[("img", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
    )
    return request.read(), request.headers["content-type"]


@pytest.fixture(scope="module")
def pngs(digits: np.ndarray) -> list[bytes]:
    real = [png for _, png, _ in load_digits()]
    return [real[i % len(real)] for i in range(len(digits))]


def check(response: httpx.Response, slowest: float, status: int, what: str, prober: Prober) -> None:
    print(f"{what}: {response.status_code}, slowest /healthz {slowest * 1000:.1f} ms")  # shown with pytest -s
    assert response.status_code == status, f"{what}: {response.status_code} {response.text[:200]}"
    assert not prober.failures, prober.failures
    assert slowest < PROBE_LIMIT_S, f"{what}: /healthz took {slowest * 1000:.0f} ms while it ran"


@pytest.mark.parametrize("model", MODELS)
def test_the_largest_batches_leave_the_loop_free(
    server: Server, model: str, digits: np.ndarray, pngs: list[bytes]
) -> None:
    url = server.url
    form, form_type = multipart(pngs)
    with Prober(url) as prober:
        response, slowest = post(url, f"/encode/batch?model={model}", npy(digits), {"content-type": NPY}, prober)
        check(response, slowest, 200, f"{model} /encode/batch of {MAX_ITEMS} as .npy", prober)
        latents, model_id = response.content, response.headers["x-model-id"]
        assert len(latents) == MAX_ITEMS * latent.LATENT_BYTES

        response, slowest = post(url, f"/encode/batch?model={model}", form, {"content-type": form_type}, prober)
        check(response, slowest, 200, f"{model} /encode/batch of {MAX_ITEMS} PNGs, multipart", prober)
        assert response.content == latents

        claim = {"X-Model-Id": model_id}
        response, slowest = post(url, f"/decode/batch?model={model}", latents, claim, prober)
        check(response, slowest, 200, f"{model} /decode/batch of {MAX_ITEMS} latents", prober)
        assert response.headers["x-model-id"] == model_id
        decoded = response.content
        assert np.load(io.BytesIO(decoded)).shape == (MAX_ITEMS, 28, 28)

        items = [latents[i : i + latent.LATENT_BYTES] for i in range(0, len(latents), latent.LATENT_BYTES)]
        stored = container.write_container(container.Container(model_id, FORMATS[model], items))
        response, slowest = post(url, "/decode/batch", stored, {"content-type": CONTAINER}, prober)
        check(response, slowest, 200, f"{model} /decode/batch of a {MAX_ITEMS}-latent container", prober)
        assert response.content == decoded


def oversize_container(count: int) -> bytes:
    """A container whose header promises `count` latents, of random bytes: refused from its header."""
    rng = np.random.default_rng(1)
    items = [b"\0" * latent.LATENT_BYTES]
    head = container.write_container(container.Container("ec64-000000000000", "24xac", items))[: container.HEADER_BYTES]
    header = np.frombuffer(head, dtype=container.CONTAINER_HEADER).copy()
    header["count"] = count
    return header.tobytes() + rng.bytes(count * latent.LATENT_BYTES)


@pytest.mark.parametrize("model", MODELS)
def test_oversize_batches_are_refused_from_their_length(server: Server, model: str) -> None:
    rng = np.random.default_rng(0)
    count = MAX_BYTES // latent.LATENT_BYTES  # 699,050 latents in 16 MiB
    raw = rng.bytes(count * latent.LATENT_BYTES)
    too_many = npy(rng.integers(0, 256, size=(MAX_BYTES // 784 - 1, 28, 28), dtype=np.uint8))
    # The version the name means, claimed as a client would: else ec64's bare bytes are a 409 (which version?)
    # before their count is looked at.
    claim = {"X-Model-Id": httpx.get(f"{server.url}/models").json()["names"][model]}
    with Prober(server.url) as prober:
        response, slowest = post(server.url, f"/decode/batch?model={model}", raw, claim, prober)
        check(response, slowest, 422, f"{model} /decode/batch of 16 MiB of random bytes", prober)
        assert f"at most {MAX_ITEMS} latents per batch; received {count}" in response.json()["detail"]

        body = oversize_container(count - 4)
        response, slowest = post(server.url, f"/decode/batch?model={model}", body, {"content-type": CONTAINER}, prober)
        check(response, slowest, 422, f"{model} /decode/batch of a container promising {count - 4}", prober)
        assert f"at most {MAX_ITEMS} latents per batch; received {count - 4}" in response.json()["detail"]

        response, slowest = post(server.url, f"/encode/batch?model={model}", too_many, {"content-type": NPY}, prober)
        check(response, slowest, 422, f"{model} /encode/batch of {MAX_BYTES // 784 - 1} digits", prober)
        assert f"at most {MAX_ITEMS} digits per batch" in response.json()["detail"]


def test_concurrent_large_batches_queue_off_the_loop(server: Server, digits: np.ndarray) -> None:
    """Four of the slowest batches at once (10,000 ec64 latents each): they wait for a worker, the loop does not."""
    url = server.url
    latents = httpx.post(
        f"{url}/encode/batch?model=ec64", content=npy(digits), headers={"content-type": NPY}, timeout=300
    )
    answers: list[httpx.Response] = []

    assert latents.status_code == 200, latents.text
    claim = {"X-Model-Id": latents.headers["x-model-id"]}  # ec64 has two versions: name the one that made them

    def decode() -> None:
        answers.append(
            httpx.post(f"{url}/decode/batch?model=ec64", content=latents.content, headers=claim, timeout=300)
        )

    with Prober(url) as prober:
        time.sleep(0.05)
        start = time.monotonic()
        senders = [threading.Thread(target=decode) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(300)
        end = time.monotonic()
        time.sleep(0.05)
    slowest = prober.slowest_during(start, end)
    print(f"4 concurrent ec64 /decode/batch of {MAX_ITEMS}: slowest /healthz {slowest * 1000:.1f} ms")
    assert [answer.status_code for answer in answers] == [200] * 4
    assert len({answer.content for answer in answers}) == 1
    assert not prober.failures and slowest < PROBE_LIMIT_S, f"/healthz took {slowest * 1000:.0f} ms"

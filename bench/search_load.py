"""Does a search hold up the rest of the service? `python -m bench.search_load [--digits 1000]`

Starts the service with the container's command on a loopback port, then probes it, one
request after another on one keep-alive connection with 20 ms between rounds: GET /healthz and a
level-0 POST /encode?model=ec64. First for `--idle-s` seconds with nothing else running,
then while one POST /encode/batch of `--digits` test digits at ec64's highest effort is
under way (a search in a worker thread, app/service/effort.py). Reported: the batch's time and
ms per digit, and each probe's median and maximum, idle and during. Loopback only, bounded:
one batch, `--idle-s` seconds of probes, the batch's own time.
"""

import argparse
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.server import ROOT, Server

DIGITS = ROOT / "tests" / "data" / "digits"
SEVEN = DIGITS / "test0000_digit7.png"


def probe(client: httpx.Client, until: threading.Event | float) -> tuple[list[float], list[float]]:
    """Milliseconds of /healthz and of a level-0 /encode, round after round, until the event or the time."""
    health: list[float] = []
    encode: list[float] = []
    png = SEVEN.read_bytes()

    def more() -> bool:
        return not until.is_set() if isinstance(until, threading.Event) else time.perf_counter() < until

    while more():
        start = time.perf_counter()
        client.get("/healthz").raise_for_status()
        health.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        client.post("/encode?model=ec64", files={"img": png}).raise_for_status()
        encode.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.02)
    return health, encode


def line(what: str, health: list[float], encode: list[float]) -> str:
    return (
        f"{what}: /healthz median {statistics.median(health):.2f} ms, max {max(health):.2f} ms; "
        f"/encode ec64 effort 0 median {statistics.median(encode):.2f} ms, max {max(encode):.2f} ms "
        f"({len(health)} rounds)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=1000, help="digits in the searched batch (default 1000)")
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds of probes with no search (default 3)")
    args = parser.parse_args(argv)
    tests = np.stack([np.asarray(Image.open(path)) for path in sorted(DIGITS.glob("*.png"))])
    batch = np.resize(tests, (args.digits, 28, 28))
    buffer = io.BytesIO()
    np.save(buffer, batch)
    with tempfile.TemporaryDirectory() as folder:
        server = Server(ROOT / "model_weights" / "mlp6.safetensors", Path(folder) / "server.log")
        try:
            server.wait_ready()
            client = httpx.Client(base_url=server.url, timeout=60)
            top = next(m for m in client.get("/models").json()["models"] if m["name"] == "ec64")["efforts"][-1]
            print(line("idle", *probe(client, time.perf_counter() + args.idle_s)))
            done = threading.Event()
            result: dict[str, float] = {}

            def search() -> None:
                start = time.perf_counter()
                response = httpx.post(
                    f"{server.url}/encode/batch?model=ec64&effort={top['level']}",
                    content=buffer.getvalue(),
                    headers={"content-type": "application/x-npy"},
                    timeout=3600,
                )
                result["seconds"] = time.perf_counter() - start
                result["status"] = response.status_code
                done.set()

            worker = threading.Thread(target=search)
            worker.start()
            during = probe(client, done)
            worker.join()
            seconds = result["seconds"]
            what = (
                f"during one {args.digits}-digit ec64 batch at effort {top['level']} "
                f"(answered {result['status']:.0f} in {seconds:.2f} s, {seconds / args.digits * 1e3:.2f} ms per digit)"
            )
            print(line(what, *during))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

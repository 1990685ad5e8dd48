"""Soak test: `python -m bench.soak` (make soak).

Starts the service with the container's command on a loopback port, then sends
a bounded mix of requests (valid encodes, valid decodes, bad inputs) at a fixed
concurrency, with slow clients beside them (600 connections trickling an upload
a byte a second, `bench.slow_clients`; `--tricklers 0` for none), and prints:
requests by status, 5xx and connection errors, latency percentiles, what the
tricklers got, and the server's RSS before and after. Exits 1 if any target is
missed: no 5xx, no connection error, RSS growth under 50 MiB.
"""

import argparse
import asyncio
import io
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.server import ROOT, Server
from bench.slow_clients import trickler

DIGITS = sorted((ROOT / "tests" / "data" / "digits").glob("*.png"))
RSS_GROWTH_LIMIT_MIB = 50.0

Planned = tuple[str, str, dict[str, object]]  # kind, path, httpx arguments


def wrong_size_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (29, 28)).save(buffer, format="PNG")
    return buffer.getvalue()


def bad_requests(png: bytes, latent: bytes) -> list[Planned]:
    """One of each kind of bad input the service must answer with a 4xx (or 200, clamped)."""
    return [
        ("bad:truncated", "/encode", {"files": {"img": ("d.png", png[:100])}}),
        ("bad:not-png", "/encode", {"files": {"img": ("d.png", b"hello")}}),
        ("bad:jpeg", "/encode", {"files": {"img": ("d.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 100)}}),
        ("bad:wrong-size", "/encode", {"files": {"img": ("d.png", wrong_size_png())}}),
        ("bad:missing-field", "/encode", {"files": {"image": ("d.png", png)}}),
        ("bad:not-multipart", "/encode", {"content": png}),
        ("bad:latent-length", "/decode", {"content": b"\0" * 23}),
        ("bad:latent-nan", "/decode", {"content": np.full(6, np.nan, "<f4").tobytes()}),
        ("bad:huge-latent", "/decode", {"content": np.full(6, 3e38, "<f4").tobytes()}),
        ("bad:over-limit", "/decode", {"content": b"\0" * (1024 * 1024 + 1)}),
        ("bad:model-id", "/decode", {"content": latent, "headers": {"X-Model-Id": "mlp6-000000000000"}}),
    ]


def plan_requests(total: int, seed: int, pngs: list[bytes], latents: list[bytes]) -> list[Planned]:
    """45 % valid encodes, 35 % valid decodes, 20 % bad inputs of every kind, in a seeded order."""
    rng = random.Random(seed)
    bad = bad_requests(pngs[0], latents[0])
    plan: list[Planned] = []
    for _ in range(total):
        roll = rng.random()
        if roll < 0.45:
            plan.append(("encode", "/encode", {"files": {"img": ("d.png", rng.choice(pngs), "image/png")}}))
        elif roll < 0.80:
            plan.append(("decode", "/decode", {"content": rng.choice(latents)}))
        else:
            plan.append(rng.choice(bad))
    return plan


async def soak(
    url: str, port: int, total: int, concurrency: int, seed: int, tricklers: int
) -> tuple[Counter[str], list[float], int, Counter[str]]:
    pngs = [path.read_bytes() for path in DIGITS]
    trickled: Counter[str] = Counter()
    forever = time.perf_counter() + 3600  # they stop when the soak is done
    slow = [asyncio.create_task(trickler(port, forever, trickled, pngs[0])) for _ in range(tricklers)]
    await asyncio.sleep(2 if tricklers else 0)  # every trickler connected and holding its upload open
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        latents = [(await client.post("/encode", files={"img": ("d.png", png)})).content for png in pngs]
        plan = plan_requests(total, seed, pngs, latents)
        counts: Counter[str] = Counter()
        latencies: list[float] = []
        connection_errors = 0
        queue = iter(plan)

        async def worker() -> None:
            nonlocal connection_errors
            for kind, path, kwargs in queue:
                start = time.perf_counter()
                try:
                    response = await client.post(path, **kwargs)  # type: ignore[arg-type]
                except httpx.TransportError as exc:
                    connection_errors += 1
                    counts[f"error {type(exc).__name__} {kind}"] += 1  # which request lost its answer, and how
                    continue
                latencies.append(time.perf_counter() - start)
                counts[f"{response.status_code} {kind}"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
    return counts, latencies, connection_errors, trickled


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="total requests (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the request mix (default 0)")
    parser.add_argument("--tricklers", type=int, default=600, help="slow uploads beside the soak (default 600)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(ROOT / "model_weights" / "mlp6.safetensors", Path(tmp) / "server.log")
        try:
            server.wait_ready()
            rss_start = server.rss_mib()
            started = time.perf_counter()
            counts, latencies, connection_errors, trickled = asyncio.run(
                soak(server.url, server.port, args.requests, args.concurrency, args.seed, args.tricklers)
            )
            elapsed = time.perf_counter() - started
            rss_end = server.rss_mib()
            tracebacks = server.log.count("Traceback")
        finally:
            server.stop()

    server_errors = sum(n for key, n in counts.items() if key.startswith("5"))
    p50, p99 = (np.percentile(latencies, q) * 1000 for q in (50, 99))
    print(f"soak: {args.requests} requests, concurrency {args.concurrency}, {elapsed:.1f} s")
    print(f"  beside {args.tricklers} slow uploads: {dict(sorted(trickled.items()))}")
    print(f"  throughput           {len(latencies) / elapsed:,.0f} req/s")
    for key in sorted(counts):
        print(f"  {key:<28} {counts[key]:>6}")
    print(f"  5xx                  {server_errors}")
    print(f"  connection errors    {connection_errors}")
    print(f"  tracebacks in log    {tracebacks}")
    print(f"  latency p50 / p99    {p50:.1f} ms / {p99:.1f} ms")
    print(f"  RSS start / end      {rss_start:.1f} MiB / {rss_end:.1f} MiB (growth {rss_end - rss_start:+.1f} MiB)")
    ok = server_errors == 0 and connection_errors == 0 and rss_end - rss_start < RSS_GROWTH_LIMIT_MIB
    verdict = "met" if ok else "MISSED"
    print(f"  targets              {verdict} (0 5xx, 0 connection errors, RSS growth < 50 MiB)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

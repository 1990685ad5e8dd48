"""Slow clients against a real server: `python -m bench.slow_clients` (make slow-clients).

Starts the service with the container's command on a loopback port, then:

1. Trickle: N connections (default 600) each send the full request head of a
   valid multipart /encode upload and then its body one byte a second, for the whole
   run (default 20 s); one the server closes (408 at its body deadline) is
   opened again at once. Beside them a normal client sends /encode requests
   one after another on one keep-alive connection. Reported: its successes,
   p50 and p99 latency, and the statuses it got.
2. Idle: M connections (default 5,000) open and send nothing; the normal
   client then sends /encode requests while they are held. Reported: the same,
   and the server's open descriptors during and after.

Targets (issue 10): at least 95 % of the normal client's requests succeed with
p99 under 100 ms while the trickle runs; the idle connections neither exhaust
the server's descriptors nor stop it answering. Exits 1 if one is missed.
Loopback only, bounded in count and time.
"""

import argparse
import asyncio
import contextlib
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.server import ROOT, Server

SEVEN = ROOT / "tests" / "data" / "digits" / "test0000_digit7.png"


def upload(png: bytes) -> tuple[bytes, bytes]:
    """The head and body of a valid multipart /encode request, for a trickler to send a byte at a time."""
    body = b'--b\r\nContent-Disposition: form-data; name="img"; filename="7.png"\r\n\r\n' + png + b"\r\n--b--\r\n"
    head = (
        b"POST /encode HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head, body


@dataclass
class Normal:
    """What the normal client saw."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def ok_share(self) -> float:
        total = sum(self.statuses.values())
        return self.statuses["200"] / total if total else 0.0

    def summary(self) -> str:
        p50, p99 = (np.percentile(self.latencies, q) * 1000 for q in (50, 99)) if self.latencies else (0.0, 0.0)
        counts = ", ".join(f"{key}: {n}" for key, n in sorted(self.statuses.items()))
        return (
            f"{self.statuses['200']} of {sum(self.statuses.values())} ok ({100 * self.ok_share:.1f} %), "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({counts})"
        )


async def normal_client(url: str, seconds: float, png: bytes) -> Normal:
    """/encode requests one after another for `seconds`, as a well-behaved client sends them."""
    seen = Normal()
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while (start := time.perf_counter()) < deadline:
            try:
                response = await client.post("/encode", files={"img": ("7.png", png, "image/png")})
            except httpx.TransportError as exc:
                seen.statuses[type(exc).__name__] += 1
                continue
            seen.statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                seen.latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.01)  # about 100 requests a second: a steady client, not a load generator
    return seen


async def trickler(port: int, until: float, counts: Counter[str], png: bytes) -> None:
    """One slow uploader: a full head, then a body byte a second; reconnects when closed."""
    head, body = upload(png)
    while time.perf_counter() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["connect failed"] += 1
            await asyncio.sleep(1)
            continue
        counts["opened"] += 1
        try:
            writer.write(head)
            for byte in body:
                if time.perf_counter() >= until or reader.at_eof():
                    break
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(4096), 1.0)
                    if answer:
                        counts[answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "other"] += 1
                        break
                writer.write(bytes([byte]))
        except OSError:
            counts["reset"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def trickle_run(url: str, port: int, connections: int, seconds: float, png: bytes) -> tuple[Normal, Counter[str]]:
    counts: Counter[str] = Counter()
    until = time.perf_counter() + seconds
    tricklers = [asyncio.create_task(trickler(port, until, counts, png)) for _ in range(connections)]
    await asyncio.sleep(2)  # every trickler connected and holding its upload open
    seen = await normal_client(url, seconds - 3, png)
    await asyncio.gather(*tricklers)
    return seen, counts


async def idle_run(
    url: str, port: int, connections: int, seconds: float, png: bytes, server: Server
) -> tuple[Normal, int, int]:
    sockets: list[asyncio.StreamWriter] = []
    refused = 0
    for _ in range(connections):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            sockets.append(writer)
        except OSError:
            refused += 1
    await asyncio.sleep(0.5)
    fds_held = server.open_fds()
    seen = await normal_client(url, seconds, png)
    for writer in sockets:
        writer.close()
    await asyncio.sleep(1)
    return seen, fds_held, refused


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trickle", type=int, default=600, help="trickling connections (default 600)")
    parser.add_argument("--seconds", type=float, default=20, help="length of the trickle (default 20)")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections (default 5000)")
    args = parser.parse_args(argv)
    # The client holds every connection too: lift its own descriptor limit as far as allowed.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    png = SEVEN.read_bytes()

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(ROOT / "model_weights" / "mlp6.safetensors", Path(tmp) / "server.log")
        try:
            server.wait_ready()
            fds_start = server.open_fds()
            quiet = asyncio.run(normal_client(server.url, 3, png))
            trickled, counts = asyncio.run(trickle_run(server.url, server.port, args.trickle, args.seconds, png))
            idle, fds_held, refused = asyncio.run(idle_run(server.url, server.port, args.idle, 5, png, server))
            fds_end = server.open_fds()
            tracebacks = server.log.count("Traceback")
        finally:
            server.stop()

    trickle_p99 = float(np.percentile(trickled.latencies, 99) * 1000) if trickled.latencies else float("inf")
    print(f"slow clients against the container's command, loopback, {args.seconds:g} s of trickle")
    rows = [
        ("normal client alone", quiet.summary()),
        (f"beside {args.trickle} tricklers", trickled.summary()),
        ("the tricklers", str(dict(sorted(counts.items())))),
        (f"beside {args.idle} idle connections", idle.summary()),
    ]
    for label, value in rows:
        print(f"  {label:<31}{value}")
    print(
        f"  server descriptors             {fds_start} at start, {fds_held} with the idle connections held, "
        f"{fds_end} after; {refused} connections refused"
    )
    print(f"  tracebacks in the server log   {tracebacks}")
    ok = trickled.ok_share >= 0.95 and trickle_p99 < 100 and idle.ok_share >= 0.95 and tracebacks == 0
    verdict = "met" if ok else "MISSED"
    print(
        f"  targets                        {verdict} (>= 95 % ok and p99 < 100 ms beside the trickle; "
        "answering beside the idle connections)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

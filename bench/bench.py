"""Benchmark: `python -m bench.bench` (make bench). Prints its figures and writes BENCHMARKS.md.

1. Single requests against the floor and the peer. The service, the do-nothing
   floor app (bench/floor.py) and, with one worker, the tutorial FastAPI app
   (bench/peers/tutorial.py: UploadFile, Pillow, float32 torch, the same mlp6
   weights) run side by side with the same uvicorn command and worker count; the
   same load generator (wrk with a Lua script when installed, else a Python async
   client) drives each endpoint in turn, alternating service, floor and peer, at
   concurrency 32, several seconds after a warm-up, for several rounds. Reported:
   req/s, p50 and p99 latency of the best round, and the ratios service / floor
   (/encode against the multipart floor, /decode against the raw-body floor) and
   service / peer.
2. The same with two workers (scaling on this machine).
3. Batch endpoints: a 10,000-digit .npy encode, a 10,000-latent decode, and a
   1,000-PNG multipart encode over HTTP, in digits per second.
4. Start-up: process start to the first 200 from /readyz.
5. Micro-batching on the CPU: /encode and /decode with MNIST_CODEC_MICROBATCHING=on.
6. The HTTP limits: 1 worker again with uvicorn's plain httptools protocol
   in place of the container's (app.service.protocol: httptools with the limits of
   issue 10), service and floor alike: what those limits cost.
7. The entropy-coded model: single-request /encode?model=ec64 and /decode?model=ec64
   in the same rounds as mlp6's (1 worker), its batch rates, and every model's
   per-digit encode and decode cost in process, entropy coding included.
8. Encode effort (issue 16): every model at every effort level, in process on one
   core (one BLAS thread): us per digit alone (20 test digits, one at a time) and in
   a batch of 1,000, next to the PSNR the evaluation measured (the committed
   `<checkpoint>.efforts.json`); and at effort 0, 10,000 noise digits against 10,000
   MNIST digits (the rate control's worst inputs), in process and over HTTP.
"""

import argparse
import asyncio
import io
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from bench.server import ROOT, Server, free_port, loopback_command

WEIGHTS = ROOT / "model_weights" / "mlp6.safetensors"
PEER_APP = "bench.peers.tutorial:app"
SEVEN = ROOT / "tests" / "data" / "digits" / "test0000_digit7.png"
BOUNDARY = "mnistcodecbenchboundary"
TEST_IMAGES = ROOT / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass
class Target:
    name: str
    path: str
    body: bytes
    content_type: str


def multipart(png: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="img"; filename="7.png"\r\n'
    return (head + "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()


# --------------------------------------------------------------------------- load generators


def wrk_load(url: str, target: Target, seconds: float, connections: int, workdir: Path) -> Load:
    body_file = workdir / f"{target.name}.body"
    body_file.write_bytes(target.body)
    script = workdir / f"{target.name}.lua"
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*all")\nf:close()\n'
        f'wrk.headers["Content-Type"] = "{target.content_type}"\n'
    )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url + target.path]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx answers from {url}{target.path}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"))


def _wrk_ms(out: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def python_load(url: str, target: Target, seconds: float, connections: int, workdir: Path) -> Load:
    async def run() -> Load:
        limits = httpx.Limits(max_connections=connections)
        headers = {"content-type": target.content_type}
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                while (start := time.perf_counter()) < deadline:
                    response = await client.post(target.path, content=target.body, headers=headers)
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - start)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        return Load(len(latencies) / elapsed, float(p50), float(p99))

    return asyncio.run(run())


# --------------------------------------------------------------------------- servers


def start_floor(
    port: int, log: Path, workers: int, http: str | None = None, app: str = "bench.floor:app"
) -> subprocess.Popen[bytes]:
    """`app` (the floor, or a peer) with the service's uvicorn command."""
    argv = loopback_command(port, http)
    argv[argv.index("app.main:app")] = app
    argv += ["--workers", str(workers)] if workers > 1 else []
    env = {**os.environ, "MNIST_CODEC_WEIGHTS": str(WEIGHTS)}
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def compare(
    workers: int,
    seconds: float,
    rounds: int,
    connections: int,
    workdir: Path,
    env: dict[str, str] | None = None,
    http: str | None = None,
    ec64: bool = False,
    peer: bool = False,
) -> dict[str, Load]:
    """Best round of each of: service and floor, /encode and /decode; `http` swaps the HTTP protocol of both;
    with `ec64`, the service with ?model=ec64 in the same rounds; with `peer`, the tutorial app too."""
    server = Server(WEIGHTS, workdir / "service.log", env={**(env or {}), **_workers_env(workers)}, http=http)
    floor_port = free_port()
    floor = start_floor(floor_port, workdir / "floor.log", workers, http)
    floor_url = f"http://127.0.0.1:{floor_port}"
    others = [("floor", floor_url)]
    tutorial = None
    if peer:
        tutorial_port = free_port()
        tutorial = start_floor(tutorial_port, workdir / "peer.log", workers, http, app=PEER_APP)
        others.append(("peer", f"http://127.0.0.1:{tutorial_port}"))
    try:
        server.wait_ready()
        for _, url in others:
            wait_http(url, "/docs")
        png = SEVEN.read_bytes()
        latent = httpx.post(server.url + "/encode", files={"img": ("7.png", png)}).content
        targets = [
            Target("encode", "/encode", multipart(png), f"multipart/form-data; boundary={BOUNDARY}"),
            Target("decode", "/decode", latent, "application/octet-stream"),
        ]
        if ec64:
            form = f"multipart/form-data; boundary={BOUNDARY}"
            # ?model=ec64 is the version the name means (v2); v1 by its id. A decode names the version: bare
            # bytes of a name with two versions are a 409 (Codecs.refuse_a_guess).
            for suffix, model in (("ec64", "ec64"), ("ec64-v1", EC64_V1_ID)):
                answer = httpx.post(server.url + f"/encode?model={model}", files={"img": ("7.png", png)})
                made_by = answer.headers["x-model-id"]
                targets += [
                    Target(f"encode-{suffix}", f"/encode?model={model}", multipart(png), form),
                    Target(f"decode-{suffix}", f"/decode?model={made_by}", answer.content, "application/octet-stream"),
                ]
        load = wrk_load if shutil.which("wrk") else python_load
        everyone = [("service", server.url), *others]
        for target in targets:  # warm-up
            for _, url in everyone if "?" not in target.path else everyone[:1]:
                load(url, target, 2, connections, workdir)
        best: dict[str, Load] = {}
        for _ in range(rounds):
            for target in targets:
                for who, url in everyone if "?" not in target.path else everyone[:1]:
                    result = load(url, target, seconds, connections, workdir)
                    key = f"{who} {target.name}"
                    if key not in best or result.rps > best[key].rps:
                        best[key] = result
        return best
    finally:
        server.stop()
        for process in (floor, tutorial):
            if process is not None:
                os.killpg(process.pid, signal.SIGKILL)  # with its workers
                process.wait(10)


def _workers_env(workers: int) -> dict[str, str]:
    # bench.server starts the container's command; WEB_CONCURRENCY is uvicorn's --workers.
    return {"WEB_CONCURRENCY": str(workers)} if workers > 1 else {}


# --------------------------------------------------------------------------- batch, start-up


def test_digits(count: int) -> np.ndarray:
    if TEST_IMAGES.is_file():
        return np.frombuffer(TEST_IMAGES.read_bytes()[16:], dtype=np.uint8).reshape(-1, 28, 28)[:count]
    return np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)  # no MNIST on disk


def noise_digits(count: int) -> np.ndarray:
    """Uniform noise, every other digit thresholded to black and white: far off every model's prior."""
    out = np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    out[::2] = (out[::2] > 127) * 255
    return out


def batch_rates(workdir: Path) -> dict[str, float]:
    server = Server(WEIGHTS, workdir / "batch.log")
    try:
        server.wait_ready()
        digits = test_digits(10_000)
        buffer = io.BytesIO()
        np.save(buffer, digits)
        npy = buffer.getvalue()
        pngs = [SEVEN.read_bytes()] * 1000
        rates: dict[str, float] = {}
        with httpx.Client(base_url=server.url, timeout=120) as client:

            def best_rate(count: int, send: Callable[[], httpx.Response]) -> float:
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    send().raise_for_status()
                    times.append(time.perf_counter() - start)
                return count / min(times)

            npy_headers = {"content-type": "application/x-npy"}
            rates["encode npy 10,000"] = best_rate(
                10_000, lambda: client.post("/encode/batch", content=npy, headers=npy_headers)
            )
            latents = client.post("/encode/batch", content=npy, headers=npy_headers).content
            rates["decode 10,000"] = best_rate(10_000, lambda: client.post("/decode/batch", content=latents))
            files = [("img", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
            rates["encode PNG multipart 1,000"] = best_rate(1000, lambda: client.post("/encode/batch", files=files))
            rates["ec64: encode npy 10,000"] = best_rate(
                10_000, lambda: client.post("/encode/batch?model=ec64", content=npy, headers=npy_headers)
            )
            noise = io.BytesIO()
            np.save(noise, noise_digits(10_000))
            noise_npy = noise.getvalue()
            rates["ec64: encode npy 10,000 noise digits"] = best_rate(
                10_000, lambda: client.post("/encode/batch?model=ec64", content=noise_npy, headers=npy_headers)
            )
            answer = client.post("/encode/batch?model=ec64", content=npy, headers=npy_headers)
            coded, made_by = answer.content, answer.headers["x-model-id"]
            rates["ec64: decode 10,000"] = best_rate(
                10_000, lambda: client.post(f"/decode/batch?model={made_by}", content=coded)
            )
        return rates
    finally:
        server.stop()


def startup_seconds(workdir: Path, runs: int = 3) -> float:
    times = []
    for run in range(runs):
        start = time.perf_counter()
        server = Server(WEIGHTS, workdir / f"start{run}.log")
        try:
            server.wait_ready()
            times.append(time.perf_counter() - start)
        finally:
            server.stop()
    return statistics.median(times)


# --------------------------------------------------------------------------- report


def component_costs() -> dict[str, float]:
    """Microseconds per call of the pieces of a request, in process (best of 5 x 2000 calls)."""
    import timeit

    from app.codec import imaging
    from app.codec.codecs import load_codec
    from app.codec.model import load_checkpoint

    codec = load_codec(WEIGHTS, "cpu")
    png = SEVEN.read_bytes()
    pixels = imaging.read_digit(png)
    latent = codec.encode(pixels)
    model = load_checkpoint(WEIGHTS).model.eval()
    x = torch.tensor(pixels.reshape(1, 784), dtype=torch.float32) / 255
    pieces: dict[str, Callable[[], object]] = {
        "PNG in (read_digit, 8-bit gray)": lambda: imaging.read_digit(png),
        "PNG in, Pillow's full path": lambda: np.asarray(Image.open(io.BytesIO(png), formats=["PNG"])),
        "encoder, numpy float64, batch 1": lambda: codec.engine.forward_encoder(pixels.reshape(1, 784)),
        "encoder, torch float32, batch 1": lambda: _no_grad(model.encode, x),
        "decoder, numpy float64, batch 1 (to bytes)": lambda: codec.decode_pixels(latent),
        "PNG out (write_digit)": lambda: imaging.write_digit(pixels),
        "whole /encode work (PNG in, encoder, pack)": lambda: codec.encode(imaging.read_digit(png)),
        "whole /decode work (unpack, decoder, PNG out)": lambda: codec.decode(latent),
    }
    return {name: min(timeit.repeat(f, number=2000, repeat=5)) / 2000 * 1e6 for name, f in pieces.items()}


MODEL_WEIGHTS = {
    "mlp6": WEIGHTS,
    "mlp24": ROOT / "model_weights" / "mlp24" / "mlp24.safetensors",
    "ec64": ROOT / "model_weights" / "ec64" / "v2" / "ec64.safetensors",  # what the name means
    "ec64 v1": ROOT / "model_weights" / "ec64" / "ec64.safetensors",
}
EC64_V1_ID = "ec64-ea9647b7fd42"  # served beside v2 for the latents it made


def model_costs(count: int = 1000) -> dict[str, dict[str, float]]:
    """Per model, microseconds per digit in process, one digit at a time over `count` MNIST test digits.

    encode: pixels -> the 24 bytes (encoder, then the format: for ec64 rounding, rate control and
    the arithmetic code); decode: the 24 bytes -> pixels; and, for ec64, the coder's own share.
    """
    from app.codec.codecs import load_codec

    digits = test_digits(count)
    costs: dict[str, dict[str, float]] = {}
    for name, path in MODEL_WEIGHTS.items():
        codec = load_codec(path, "cpu")
        latents = [codec.encode(d) for d in digits]
        z = codec.engine.forward_encoder(digits.reshape(len(digits), 784))

        def best(function: Callable[[], object]) -> float:
            return min(timeit.repeat(function, number=1, repeat=3)) / len(digits) * 1e6

        row = {
            "encode": best(lambda: [codec.encode(d) for d in digits]),  # noqa: B023
            "decode": best(lambda: [codec.decode_pixels(b) for b in latents]),  # noqa: B023
            "format pack": best(lambda: [codec.format.pack(v) for v in z]),  # noqa: B023
            "format unpack": best(lambda: [codec.format.unpack(b) for b in latents]),  # noqa: B023
        }
        costs[name] = row
    return costs


@dataclass
class EffortCost:
    model: str
    level: int
    recipe: str
    psnr_db: float | None  # from the committed figures (python -m app.training.evaluate --efforts)
    us_alone: float  # wall time
    us_batch: float
    cpu_us_alone: float  # CPU time of the process (one BLAS thread: the work of one core)
    cpu_us_batch: float


def _timed(function: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def effort_costs(alone: int = 20, batch: int = 1000) -> list[EffortCost]:
    """Per model and effort level, us per digit on one core (one BLAS thread), wall and CPU time: one digit
    at a time (best of 3 passes over `alone` test digits) and in one encode_many of `batch` test digits."""
    from app.codec import blas
    from app.codec.codecs import load_codec

    digits = test_digits(batch)
    rows = []
    with blas.threads(1):
        for name, path in MODEL_WEIGHTS.items():
            codec = load_codec(path, "cpu")
            for effort in codec.efforts:
                level = effort.level
                codec.encode(digits[0], level)  # warm: the search's decoder is made on first use
                passes = [_timed(lambda: [codec.encode(d, level) for d in digits[:alone]]) for _ in range(3)]  # noqa: B023
                in_batch = _timed(lambda: codec.encode_many(digits, level))  # noqa: B023
                recipe = (
                    "single pass"
                    if effort.steps == 0
                    else f"{effort.steps} steps" + (f" + {effort.sweeps} sweeps" if effort.sweeps else "")
                )
                rows.append(
                    EffortCost(
                        name,
                        level,
                        recipe,
                        effort.psnr_db,
                        min(p[0] for p in passes) / alone * 1e6,
                        in_batch[0] / len(digits) * 1e6,
                        min(p[1] for p in passes) / alone * 1e6,
                        in_batch[1] / len(digits) * 1e6,
                    )
                )
                print(rows[-1], flush=True)
    return rows


def hostile_costs(count: int = 10_000) -> dict[str, tuple[float, float]]:
    """Per model at effort 0, us per digit (CPU time, one BLAS thread) of one encode_many of `count` MNIST
    and of `count` noise digits."""
    from app.codec import blas
    from app.codec.codecs import load_codec

    mnist, noise = test_digits(count), noise_digits(count)
    out = {}
    with blas.threads(1):
        for name, path in MODEL_WEIGHTS.items():
            codec = load_codec(path, "cpu")
            times = []
            for digits in (mnist, noise):
                runs = [_timed(lambda: codec.encode_many(digits))[1] for _ in range(3)]  # noqa: B023
                times.append(min(runs) / count * 1e6)
            out[name] = (times[0], times[1])
    return out


def _no_grad(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return function(x)


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def versions() -> str:
    import fastapi
    import uvicorn

    packages = {"torch": torch, "numpy": np, "fastapi": fastapi, "uvicorn": uvicorn}
    return ", ".join(f"{name} {module.__version__}" for name, module in packages.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="each measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best counts (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrency (default 32)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report (default BENCHMARKS.md)")
    parser.add_argument(
        "--effort-only", action="store_true", help="only the encode-effort sections (8), printed, nothing written"
    )
    args = parser.parse_args(argv)
    if args.effort_only:
        efforts, hostile = effort_costs(), hostile_costs()
        print("\n".join(render_effort(efforts, hostile, {})))
        return 0
    args.load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        one = compare(1, args.seconds, args.rounds, args.connections, workdir, ec64=True, peer=True)
        two = compare(2, args.seconds, args.rounds, args.connections, workdir)
        batched = compare(1, args.seconds, 1, args.connections, workdir, env={"MNIST_CODEC_MICROBATCHING": "on"})
        # Plain httptools, uvicorn's default, against the container's protocol (httptools with the limits of issue 10).
        httptools = compare(1, args.seconds, args.rounds, args.connections, workdir, http="httptools")
        rates = batch_rates(workdir)
        start = startup_seconds(workdir)
    costs = component_costs()
    per_model = model_costs()
    efforts = effort_costs()
    hostile = hostile_costs()
    args.load_after = os.getloadavg()
    report = render(args, one, two, batched, httptools, rates, start, costs, per_model, efforts, hostile)
    print(report)
    args.out.write_text(report)
    return 0


def render(
    args: argparse.Namespace,
    one: dict[str, Load],
    two: dict[str, Load],
    batched: dict[str, Load],
    httptools: dict[str, Load],
    rates: dict[str, float],
    start: float,
    costs: dict[str, float],
    per_model: dict[str, dict[str, float]],
    efforts: Sequence[EffortCost] = (),
    hostile: dict[str, tuple[float, float]] | None = None,
) -> str:
    generator = "wrk (1 thread, Lua script for the body)" if shutil.which("wrk") else "Python httpx async client"
    lines = [
        "# Benchmarks",
        "",
        f"Command: `make bench` (`python -m bench.bench --seconds {args.seconds:g} --rounds {args.rounds}`).",
        f"Machine: {machine()}; no GPU. Versions: {versions()}.",
        f"Load: {generator}, {args.connections} connections, best of {args.rounds} alternating rounds of "
        f"{args.seconds:g} s after a 2 s warm-up. Service and floor run the same uvicorn command.",
        "Load average (1, 5, 15 min) before the run: {:.2f}, {:.2f}, {:.2f}; after: {:.2f}, {:.2f}, {:.2f} "
        "(the machine is shared: compare ratios taken in one run).".format(*args.load_before, *args.load_after),
        "",
        "## Single requests against the floor",
        "",
        "| workers | endpoint | service req/s | floor req/s | ratio | service p50 / p99 ms | floor p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, results in (("1", one), ("2", two), ("1, micro-batching on", batched), ("1, httptools", httptools)):
        for name in ("encode", "decode"):
            s, f = results[f"service {name}"], results[f"floor {name}"]
            lines.append(
                f"| {label} | /{name} | {s.rps:,.0f} | {f.rps:,.0f} | {s.rps / f.rps:.2f} | "
                f"{s.p50_ms:.2f} / {s.p99_ms:.2f} | {f.p50_ms:.2f} / {f.p99_ms:.2f} |"
            )
    lines += [
        "",
        "`1, httptools`: both with `--http httptools`, uvicorn's default parser, instead of the container's "
        "`app.service.protocol` (httptools with the limits of issue 10).",
        "",
        "## Against the tutorial FastAPI app (1 worker, the same rounds)",
        "",
        "bench/peers/tutorial.py: UploadFile, Pillow, float32 torch, the same mlp6 weights, the service's "
        "uvicorn command.",
        "",
        "| endpoint | service req/s | tutorial req/s | service / tutorial | tutorial / floor | tutorial p50 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("encode", "decode"):
        s, p, f = one[f"service {name}"], one[f"peer {name}"], one[f"floor {name}"]
        lines.append(
            f"| /{name} | {s.rps:,.0f} | {p.rps:,.0f} | {s.rps / p.rps:.2f} | {p.rps / f.rps:.2f} | "
            f"{p.p50_ms:.2f} / {p.p99_ms:.2f} |"
        )
    lines += ["", "## Targets (issues #4 and #17)", "", "| target | measured | met |", "|---|---|---|"]
    for name, floor_share in (("encode", 0.7), ("decode", 0.6)):
        s, p, f = one[f"service {name}"], one[f"peer {name}"], one[f"floor {name}"]
        lines.append(
            f"| /{name} >= 1.5x the tutorial app (1 worker) | {s.rps / p.rps:.2f}x | {_yes(s.rps >= 1.5 * p.rps)} |"
        )
        lines.append(
            f"| /{name} >= {floor_share} of its floor (1 worker, issue #17) | {s.rps / f.rps:.2f} | "
            f"{_yes(s.rps >= floor_share * f.rps)} |"
        )
    for name in ("encode", "decode"):
        s, f = one[f"service {name}"], one[f"floor {name}"]
        ratio = s.rps / f.rps
        lines.append(f"| /{name} >= 0.80 of its floor (1 worker) | {ratio:.2f} | {_yes(ratio >= 0.8)} |")
        lines.append(
            f"| /{name} p99 <= 2x the floor's | {s.p99_ms:.1f} ms vs 2 x {f.p99_ms:.1f} ms | "
            f"{_yes(s.p99_ms <= 2 * f.p99_ms)} |"
        )
    npy = rates["encode npy 10,000"]
    lines.append(f"| 10,000-digit .npy encode >= 200,000 digits/s | {npy:,.0f} | {_yes(npy >= 200_000)} |")
    lines.append(f"| start to /readyz <= 3 s | {start:.2f} s | {_yes(start <= 3)} |")
    gpu = "a CUDA device was present" if torch.cuda.is_available() else "no GPU here: GPU figures not measured"
    lines += ["", f"Device: {gpu}."]
    lines += ["", "## Batch endpoints over HTTP", "", "| request | digits/s |", "|---|---|"]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in rates.items()]
    lines += ["", "## Where a request's time goes (in process, one core)", "", "| piece | us per call |", "|---|---|"]
    lines += [f"| {name} | {cost:.1f} |" for name, cost in costs.items()]
    lines += [
        "",
        "## The entropy-coded model ec64 against mlp6 (1 worker, the same rounds)",
        "",
        "| endpoint | mlp6 req/s | ec64 req/s | ratio (target >= 0.80) | ec64 p50 / p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name in ("encode", "decode"):
        base, ec = one[f"service {name}"], one[f"service {name}-ec64"]
        lines.append(
            f"| /{name} | {base.rps:,.0f} | {ec.rps:,.0f} | {ec.rps / base.rps:.2f} ({_yes(ec.rps >= 0.8 * base.rps)}) "
            f"| {ec.p50_ms:.2f} / {ec.p99_ms:.2f} |"
        )
    lines += [
        "",
        "## ec64 v2 against v1, effort 0 (1 worker, the same rounds)",
        "",
        "| endpoint | v1 req/s | v2 req/s | ratio (target >= 0.80) | v2 p50 / p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name in ("encode", "decode"):
        v1, v2 = one[f"service {name}-ec64-v1"], one[f"service {name}-ec64"]
        lines.append(
            f"| /{name} | {v1.rps:,.0f} | {v2.rps:,.0f} | {v2.rps / v1.rps:.2f} ({_yes(v2.rps >= 0.8 * v1.rps)}) "
            f"| {v2.p50_ms:.2f} / {v2.p99_ms:.2f} |"
        )
    lines += [
        "",
        "## Per digit, per model (in process, one digit at a time, 1,000 MNIST test digits)",
        "",
        "encode: pixels to the 24 bytes; decode: the 24 bytes to pixels; format: the latent format's share "
        "(for ec64 the rounding, the rate control and the arithmetic code).",
        "",
        "| model | encode us | decode us | format pack us | format unpack us |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {c['encode']:.1f} | {c['decode']:.1f} | {c['format pack']:.1f} | {c['format unpack']:.1f} |"
        for name, c in per_model.items()
    ]
    lines += render_effort(efforts, hostile, rates)
    lines += ["", f"## Start-up\n\nProcess start to the first `/readyz` 200: {start:.2f} s (median of 3).", ""]
    return "\n".join(lines)


def render_effort(
    efforts: Sequence[EffortCost], hostile: dict[str, tuple[float, float]] | None, rates: dict[str, float]
) -> list[str]:
    lines: list[str] = []
    if efforts:
        lines += [
            "",
            "## Encode effort (issue 16): every model at every level, one core",
            "",
            "In process, one BLAS thread. Alone: one digit at a time, best of 3 passes over the first 20 test "
            "digits; in a batch: one `encode_many` of the first 1,000 test digits; each in wall time and in the "
            "process's CPU time (with one thread, the work of one core; on a shared machine the wall time also "
            f"holds other jobs' turns: load average {os.getloadavg()[0]:.1f} at the end). PSNR: the 10,000 test "
            "digits as served, from `python -m app.training.evaluate --efforts` (the figures `/models` reports).",
            "",
            "| model | effort | recipe | PSNR dB | us per digit alone (CPU) | us per digit in a batch of 1,000 (CPU) |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for e in efforts:
            psnr = "-" if e.psnr_db is None else f"{e.psnr_db:.2f}"
            lines.append(
                f"| {e.model} | {e.level} | {e.recipe} | {psnr} | {e.us_alone:,.0f} ({e.cpu_us_alone:,.0f}) "
                f"| {e.us_batch:,.0f} ({e.cpu_us_batch:,.0f}) |"
            )
        top = [e for e in efforts if e.model == "ec64"][-1]
        lines += [
            "",
            "| target | measured, wall (CPU) | met (CPU time) |",
            "|---|---|---|",
            f"| ec64 at effort {top.level}: <= 20 ms per digit alone, one core | {top.us_alone / 1000:.1f} "
            f"({top.cpu_us_alone / 1000:.1f}) ms | {_yes(top.cpu_us_alone <= 20_000)} |",
            f"| ec64 at effort {top.level}: <= 5 ms per digit in a batch of 1,000 | {top.us_batch / 1000:.2f} "
            f"({top.cpu_us_batch / 1000:.2f}) ms | {_yes(top.cpu_us_batch <= 5_000)} |",
        ]
    if hostile:
        lines += [
            "",
            "## Any input at effort 0: 10,000 noise digits against 10,000 MNIST digits",
            "",
            "One `encode_many` of each, in process (CPU time, one BLAS thread), best of 3; noise: uniform, every other "
            "digit thresholded to black and white. Target: at most 2x.",
            "",
            "| model | MNIST us per digit | noise us per digit | ratio |",
            "|---|---:|---:|---:|",
        ]
        for name, (mnist, noise) in hostile.items():
            lines.append(f"| {name} | {mnist:.1f} | {noise:.1f} | {noise / mnist:.2f} ({_yes(noise <= 2 * mnist)}) |")
        if "ec64: encode npy 10,000 noise digits" in rates:
            ratio = rates["ec64: encode npy 10,000"] / rates["ec64: encode npy 10,000 noise digits"]
            lines += ["", f"Over HTTP (`/encode/batch?model=ec64`, .npy): noise takes {ratio:.2f}x the MNIST time."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

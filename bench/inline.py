"""What INLINE_MAX should be: a thread hop against the per-item work of each batch endpoint and model.

`python -m bench.inline` prints, in process, with the served weights on the CPU:

1. the cost of one hop to a worker thread and back (`anyio.to_thread.run_sync` of a
   function that does nothing, awaited from a running event loop), the latency a
   request pays for leaving the loop;
2. for each batch endpoint and model, the time of the whole job that
   app/service/batch.py runs on the loop or in a thread (read the body's items,
   code them, write the answer) at several batch sizes;
3. for each of them, the largest batch whose job stays within the loop budget
   (`--budget-ms`), and the smallest whose job costs more than a hop.

4. one PNG made large by an ancillary chunk: the part of a job that grows with
   the body's bytes rather than its items (INLINE_MAX_BYTES).

INLINE_MAX is the smallest, over every endpoint and model, of the largest batch
whose job fits the budget: a thread hop costs more than a tiny batch, but one
ec64 item can cost most of the budget.
"""

import argparse
import asyncio
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from functools import partial

import httpx
import numpy as np
from anyio import to_thread

from app.codec import container, imaging
from app.codec.codecs import Codec, load_codecs
from app.service import batch
from app.settings import Settings

SIZES = (1, 2, 4, 8, 16, 32, 64)
Job = Callable[[], object]


def best_us(job: Job, repeat: int) -> float:
    """The median of `repeat` timings of `job()`, in microseconds (the median resists a shared machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def hop_us(repeat: int) -> float:
    def nothing() -> None:
        return None

    for _ in range(50):  # the thread pool started
        await to_thread.run_sync(nothing)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await to_thread.run_sync(nothing)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def multipart_body(pngs: list[bytes]) -> tuple[bytes, str]:
    files = [("img", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    request = httpx.Request("POST", "http://x/", files=files)
    return request.read(), request.headers["content-type"]


def padded_png(png: bytes, size: int) -> bytes:
    """`png` with a private ancillary chunk after IHDR, `size` bytes long in all."""
    data = b"\0" * (size - len(png) - 12)
    chunk = struct.pack(">I", len(data)) + b"prVt" + data + struct.pack(">I", zlib.crc32(b"prVt" + data))
    return png[:33] + chunk + png[33:]


def jobs(codec: Codec, digits: np.ndarray, n: int) -> dict[str, Job]:
    """The job batch.py hands to `off_loop` for a batch of `n`, per endpoint and body kind."""
    pixels = digits[:n]
    pngs = [imaging.write_digit(p) for p in pixels]
    npy = batch.npy_bytes(pixels)
    form, content_type = multipart_body(pngs)
    latents = codec.encode_many(pixels)
    items = [latents[i : i + 24] for i in range(0, len(latents), 24)]
    stored = container.write_container(container.Container(codec.model_id, codec.format.name, items))
    limit = 10_000

    def decode(data: bytes) -> bytes:
        return batch.npy_bytes(codec.decode_many(codec.format.unpack_many(data)))

    return {
        "encode npy": lambda: codec.encode_many(batch.read_npy_digits(npy, limit)),
        "encode multipart": lambda: encode_form(codec, form, content_type),
        "decode raw": lambda: decode(latents),
        "decode container": lambda: decode(batch._read_container(stored)[1]),
    }


def encode_form(codec: Codec, form: bytes, content_type: str) -> bytes:
    return codec.encode_many(batch.read_png_fields(form, content_type, 10_000)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=batch.LOOP_BUDGET_MS,
        help=f"longest one request may hold the loop (default {batch.LOOP_BUDGET_MS}, batch.LOOP_BUDGET_MS)",
    )
    parser.add_argument("--repeat", type=int, default=200, help="timings per figure, median kept (default 200)")
    args = parser.parse_args()
    budget_us = args.budget_ms * 1000
    hop = asyncio.run(hop_us(args.repeat * 10))
    print(f"thread hop (anyio.to_thread.run_sync, a no-op, median of {args.repeat * 10}): {hop:.0f} us")
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, size=(max(SIZES), 28, 28), dtype=np.uint8)
    digits[:, :4] = 0
    print(f"\njob time in us by batch size; the loop budget is {budget_us:.0f} us")
    print(f"{'model':6} {'endpoint':17} " + " ".join(f"{n:>7}" for n in SIZES) + "   fits   >hop")
    fits_all = []
    for codec in load_codecs(Settings(device="cpu"), "cpu"):
        by_size = {n: jobs(codec, digits, n) for n in SIZES}
        for name in by_size[1]:
            times = {n: best_us(by_size[n][name], args.repeat) for n in SIZES}
            fits = max((n for n in SIZES if times[n] <= budget_us), default=0)
            over_hop = min((n for n in SIZES if times[n] > hop), default=None)
            fits_all.append(fits)
            row = " ".join(f"{times[n]:7.0f}" for n in SIZES)
            print(f"{codec.name:6} {name:17} {row}   {fits:4}   {over_hop or '-':>4}")
    print(f"\nlargest batch within the budget for every endpoint and model: {min(fits_all)}")
    print("\none PNG with an ancillary chunk, multipart, mlp6 (the bytes are what grows):")
    mlp6 = load_codecs(Settings(device="cpu", models=[]), "cpu").default
    for size in (16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024):
        form, content_type = multipart_body([padded_png(imaging.write_digit(digits[0]), size)])
        took = best_us(partial(encode_form, mlp6, form, content_type), args.repeat)
        print(f"  {len(form):8} bytes: {took:6.0f} us")
    print(f"INLINE_MAX in app/service/batch.py: {batch.INLINE_MAX}, INLINE_MAX_BYTES: {batch.INLINE_MAX_BYTES}")
    print(f"a {batch.INLINE_MAX}-digit .npy body is {len(batch.npy_bytes(digits[: batch.INLINE_MAX]))} bytes")
    form, _ = multipart_body([imaging.write_digit(p) for p in digits[: batch.INLINE_MAX]])
    print(f"a {batch.INLINE_MAX}-PNG multipart body of random digits is {len(form)} bytes")


if __name__ == "__main__":
    main()

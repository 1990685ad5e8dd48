"""The `mnist-codec` command: encode and decode files against a server or in process.

    mnist-codec encode 7.png -o 7.lat              # against $MNIST_CODEC_URL or http://localhost:8000
    mnist-codec decode 7.lat -o 7.png --local      # in this process, with the committed weights
    mnist-codec encode digits/*.png -o latents/    # many files: progress bar, summary
    mnist-codec models                             # what the server serves
    mnist-codec serve                              # the service, the container's own command

Many files go through a pool of `--jobs` workers (bounded concurrency); encoding
uses the server's batch endpoint where it has one. Errors go to stderr, one line each.
"""

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from app.client.backends import DEFAULT_URL, URL_ENV, ClientError, CodecUnavailable, LocalCodec, RemoteCodec
from app.settings import get_settings

PROG = "mnist-codec"

# Exit statuses.
OK = 0
FILES_FAILED = 1  # the server (or the local codec) refused some files, or they could not be read or written
USAGE = 2  # argparse's own status for a bad command line
UNAVAILABLE = 3  # no server at the URL, no answer in time, or the local weights cannot be loaded

# The container's command (Dockerfile CMD, Makefile SERVE_ARGS); tests/test_cli.py checks they agree.
SERVE_ARGV = [
    "uvicorn", "app.main:app", "--http", "app.service.protocol:LimitedHttpToolsProtocol", "--host", "0.0.0.0",
    "--port", "8000", "--timeout-graceful-shutdown", "10", "--no-access-log",
]  # fmt: skip


class Backend(Protocol):
    model_ids: set[str]
    batch_available: bool | None

    def encode(self, png: bytes) -> bytes: ...
    def decode(self, data: bytes) -> bytes: ...
    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None: ...

    def decode_batch(self, latents: Sequence[bytes]) -> list[bytes] | None: ...
    def models(self) -> list[str]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path | None  # None: standard output


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    bytes_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Progress:
    """`[#####.....] 12/20` on one line of stderr, redrawn in place; silent when disabled."""

    def __init__(self, total: int, enabled: bool, stream: IO[str] | None = None, width: int = 30) -> None:
        self.total, self.enabled, self.width = total, enabled and total > 1, width
        self.stream = stream or sys.stderr
        self.count = 0

    def advance(self) -> None:
        self.count += 1
        if self.enabled:
            filled = self.width * self.count // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {self.count}/{self.total}")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.count:
            self.stream.write("\n")
            self.stream.flush()


def error(message: str) -> None:
    """One line on stderr."""
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- files


def expand_inputs(inputs: Sequence[Path], suffix: str) -> list[Path]:
    """The files named, with a folder standing for its `*suffix` files (sorted)."""
    files: list[Path] = []
    for path in inputs:
        files.extend(sorted(path.glob(f"*{suffix}")) if path.is_dir() else [path])
    return files


def plan_jobs(sources: list[Path], output: str | None, default_suffix: str) -> list[Job]:
    """Where each output goes; raises ValueError (a usage error) for impossible plans.

    No -o: beside the input, with `default_suffix`. `-o -`: standard output (one input).
    `-o DIR/`, an existing folder, or several inputs: into that folder. Else: that file.
    """
    if output == "-":
        if len(sources) != 1:
            raise ValueError("-o - (standard output) takes exactly one input")
        return [Job(sources[0], None)]
    if output is None:
        return [Job(src, src.with_name(src.stem + default_suffix)) for src in sources]
    out = Path(output)
    if len(sources) == 1 and not output.endswith(("/", os.sep)) and not out.is_dir():
        return [Job(sources[0], out)]
    suffix = default_suffix.removeprefix(".decoded")  # in a folder of their own, 7.lat -> 7.png
    jobs = [Job(src, out / (src.stem + suffix)) for src in sources]
    seen: dict[Path, Path] = {}
    for job in jobs:
        assert job.target is not None
        if job.target in seen:
            raise ValueError(f"{seen[job.target]} and {job.source} would both be written to {job.target}")
        seen[job.target] = job.source
    out.mkdir(parents=True, exist_ok=True)
    return jobs


# --------------------------------------------------------------------------- running


def run_jobs(
    jobs: list[Job],
    one: Callable[[bytes], bytes],
    many: Callable[[Sequence[bytes]], list[bytes] | None] | None,
    workers: int,
    batch_size: int,
    progress: Progress,
) -> Tally:
    """Convert every job, `workers` requests at a time.

    With `many` (a batch call), the first `batch_size` files go first, alone: if the codec
    takes them as one batch, the rest follows in batches, else file by file. A file that
    fails is reported and counted; an unavailable codec stops the run (CodecUnavailable).
    """
    tally = Tally()

    def finish(job: Job, result: bytes | ClientError) -> None:
        with tally.lock:
            if isinstance(result, ClientError):
                tally.failed += 1
                error(f"{job.source}: {result}")
            else:
                try:
                    if job.target is None:
                        sys.stdout.buffer.write(result)
                        sys.stdout.buffer.flush()
                    else:
                        job.target.write_bytes(result)
                except OSError as exc:
                    tally.failed += 1
                    error(f"{job.target}: cannot write: {exc.strerror or exc}")
                else:
                    tally.done += 1
                    tally.bytes_out += len(result)
            progress.advance()

    def read(job: Job) -> bytes | ClientError:
        try:
            return job.source.read_bytes()
        except OSError as exc:
            return ClientError(f"cannot read: {exc.strerror or exc}")

    def as_batch(group: list[Job]) -> bool:
        """The group in one batch call; False (nothing done) when the codec did not take it."""
        assert many is not None
        payloads = [read(job) for job in group]
        readable = [payload for payload in payloads if isinstance(payload, bytes)]
        results = many(readable) if len(readable) > 1 else None
        if results is None:
            return False
        latents = iter(results)
        for job, payload in zip(group, payloads, strict=True):
            finish(job, payload if isinstance(payload, ClientError) else next(latents))
        return True

    def one_by_one(group: list[Job]) -> None:
        for job in group:
            payload = read(job)
            try:
                finish(job, payload if isinstance(payload, ClientError) else one(payload))
            except CodecUnavailable:
                raise
            except ClientError as exc:  # this file only: the server said what is wrong with it
                finish(job, exc)

    def batch_or_one_by_one(group: list[Job]) -> None:
        if not as_batch(group):  # a batch refused (a bad file in it, say): file by file names the culprit
            one_by_one(group)

    tasks: list[tuple[Callable[[list[Job]], None], list[Job]]]
    if many is not None and jobs and as_batch(jobs[:batch_size]):
        rest = jobs[batch_size:]
        tasks = [(batch_or_one_by_one, rest[i : i + batch_size]) for i in range(0, len(rest), batch_size)]
    else:
        tasks = [(one_by_one, [job]) for job in jobs]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures: list[Future[None]] = [pool.submit(task, group) for task, group in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            failure = future.exception()
            if failure is not None:
                for pending in futures:
                    pending.cancel()
                raise failure
    return tally


def local_weights(given: Path | None) -> Path:
    """--weights, else the service's setting; a relative default not found here is tried beside
    the package too, so `--local` finds the committed weights from any folder of a checkout."""
    if given is not None:
        return given
    configured = get_settings().weights
    beside_package = Path(__file__).resolve().parents[2] / configured
    if not configured.is_absolute() and not configured.exists() and beside_package.exists():
        return beside_package
    return configured


def open_backend(args: argparse.Namespace) -> Backend:
    if args.local:
        return LocalCodec(local_weights(args.weights), get_settings().device)
    return RemoteCodec(args.url, model=args.model, timeout=args.timeout, connections=getattr(args, "jobs", 4))


def convert_command(args: argparse.Namespace, backend: Backend) -> int:
    encoding = args.command == "encode"
    sources = expand_inputs(args.inputs, ".png" if encoding else ".lat")
    if not sources:
        error("no input files (a folder stands for its .png or .lat files)")
        return USAGE
    try:
        jobs = plan_jobs(sources, args.output, ".lat" if encoding else ".decoded.png")
    except (ValueError, OSError) as exc:
        error(str(exc))
        return USAGE
    progress = Progress(len(jobs), enabled=not args.quiet and sys.stderr.isatty())
    start = time.perf_counter()
    try:
        tally = run_jobs(
            jobs,
            backend.encode if encoding else backend.decode,
            backend.encode_batch if encoding else backend.decode_batch,
            workers=args.jobs,
            batch_size=args.batch_size,
            progress=progress,
        )
    except CodecUnavailable as exc:
        progress.finish()
        error(str(exc))
        return UNAVAILABLE
    progress.finish()
    seconds = time.perf_counter() - start
    if not args.quiet and args.output != "-":
        verb = "encoded" if encoding else "decoded"
        how = "in process" if args.local else "batch endpoint" if backend.batch_available else "one request per file"
        model = f"; model {', '.join(sorted(backend.model_ids))}" if backend.model_ids else ""
        print(
            f"{verb} {tally.done} of {len(jobs)} files ({tally.bytes_out} bytes) in {seconds:.2f} s, "
            f"{tally.failed} failed ({how}{model})"
        )
    return FILES_FAILED if tally.failed else OK


def models_command(args: argparse.Namespace, backend: Backend) -> int:
    try:
        lines = backend.models()
    except CodecUnavailable as exc:
        error(str(exc))
        return UNAVAILABLE
    except ClientError as exc:
        error(str(exc))
        return FILES_FAILED
    print("\n".join(lines))
    return OK


def serve_command_line(host: str, port: int) -> list[str]:
    """The container's command with this Python's uvicorn, on `host`:`port`."""
    argv = list(SERVE_ARGV)
    argv[argv.index("--host") + 1] = host
    argv[argv.index("--port") + 1] = str(port)
    return [sys.executable, "-m", *argv]


# --------------------------------------------------------------------------- argument parsing


def parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    where = connection.add_argument_group("where the codec runs")
    where.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server to use (default ${URL_ENV}, else {DEFAULT_URL})",
    )
    where.add_argument("--local", action="store_true", help="run the model in this process instead of a server")
    where.add_argument(
        "--weights", type=Path, help="checkpoint for --local (default: the service's, MNIST_CODEC_WEIGHTS)"
    )
    where.add_argument("--model", help="ask the server for this model (sent as ?model=NAME)")
    where.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server (default 30)")

    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("-o", "--output", help="output file, folder (DIR/), or - for stdout; default: beside each input")
    files.add_argument("-j", "--jobs", type=int, default=4, help="requests in flight at once (default 4)")
    files.add_argument("--batch-size", type=int, default=64, help="files per batch request, where the server has one")
    files.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")

    top = argparse.ArgumentParser(
        prog=PROG,
        description="Compress 28x28 MNIST digits to 24 bytes and back, with an mnist-codec server or in process.",
        epilog="exit status: 0 all done, 1 some files failed, 2 bad command line, 3 no server (or no model) to use",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    encode = commands.add_parser("encode", parents=[connection, files], help="PNG files -> 24-byte .lat files")
    encode.add_argument("inputs", nargs="+", type=Path, metavar="PNG", help="28x28 PNGs, or folders of them")
    decode = commands.add_parser("decode", parents=[connection, files], help=".lat files -> 28x28 PNGs")
    decode.add_argument("inputs", nargs="+", type=Path, metavar="LAT", help="24-byte latents, or folders of them")
    commands.add_parser("models", parents=[connection], help="list the models the server serves")
    serve = commands.add_parser("serve", help="start the service (the container's command)")
    serve.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "serve":
        command = serve_command_line(args.host, args.port)
        os.execv(command[0], command)  # becomes uvicorn: signals reach it directly
    if args.local and args.model:
        p.error("--model picks a model on a server; with --local, use --weights PATH")
    if getattr(args, "jobs", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        p.error("--jobs and --batch-size must be at least 1")
    try:
        backend = open_backend(args)
    except CodecUnavailable as exc:
        error(str(exc))
        return UNAVAILABLE
    try:
        if args.command == "models":
            return models_command(args, backend)
        return convert_command(args, backend)
    finally:
        backend.close()


if __name__ == "__main__":
    raise SystemExit(main())

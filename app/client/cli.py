"""The `mnist-codec` command: encode and decode files against a server or in process.

    mnist-codec encode 7.png -o 7.lat              # against $MNIST_CODEC_URL or http://localhost:8000
    mnist-codec decode 7.lat -o 7.png --local      # in this process, with the committed weights
    mnist-codec encode digits/*.png -o latents/    # many files: progress bar, summary
    mnist-codec encode digits/*.png -o digits.lats # many latents in one container (app.codec.latent)
    mnist-codec encode 7.png --effort 3            # search for a better latent (levels: mnist-codec models)
    mnist-codec decode latents/ -o out/            # each latent with the model that made it
    mnist-codec models                             # what the server serves
    mnist-codec serve                              # the service, the container's own command

Many files go through a pool of `--jobs` workers (bounded concurrency); encoding
uses the server's batch endpoint where it has one. Errors go to stderr, one line each.

The model id travels with stored latents: `encode` records it in the folder's
`latents.json` (app.client.store) or inside a `.lats` container; `decode` sends it as
X-Model-Id (the server picks those weights), or checks it against the weights of
`--local`. Latents made by weights that are not there are refused before anything
is written, unless --force.
"""

import argparse
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from app.client import store
from app.client.backends import (
    DEFAULT_URL,
    URL_ENV,
    ClientError,
    CodecUnavailable,
    LocalCodec,
    RemoteCodec,
    UsageError,
)
from app.codec import latent
from app.errors import LatentError
from app.settings import get_settings

PROG = "mnist-codec"

# Exit statuses.
OK = 0
FILES_FAILED = 1  # the server (or the local codec) refused some files, or they could not be read or written
USAGE = 2  # argparse's own status for a bad command line
UNAVAILABLE = 3  # no server at the URL, not an mnist-codec server, no answer in time, or no weights to load
MODEL_MISMATCH = 4  # latents made by weights that are not there: refused, nothing written

# Where `pip install` puts the committed weights (pyproject.toml, [tool.setuptools.data-files]).
INSTALLED_WEIGHTS = Path(sysconfig.get_path("data")) / "share" / "mnist-codec"

# The container's command (Dockerfile CMD, Makefile SERVE_ARGS); tests/test_cli.py checks they agree.
SERVE_ARGV = [
    "uvicorn", "app.main:app", "--http", "app.service.protocol:LimitedHttpToolsProtocol", "--host", "0.0.0.0",
    "--port", "8000", "--timeout-graceful-shutdown", "10", "--no-access-log",
]  # fmt: skip


class Backend(Protocol):
    model_id: str  # the model that encodes, and decodes latents with no recorded model
    format_name: str  # its latent format (app.codec.latent)
    model_ids: set[str]
    served: dict[str, str]  # name -> the model id it means
    versions: dict[str, str]  # every model id served -> its name
    batch_available: bool | None
    effort: int | None  # the encode effort level used (None: the server did not say)

    def connect(self) -> None: ...
    def encode(self, png: bytes) -> bytes: ...
    def decode(self, data: bytes, model_id: str | None = None) -> bytes: ...
    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None: ...

    def decode_batch(self, latents: Sequence[bytes], model_id: str | None = None) -> list[bytes] | None: ...
    def models(self) -> list[str]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Job:
    source: Path  # for a latent inside a container: CONTAINER/NAME
    target: Path | None  # None: standard output, or kept in memory for a container
    payload: bytes | None = None  # the input when it is not a file of its own (a container's latent)
    model_id: str | None = None  # decoding: the recorded id of the model that made the latent


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    bytes_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def progress_bar(total: int, quiet: bool) -> "tqdm[None]":
    """tqdm on stderr: count, rate and ETA; silent with --quiet, when stderr is not a terminal
    (disable=None), or for a single file."""
    return tqdm(total=total, unit="file", disable=True if quiet or total < 2 else None, file=sys.stderr)


def error(message: str) -> None:
    """One line on stderr (through tqdm, so that a progress bar on screen is redrawn below it)."""
    tqdm.write(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)


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
    return jobs


def make_folders(jobs: list[Job]) -> None:
    """The folders the outputs go into; made only once the run is sure to start (a refused
    decode leaves nothing behind, not even an empty folder)."""
    for folder in {job.target.parent for job in jobs if job.target is not None}:
        folder.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- running


Sink = Callable[[Job, bytes], None]  # puts one result where it belongs; may raise OSError


def write_file(job: Job, result: bytes) -> None:
    if job.target is None:
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
    else:
        job.target.write_bytes(result)


def run_jobs(
    jobs: list[Job],
    one: Callable[[bytes], bytes],
    many: Callable[[Sequence[bytes]], list[bytes] | None] | None,
    workers: int,
    batch_size: int,
    progress: "tqdm[None]",
    sink: Sink = write_file,
    tally: "Tally | None" = None,
) -> Tally:
    """Convert every job, `workers` requests at a time.

    With `many` (a batch call), the first `batch_size` files go first, alone: if the codec
    takes them as one batch, the rest follows in batches, else file by file. A file that
    fails is reported and counted; an unavailable codec stops the run (CodecUnavailable).
    """
    tally = tally or Tally()

    def finish(job: Job, result: bytes | ClientError) -> None:
        with tally.lock:
            if isinstance(result, ClientError):
                tally.failed += 1
                error(f"{job.source}: {result}")
            else:
                try:
                    sink(job, result)
                except OSError as exc:
                    tally.failed += 1
                    error(f"{job.target}: cannot write: {exc.strerror or exc}")
                else:
                    tally.done += 1
                    tally.bytes_out += len(result)
            progress.update()

    def read(job: Job) -> bytes | ClientError:
        if job.payload is not None:
            return job.payload
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


def find_weights(path: Path) -> Path:
    """`path` as given when it is absolute or exists here; a relative one that is not in this folder
    is looked for beside the package (a checkout) and where `pip install` put the committed weights
    (`model_weights/ec64/ec64.safetensors` works from any folder). CodecUnavailable says how to point
    at them when it is nowhere."""
    if path.is_absolute() or path.exists():
        return path
    places = [Path(__file__).resolve().parents[2], INSTALLED_WEIGHTS]
    for place in places:
        if (place / path).exists():
            return place / path
    raise CodecUnavailable(
        f"checkpoint {path} not found here, in {places[0]} or in {places[1]}; "
        "pass --weights PATH or set MNIST_CODEC_WEIGHTS to the checkpoint (.safetensors)"
    )


def local_weights(given: Path | None) -> list[Path]:
    """--weights, else the service's checkpoints (MNIST_CODEC_WEIGHTS, then MNIST_CODEC_MODELS): every
    shipped model, as the server holds them, so that --model NAME and a recorded id find theirs."""
    if given is not None:
        return [find_weights(given)]
    settings = get_settings()
    return [find_weights(path) for path in settings.checkpoints()]


def open_backend(args: argparse.Namespace) -> Backend:
    backend: Backend
    effort = getattr(args, "effort", None)  # encode only
    if args.local:
        default = None if args.weights else get_settings().default_model
        weights = local_weights(args.weights)
        pinned = "" if args.weights else get_settings().default_versions
        backend = LocalCodec(
            weights, get_settings().device, effort=effort, model=args.model, default=default, default_versions=pinned
        )
    else:
        jobs = getattr(args, "jobs", 4)
        backend = RemoteCodec(args.url, model=args.model, timeout=args.timeout, connections=jobs, effort=effort)
    try:
        backend.connect()
    except BaseException:
        backend.close()
        raise
    return backend


# --------------------------------------------------------------------------- the commands


def encode_command(args: argparse.Namespace, backend: Backend) -> int:
    sources = expand_inputs(args.inputs, ".png")
    if not sources:
        error("no input files (a folder stands for its .png files)")
        return USAGE
    into_container = args.output is not None and args.output.endswith(latent.CONTAINER_SUFFIX)
    try:
        jobs = [Job(src, None) for src in sources] if into_container else plan_jobs(sources, args.output, ".lat")
    except (ValueError, OSError) as exc:
        error(str(exc))
        return USAGE
    results: dict[Path, bytes] = {}  # into a container: the latents, kept until all are in
    written: list[Path] = []  # into files: those written in this run, whose model id gets recorded

    def keep(job: Job, result: bytes) -> None:
        results[job.source] = result

    def write(job: Job, result: bytes) -> None:
        write_file(job, result)
        if job.target is not None:
            written.append(job.target)

    try:  # a manifest that cannot be updated is found before any latent is written, not after
        for folder in {job.target.parent for job in jobs if job.target is not None}:
            store.read(folder)
    except store.ManifestError as exc:
        error(str(exc))
        return FILES_FAILED
    try:
        make_folders(jobs)
    except OSError as exc:
        error(str(exc))
        return USAGE

    start = time.perf_counter()
    tally, stopped = Tally(), None
    with progress_bar(len(jobs), args.quiet) as progress:
        try:
            sink = keep if into_container else write
            run_jobs(jobs, backend.encode, backend.encode_batch, args.jobs, args.batch_size, progress, sink, tally)
        except CodecUnavailable as exc:
            stopped = exc  # the files written so far still get their model id recorded
    if into_container:
        if stopped:
            error(f"{stopped} ({args.output} not written)")
            return UNAVAILABLE
        target = Path(args.output)
        if tally.failed:
            error(f"{target}: not written, {tally.failed} of {len(jobs)} files failed")
            return FILES_FAILED
        container = latent.Container(
            backend.model_id, backend.format_name, [results[src] for src in sources], [src.name for src in sources]
        )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            store.write_atomically(target, latent.write_container(container))
        except OSError as exc:
            error(f"{target}: cannot write: {exc.strerror or exc}")
            return FILES_FAILED
        tally.bytes_out = target.stat().st_size
    else:
        try:
            store.record(dict.fromkeys(written, backend.model_id))
        except (OSError, store.ManifestError) as exc:
            error(f"cannot record the model id of the latents: {exc}")
            return FILES_FAILED
        if stopped:
            error(str(stopped))
            return UNAVAILABLE
        if args.output == "-" and not args.quiet:  # nowhere to record it: say it
            error(f"note: made by model {backend.model_id} (not recorded: the latent went to standard output)")
    summary(args, backend, "encoded", tally, len(jobs), time.perf_counter() - start)
    return FILES_FAILED if tally.failed else OK


def summary(args: argparse.Namespace, backend: Backend, verb: str, tally: Tally, total: int, seconds: float) -> None:
    if args.quiet or args.output == "-":
        return
    how = "in process" if args.local else "batch endpoint" if backend.batch_available else "one request per file"
    model = f"; model {', '.join(sorted(backend.model_ids))}" if backend.model_ids else ""
    effort = f"; effort {backend.effort}" if verb == "encoded" and backend.effort is not None else ""
    print(
        f"{verb} {tally.done} of {total} files ({tally.bytes_out} bytes) in {seconds:.2f} s, "
        f"{tally.failed} failed ({how}{model}{effort})"
    )


def decode_jobs(args: argparse.Namespace) -> list[Job]:
    """A job per latent: the .lat files named (or in the folders named), and every latent of each
    .lats container, each with the model id recorded for it. Raises ValueError (a usage error),
    LatentError or store.ManifestError (nothing can be decoded)."""
    sources = expand_inputs(args.inputs, ".lat")
    containers = [src for src in sources if src.suffix == latent.CONTAINER_SUFFIX]
    singles = [src for src in sources if src.suffix != latent.CONTAINER_SUFFIX]
    output = args.output
    if containers and output is None:
        if len(sources) > 1:
            raise ValueError("decoding a .lats container with other inputs needs -o DIR/")
        output = f"{containers[0].with_suffix('')}{os.sep}"  # digits.lats -> digits/
    if containers and output == "-":
        raise ValueError("a .lats container holds several latents; -o - takes one")
    recorded = store.Recorded()
    items: list[tuple[Path, bytes | None, str | None]] = [(src, None, recorded.model_id(src)) for src in singles]
    for path in containers:
        try:
            box = latent.read_container(path.read_bytes())
        except OSError as exc:
            raise LatentError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except LatentError as exc:
            raise LatentError(f"{path}: {exc}") from exc
        names = box.names or [f"{i:06d}" for i in range(len(box.latents))]
        items += [(path / name, data, box.model_id) for name, data in zip(names, box.latents, strict=True)]
    if not items:
        return []
    plan = plan_jobs([src for src, _, _ in items], output, ".decoded.png")
    return [Job(job.source, job.target, data, model_id) for job, (_, data, model_id) in zip(plan, items, strict=True)]


def check_models(jobs: list[Job], backend: Backend, args: argparse.Namespace) -> str | None:
    """Why these latents must not be decoded here (one line), or None. The model ids recorded with
    them must be among the served ones (or be --model's); latents with no record pass."""
    if args.model:
        # --model NAME: any version of it (the recorded id picks it), as ?model=NAME with X-Model-Id does
        name = backend.versions.get(backend.model_id)
        usable = (
            {backend.model_id}
            if args.model == backend.model_id
            else {i for i, n in backend.versions.items() if n == name}
        )
        what = f"model {args.model!r}{' (--local)' if args.local else ''} is {', '.join(sorted(usable))}"
    else:
        usable = set(backend.versions)
        if args.local:
            where = f"--weights {args.weights} is" if args.weights else "--local has"
        else:
            where = f"{args.url} serves"
        what = f"{where} {', '.join(sorted(usable))}"
    strangers = [job for job in jobs if job.model_id is not None and job.model_id not in usable]
    if not strangers:
        return None
    ids = ", ".join(sorted({str(job.model_id) for job in strangers}))
    if {job.model_id for job in strangers} <= set(backend.versions):
        fix = "no --model (the recorded id picks the model that made them)"
    elif args.local:
        fix = "--weights PATH of the checkpoint that made them"
    else:
        fix = "a server that has those weights"
    return (
        f"refused: {len(strangers)} of {len(jobs)} latents (first {strangers[0].source}) were made by {ids}, "
        f"but {what}; nothing written. Use {fix}, or --force to decode them with {backend.model_id} anyway"
    )


def decode_command(args: argparse.Namespace, backend: Backend) -> int:
    try:
        jobs = decode_jobs(args)
    except (LatentError, store.ManifestError) as exc:  # before ValueError: a LatentError is one
        error(str(exc))
        return FILES_FAILED
    except (ValueError, OSError) as exc:
        error(str(exc))
        return USAGE
    if not jobs:
        error("no input files (a folder stands for its .lat files)")
        return USAGE
    if not args.force and (refusal := check_models(jobs, backend, args)):
        error(refusal)
        return MODEL_MISMATCH
    # Files that are not there fail on their own, with their own message: no note about their model id.
    unrecorded = sum(job.model_id is None and (job.payload is not None or job.source.exists()) for job in jobs)
    if unrecorded and not args.quiet and not args.force:
        error(
            f"note: {unrecorded} of {len(jobs)} latents have no recorded model id (no {store.MANIFEST} entry); "
            f"decoding them with {backend.model_id}"
        )
    try:
        make_folders(jobs)
    except OSError as exc:
        error(str(exc))
        return USAGE
    # One run per model id: each request claims the id of its latents (X-Model-Id), so the server
    # decodes with the weights that made them. --force claims none: --model's or the default weights.
    groups: dict[str | None, list[Job]] = {}
    for job in jobs:
        groups.setdefault(None if args.force else job.model_id, []).append(job)
    tally = Tally()
    start = time.perf_counter()
    with progress_bar(len(jobs), args.quiet) as progress:
        try:
            for model_id, group in groups.items():
                one = partial(backend.decode, model_id=model_id)
                many = partial(backend.decode_batch, model_id=model_id)
                run_jobs(group, one, many, args.jobs, args.batch_size, progress, tally=tally)
        except CodecUnavailable as exc:
            error(str(exc))
            return UNAVAILABLE
    summary(args, backend, "decoded", tally, len(jobs), time.perf_counter() - start)
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


def effort_level(text: str) -> int:
    """--effort's value: an integer 0 or more (the model's own range is checked once it is known)."""
    try:
        level = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (an effort level, 0 or more); got {text!r}") from None
    if level < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {level}")
    return level


def server_url(text: str) -> str:
    """--url as curl takes it: `localhost:8020` (no scheme) is http://localhost:8020."""
    text = text.strip()
    if "://" not in text:
        return f"http://{text}"
    return text


def seconds(text: str) -> float:
    """--timeout: a number of seconds above 0 (0 would make every request fail at once)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds; got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    where = connection.add_argument_group("where the codec runs")
    where.add_argument(
        "--url",
        type=server_url,
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server to use; without a scheme, http:// (default ${URL_ENV}, else {DEFAULT_URL})",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="run the models in this process instead of a server: every shipped one, as the server holds them",
    )
    where.add_argument(
        "--weights",
        type=Path,
        help="the one checkpoint for --local; a relative path not found here is looked for among the shipped "
        "weights (default: the service's, MNIST_CODEC_WEIGHTS and MNIST_CODEC_MODELS)",
    )
    where.add_argument(
        "--model",
        help="use this model (sent to a server as ?model=NAME; with --local, one of the shipped ones); decoding, "
        "latents recorded as made by another model are refused unless --force",
    )
    where.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds to wait for the server, more than 0 (default 30)"
    )

    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("-o", "--output", help="output file, folder (DIR/), or - for stdout; default: beside each input")
    files.add_argument("-j", "--jobs", type=int, default=4, help="requests in flight at once (default 4)")
    files.add_argument("--batch-size", type=int, default=64, help="files per batch request, where the server has one")
    files.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")

    top = argparse.ArgumentParser(
        prog=PROG,
        description="Compress 28x28 MNIST digits to 24 bytes and back, with an mnist-codec server or in process.",
        epilog="exit status: 0 all done, 1 some files failed, 2 bad command line, 3 no mnist-codec server (or no "
        "model) to use, 4 latents made by other weights (refused; see decode --force)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    encode = commands.add_parser(
        "encode",
        parents=[connection, files],
        help="PNG files -> 24-byte .lat files, or one .lats container",
        description="Writes each latent as its 24 raw bytes and records its model id in latents.json in the "
        "same folder; with -o NAME.lats, writes all of them into one container (model id, format, names "
        "inside), and only when every file was encoded.",
    )
    encode.add_argument("inputs", nargs="+", type=Path, metavar="PNG", help="28x28 PNGs, or folders of them")
    encode.add_argument(
        "--effort",
        type=effort_level,
        metavar="N",
        help="encode effort, 0 to the model's highest level (mnist-codec models lists them): higher levels "
        "search for a latent the decoder reads better, at more CPU time; the same level always gives the same "
        "bytes, and decoding needs no flag (default: the model's default_effort, 0 unless the server says otherwise: "
        "the encoder's single pass)",
    )
    decode = commands.add_parser(
        "decode",
        parents=[connection, files],
        help=".lat files or .lats containers -> 28x28 PNGs",
        description="Each latent is decoded by the model that made it: the id recorded in latents.json beside "
        "the .lat files, or in the .lats container, is sent as X-Model-Id (with --local: checked against "
        "--weights). Latents made by weights that are not there are refused (exit status 4, nothing written).",
    )
    decode.add_argument(
        "inputs", nargs="+", type=Path, metavar="LAT", help="24-byte .lat files, folders of them, or .lats containers"
    )
    decode.add_argument(
        "--force",
        action="store_true",
        help="decode even latents recorded as made by other weights, with --model's (or the default) model",
    )
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
    if getattr(args, "jobs", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        p.error("--jobs and --batch-size must be at least 1")
    try:
        backend = open_backend(args)
    except CodecUnavailable as exc:
        error(str(exc))
        return UNAVAILABLE
    except UsageError as exc:  # --effort out of the model's range
        error(str(exc))
        return USAGE
    try:
        if args.command == "models":
            return models_command(args, backend)
        if args.command == "encode":
            return encode_command(args, backend)
        return decode_command(args, backend)
    finally:
        backend.close()


if __name__ == "__main__":
    raise SystemExit(main())

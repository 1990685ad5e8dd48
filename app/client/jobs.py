"""The command's jobs: one file (or one latent of a container) in, one result out.

`plan_jobs` says where each output goes, `run_jobs` converts them all through a backend's
`encode`/`decode` (or its batch call), `--jobs` at a time, and counts what it did in a `Tally`.
Errors go to stderr, one line each (`error`), below the progress bar.
"""

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from app.client.backends import BackendUnavailable, ClientError

PROG = "mnist-codec"


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

    With `many` (a batch call), the first `batch_size` files go first, alone: if the backend
    takes them as one batch, the rest follows in batches, else file by file. A file that
    fails is reported and counted; an unavailable backend stops the run (BackendUnavailable).
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
        """The group in one batch call; False (nothing done) when the backend did not take it."""
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
            except BackendUnavailable:
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

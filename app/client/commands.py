"""The commands `mnist-codec encode`, `decode` and `models`, each given its parsed arguments and a backend.

Each returns the command's exit status (below); `app.client.cli` picks the command and the
backend, and `app.client.arguments` says what the arguments are.
"""

import argparse
import os
import sysconfig
import time
from functools import partial
from pathlib import Path

from app.client import store
from app.client.backends import Backend, BackendUnavailable, ClientError, LocalBackend, RemoteBackend
from app.client.jobs import (
    Job,
    Tally,
    error,
    expand_inputs,
    make_folders,
    plan_jobs,
    progress_bar,
    run_jobs,
    write_file,
)
from app.codec import container
from app.errors import LatentError
from app.settings import get_settings

# Where `pip install` puts the committed weights (pyproject.toml, [tool.setuptools.data-files]).
INSTALLED_WEIGHTS = Path(sysconfig.get_path("data")) / "share" / "mnist-codec"

# Exit statuses.
OK = 0
FILES_FAILED = 1  # the server (or the local codec) refused some files, or they could not be read or written
USAGE = 2  # argparse's own status for a bad command line
UNAVAILABLE = 3  # no server at the URL, not an mnist-codec server, no answer in time, or no weights to load
MODEL_MISMATCH = 4  # latents made by weights that are not there: refused, nothing written


def find_weights(path: Path) -> Path:
    """`path` as given when it is absolute or exists here; a relative one that is not in this folder
    is looked for beside the package (a checkout) and where `pip install` put the committed weights
    (`model_weights/ec64/ec64.safetensors` works from any folder). BackendUnavailable says how to point
    at them when it is nowhere."""
    if path.is_absolute() or path.exists():
        return path
    places = [Path(__file__).resolve().parents[2], INSTALLED_WEIGHTS]
    for place in places:
        if (place / path).exists():
            return place / path
    raise BackendUnavailable(
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
        backend = LocalBackend(
            weights, get_settings().device, effort=effort, model=args.model, default=default, default_versions=pinned
        )
    else:
        jobs = getattr(args, "jobs", 4)
        backend = RemoteBackend(args.url, model=args.model, timeout=args.timeout, connections=jobs, effort=effort)
    try:
        backend.connect()
    except BaseException:
        backend.close()
        raise
    return backend


def encode_command(args: argparse.Namespace, backend: Backend) -> int:
    sources = expand_inputs(args.inputs, ".png")
    if not sources:
        error("no input files (a folder stands for its .png files)")
        return USAGE
    into_container = args.output is not None and args.output.endswith(container.CONTAINER_SUFFIX)
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
        except BackendUnavailable as exc:
            stopped = exc  # the files written so far still get their model id recorded
    if into_container:
        if stopped:
            error(f"{stopped} ({args.output} not written)")
            return UNAVAILABLE
        target = Path(args.output)
        if tally.failed:
            error(f"{target}: not written, {tally.failed} of {len(jobs)} files failed")
            return FILES_FAILED
        box = container.Container(
            backend.model_id, backend.format_name, [results[src] for src in sources], [src.name for src in sources]
        )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            store.write_atomically(target, container.write_container(box))
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
    containers = [src for src in sources if src.suffix == container.CONTAINER_SUFFIX]
    singles = [src for src in sources if src.suffix != container.CONTAINER_SUFFIX]
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
            box = container.read_container(path.read_bytes())
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
        name = backend.versions.get(backend.model_id, "")
        if args.model not in backend.versions and sum(n == name for n in backend.versions.values()) > 1:
            # the server's rule (Codecs.refuse_a_guess): bare bytes of a name with several versions are not guessed
            plan = f"{name} has several versions, so they are refused: name one with --model MODEL_ID"
        else:
            plan = f"decoding them with {backend.model_id}"
        error(
            f"note: {unrecorded} of {len(jobs)} latents have no recorded model id (no {store.MANIFEST} entry); {plan}"
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
        except BackendUnavailable as exc:
            error(str(exc))
            return UNAVAILABLE
    summary(args, backend, "decoded", tally, len(jobs), time.perf_counter() - start)
    return FILES_FAILED if tally.failed else OK


def models_command(args: argparse.Namespace, backend: Backend) -> int:
    try:
        lines = backend.models()
    except BackendUnavailable as exc:
        error(str(exc))
        return UNAVAILABLE
    except ClientError as exc:
        error(str(exc))
        return FILES_FAILED
    print("\n".join(lines))
    return OK

"""Checkpoint files, read and written without torch: safetensors with a JSON header.

A checkpoint is one `.safetensors` file (the format of Hugging Face's `safetensors`
package: an 8-byte header length, a JSON header, the raw little-endian tensors). Its
tensors are the network's state dict, by the same names torch gives them
(`encoder.0.weight`, ...). Its `__metadata__` (strings only, as the format requires)
holds:

    mnist_codec_checkpoint  "2"  (format 1 was the torch pickle, `.pt`)
    arch                    the architecture's name in the registry (`mlp6`, `mlp24`, ...)
    latent_format           the wire format it speaks (a name in the latent formats)
    model_args              JSON: the architecture's Args dataclass, tuples as lists
    metadata                JSON: training config, data checksums, metrics, ... and `trained_at`,
                            when the weights were made (ISO-8601 UTC, seconds; older files may lack it)
    numpy_program           JSON, present when the network is plain Linear layers and
                            element-wise activations: {"encoder": [["linear", "encoder.0"],
                            ["relu"], ...], "decoder": [...]}, the steps numpy runs on the
                            CPU; without it the service needs torch for this model
    model_id                `<arch>-<first 12 hex digits of weights_sha256>`, checked on load

The model id is computed over the tensors exactly as it was over the torch state dict,
so converting a `.pt` file keeps its id and the latents stored with it still bind.
Converting needs torch (to read the pickle) and the architectures (`app.codec.convert`, which
imports this module, never the other way round); reading, writing and showing do not:

    python -m app.codec.convert model_weights/mlp6.pt                   # writes model_weights/mlp6.safetensors
    python -m app.codec.checkpoint show model_weights/mlp6.safetensors  # arch, id, format, how it runs
    python -m app.codec.checkpoint stamp --trained-at 2026-11-25T15:53:38Z model_weights/mlp6.safetensors

`stamp` sets `trained_at` in the header of a checkpoint written before trainers recorded it;
the tensors are untouched, so its model id (checked on the way out) stays the same.
"""

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from app.errors import CheckpointError

FORMAT = "2"
SUFFIX = ".safetensors"
Program = dict[str, list[list[str]]]  # "encoder"/"decoder" -> steps like ["linear", "encoder.0"], ["relu"]


@dataclass
class Checkpoint:
    arch: str
    latent_format: str
    model_args: dict[str, Any]
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    numpy_program: Program | None = None

    @property
    def model_id(self) -> str:
        return model_id(self.tensors, self.arch)

    @property
    def trained_at(self) -> str | None:
        """When the weights were made (ISO-8601 UTC), None for a checkpoint that does not say."""
        value = self.metadata.get("trained_at")
        return value if isinstance(value, str) else None


def utc_iso(moment: datetime | str | None = None) -> str:
    """`moment` (default: now; a string is read as ISO-8601, a naive one as UTC) as ISO-8601 UTC to the second."""
    if moment is None:
        moment = datetime.now(UTC)
    elif isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def stamp(path: Path, trained_at: str) -> str:
    """Set `trained_at` in `path`'s metadata, weights untouched; returns the (unchanged) model id."""
    loaded = read(path)
    loaded.metadata["trained_at"] = utc_iso(trained_at)
    write(path, loaded)
    if read(path).model_id != loaded.model_id:
        raise CheckpointError(f"stamping {path} changed its model id")  # cannot happen: the tensors are the same
    return loaded.model_id


def weights_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's name, shape, dtype and little-endian bytes (the model id's digits)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.shape}:{array.dtype.str};".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def model_id(tensors: Mapping[str, np.ndarray], arch: str) -> str:
    return f"{arch}-{weights_sha256(tensors)[:12]}"


def write(path: Path, checkpoint: Checkpoint) -> str:
    """Write `checkpoint` to `path` atomically; returns its model id."""
    header = {
        "mnist_codec_checkpoint": FORMAT,
        "arch": checkpoint.arch,
        "latent_format": checkpoint.latent_format,
        "model_args": json.dumps(checkpoint.model_args),
        # Through JSON, so only plain types reach the file.
        "metadata": json.dumps(checkpoint.metadata, default=str),
        "model_id": checkpoint.model_id,
    }
    if checkpoint.numpy_program is not None:
        header["numpy_program"] = json.dumps(checkpoint.numpy_program)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in checkpoint.tensors.items()}, tmp, metadata=header)
    tmp.chmod(0o644)  # safetensors creates it 0600; a container's non-root user must read it
    tmp.replace(path)
    return checkpoint.model_id


def read(path: Path) -> Checkpoint:
    """Read and check a checkpoint; any problem is a one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.suffix == ".pt":
        raise CheckpointError(
            f"checkpoint {path} is a torch pickle (format 1); convert it once: python -m app.codec.convert {path}"
        )
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118  (safe_open is no dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {one_line(exc)}") from exc
    if header.get("mnist_codec_checkpoint") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an mnist-codec checkpoint (format {FORMAT})")
    try:
        program = json.loads(header["numpy_program"]) if "numpy_program" in header else None
        checkpoint = Checkpoint(
            arch=header["arch"],
            latent_format=header["latent_format"],
            model_args=json.loads(header["model_args"]),
            tensors=tensors,
            metadata=json.loads(header.get("metadata") or "{}"),
            numpy_program=program,
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a damaged header: {one_line(exc)}") from exc
    # safetensors keeps no checksum: the id doubles as one, and says which weights made a latent.
    if header.get("model_id") != checkpoint.model_id:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its weights hash to {checkpoint.model_id}, "
            f"its header says {header.get('model_id')}"
        )
    return checkpoint


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def describe(checkpoint: Checkpoint) -> str:
    runs = "numpy on the CPU, torch on CUDA" if checkpoint.numpy_program else "torch (no numpy program)"
    params = sum(int(a.size) for a in checkpoint.tensors.values())
    when = checkpoint.trained_at or "unknown"
    return (
        f"{checkpoint.model_id}: architecture {checkpoint.arch} {json.dumps(checkpoint.model_args)}, "
        f"latent format {checkpoint.latent_format}, {params:,} numbers in {len(checkpoint.tensors)} tensors, "
        f"runs in {runs}, trained {when}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.codec.checkpoint", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="what a checkpoint holds (python -m app.codec.convert converts a .pt)")
    show.add_argument("checkpoints", nargs="+", type=Path)
    stamp_cmd = commands.add_parser("stamp", help="set trained_at in a checkpoint's header (model id kept)")
    stamp_cmd.add_argument("checkpoints", nargs="+", type=Path)
    stamp_cmd.add_argument(
        "--trained-at", required=True, help="when the weights were made, ISO-8601 (e.g. 2026-11-25T15:53:38Z)"
    )
    args = parser.parse_args(argv)
    if args.command == "stamp":
        return each(
            args.checkpoints,
            lambda path: (
                f"{path}: {stamp(path, args.trained_at)} trained at {utc_iso(args.trained_at)} (model id unchanged)"
            ),
        )
    return each(args.checkpoints, lambda path: f"{path}: {describe(read(path))}")


def each(paths: list[Path], action: Callable[[Path], str]) -> int:
    """A command line's work: print `action`'s line for each path; the first CheckpointError ends it
    in one line on stderr, exit status 1."""
    try:
        for path in paths:
            print(action(path))
    except (CheckpointError, ValueError) as exc:  # ValueError: a --trained-at that is no ISO-8601 date
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

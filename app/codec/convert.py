"""Convert format-1 torch checkpoints (`.pt`) to safetensors: `python -m app.codec.convert FILE.pt ...`.

Needs torch (the pickle is torch's) and the architecture registry (`app.codec.model`), so it lives
apart from `app.codec.checkpoint`, which reads and writes checkpoints without either. The network is
rebuilt from the registry, so the numpy program is derived from the real modules; the model id must
come out unchanged, else nothing is written.
"""

import argparse
import sys
from pathlib import Path

import torch

from app.codec import checkpoint
from app.codec.model import LoadedModel, checkpoint_of, tensors_of, torch_model
from app.errors import CheckpointError


def load_torch_checkpoint(path: Path) -> LoadedModel:
    """A format-1 checkpoint (torch pickle, `.pt`) as a torch module; any problem is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"checkpoint {path} is unreadable: {checkpoint.one_line(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != 1:
        raise CheckpointError(f"checkpoint {path} is not an mnist-codec torch checkpoint (format 1)")
    arch = str(ckpt.get("arch"))
    try:
        tensors, model_args = tensors_of(ckpt["state_dict"]), dict(ckpt["model_args"])
    except Exception as exc:
        message = f"checkpoint {path} does not fit the {arch} architecture: {checkpoint.one_line(exc)}"
        raise CheckpointError(message) from exc
    stored = checkpoint.Checkpoint(arch, "", model_args, tensors, dict(ckpt.get("metadata") or {}))
    return LoadedModel(torch_model(stored, path), stored.model_id, arch, stored.metadata)


def convert(source: Path, target: Path | None = None) -> tuple[Path, str]:
    """A format-1 torch checkpoint of any registered architecture -> `.safetensors` beside it (or `target`)."""
    loaded = load_torch_checkpoint(source)
    converted = checkpoint_of(loaded.model, loaded.metadata)
    if converted.model_id != loaded.model_id:
        raise CheckpointError(f"converting {source} changed its model id: {loaded.model_id} -> {converted.model_id}")
    target = target or source.with_suffix(checkpoint.SUFFIX)
    checkpoint.write(target, converted)
    if checkpoint.read(target).model_id != loaded.model_id:  # read back: what the service will see
        raise CheckpointError(f"{target} does not read back as {loaded.model_id}")
    return target, loaded.model_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.codec.convert", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="torch .pt checkpoints (format 1)")
    parser.add_argument("-o", "--output", type=Path, help="output file (one input only); default: the input's name")
    args = parser.parse_args(argv)
    if args.output and len(args.checkpoints) > 1:
        parser.error("--output takes one input checkpoint")

    def one(path: Path) -> str:
        target, mid = convert(path, args.output)
        return f"{path} -> {target}: {mid} (model id unchanged)"

    return checkpoint.each(args.checkpoints, one)


if __name__ == "__main__":
    sys.exit(main())

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
from app.codec.model import ARCHITECTURES, LoadedModel, build_model, checkpoint_of, model_id
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
    arch = ckpt.get("arch")
    if arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise CheckpointError(f"checkpoint {path} has architecture {arch!r}, expected one of: {known}")
    try:
        model = build_model(arch, dict(ckpt["model_args"]))
        model.load_state_dict(ckpt["state_dict"], strict=True)
        model.wire_format()  # "24xac": the frequency tables are sound and every digit can fit
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit the {arch} architecture: {checkpoint.one_line(exc)}"
        ) from exc
    model.eval().requires_grad_(False)
    return LoadedModel(
        model=model,
        model_id=model_id(ckpt["state_dict"], arch),
        arch=arch,
        metadata=dict(ckpt.get("metadata") or {}),
    )


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
    try:
        for path in args.checkpoints:
            target, mid = convert(path, args.output)
            print(f"{path} -> {target}: {mid} (model id unchanged)")
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

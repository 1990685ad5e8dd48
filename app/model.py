"""The autoencoder and its checkpoint.

The reference design: encoder 784-128-64-12-6 with ReLU between layers, decoder
the mirror image ending in a Sigmoid, so outputs lie in (0, 1) like the pixels.

A checkpoint is a plain dict that `torch.load(..., weights_only=True)` accepts:

    {"format": 1, "arch": "mlp6", "model_args": {...}, "state_dict": {...},
     "metadata": {... training config, data checksums, metrics ...}}

`model_args` rebuilds the exact architecture; the model id is the architecture
name plus the first 12 hex digits of a SHA-256 over the weights, so a stored
latent can be tied to the weights that made it.
"""

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.errors import CheckpointError

ARCH = "mlp6"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class ModelArgs:
    in_dim: int = 784
    hidden: tuple[int, ...] = (128, 64, 12)
    latent_dim: int = 6


def _mlp(sizes: list[int], last: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    layers.append(last)
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    def __init__(self, args: ModelArgs = ModelArgs()) -> None:
        super().__init__()
        self.args = args
        widths = [args.in_dim, *args.hidden, args.latent_dim]
        self.encoder = _mlp(widths, nn.Identity())
        self.decoder = _mlp(widths[::-1], nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 784) pixels in [0, 1] -> (N, latent_dim) latents."""
        z: torch.Tensor = self.encoder(x)
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) latents -> (N, 784) pixels in (0, 1)."""
        y: torch.Tensor = self.decoder(z)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, shape, dtype and little-endian bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        array = state_dict[name].detach().to("cpu").contiguous().numpy()
        digest.update(f"{name}:{array.shape}:{array.dtype.str};".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def model_id(state_dict: dict[str, torch.Tensor], arch: str = ARCH) -> str:
    return f"{arch}-{weights_sha256(state_dict)[:12]}"


@dataclass
class LoadedModel:
    model: Autoencoder
    model_id: str
    arch: str
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: Path, model: Autoencoder, metadata: dict[str, Any]) -> str:
    """Write `model` to `path` atomically; returns its model id."""
    state_dict = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "arch": ARCH,
        "model_args": {**asdict(model.args), "hidden": list(model.args.hidden)},
        "state_dict": state_dict,
        # Through JSON, so only plain types reach the file and weights_only loading accepts it.
        "metadata": json.loads(json.dumps(metadata, default=str)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return model_id(state_dict)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load and check a checkpoint; any problem is a one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"checkpoint {path} is unreadable: {_one_line(exc)}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an mnist-codec checkpoint (format 1)")
    if checkpoint.get("arch") != ARCH:
        raise CheckpointError(f"checkpoint {path} has architecture {checkpoint.get('arch')!r}, expected {ARCH!r}")
    try:
        raw_args = dict(checkpoint["model_args"])
        args = ModelArgs(**{**raw_args, "hidden": tuple(raw_args["hidden"])})
        model = Autoencoder(args)
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the {ARCH} architecture: {_one_line(exc)}") from exc
    model.eval().requires_grad_(False)
    return LoadedModel(
        model=model.to(device),
        model_id=model_id(checkpoint["state_dict"]),
        arch=ARCH,
        metadata=dict(checkpoint.get("metadata") or {}),
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."

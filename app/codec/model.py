"""The autoencoders, their registry, and checkpoints.

Two architectures, each with its own latent format (`app.codec.latent`):

- `mlp6`, the reference design: encoder 784-128-64-12-6 with ReLU between layers,
  decoder the mirror image ending in a Sigmoid, so outputs lie in (0, 1) like the
  pixels. Its six latents are float32 ("6xf32le").
- `mlp24`: encoder 784-H1-H2-24 ending in a Sigmoid, decoder the mirror image.
  Its 24 latents are bounded to (0, 1) and stored as one byte each ("24xu8").
  In training, uniform noise of one quantisation step stands in for the rounding
  (it has a gradient, rounding has none); in eval mode `forward` rounds exactly
  as the wire format does, so what is measured is what is served.

A checkpoint is a plain dict that `torch.load(..., weights_only=True)` accepts:

    {"format": 1, "arch": "mlp6", "model_args": {...}, "state_dict": {...},
     "metadata": {... training config, data checksums, metrics ...}}

`arch` picks the class from `ARCHITECTURES` and `model_args` (its Args dataclass
as a dict, tuples as lists) rebuilds the exact network. The model id is the
architecture name plus the first 12 hex digits of a SHA-256 over the weights, so
a stored latent can be tied to the weights that made it.
"""

import dataclasses
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from app.errors import CheckpointError

ARCH = "mlp6"  # the reference architecture
CHECKPOINT_FORMAT = 1


def _mlp(sizes: list[int], last: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    layers.append(last)
    return nn.Sequential(*layers)


class CodecModel(nn.Module):
    """What the codec and the trainer need from any architecture."""

    arch: ClassVar[str]
    latent_format: ClassVar[str]  # a name in app.codec.latent.FORMATS
    args: Any  # the architecture's Args dataclass
    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 784) pixels in [0, 1] -> (N, dims) latents, before any quantisation."""
        z: torch.Tensor = self.encoder(x)
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, dims) latents, as the wire format gives them back -> (N, 784) pixels in (0, 1)."""
        y: torch.Tensor = self.decoder(z)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@dataclass(frozen=True)
class ModelArgs:
    in_dim: int = 784
    hidden: tuple[int, ...] = (128, 64, 12)
    latent_dim: int = 6


class Autoencoder(CodecModel):
    """The reference `mlp6` network; its latents go on the wire as float32."""

    arch = "mlp6"
    latent_format = "6xf32le"

    def __init__(self, args: ModelArgs = ModelArgs()) -> None:
        super().__init__()
        self.args = args
        widths = [args.in_dim, *args.hidden, args.latent_dim]
        self.encoder = _mlp(widths, nn.Identity())
        self.decoder = _mlp(widths[::-1], nn.Sigmoid())


@dataclass(frozen=True)
class QuantizedArgs:
    in_dim: int = 784
    hidden: tuple[int, ...] = (512, 256)
    latent_dim: int = 24
    levels: int = 255  # quantisation steps on [0, 1]: 8 bits


class QuantizedAutoencoder(CodecModel):
    """`mlp24`: sigmoid-bounded latents, trained with quantisation noise, served rounded to bytes."""

    arch = "mlp24"
    latent_format = "24xu8"

    def __init__(self, args: QuantizedArgs = QuantizedArgs()) -> None:
        super().__init__()
        self.args = args
        widths = [args.in_dim, *args.hidden, args.latent_dim]
        self.encoder = _mlp(widths, nn.Sigmoid())
        self.decoder = _mlp(widths[::-1], nn.Sigmoid())

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Noise of one step while training, the wire format's exact rounding otherwise."""
        steps: int = self.args.levels
        if self.training:
            noisy: torch.Tensor = z + (torch.rand_like(z) - 0.5) / steps
            return noisy
        rounded: torch.Tensor = torch.round(z * steps) / steps
        return rounded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantize(self.encode(x)))


ARCHITECTURES: dict[str, tuple[type[CodecModel], type[Any]]] = {
    Autoencoder.arch: (Autoencoder, ModelArgs),
    QuantizedAutoencoder.arch: (QuantizedAutoencoder, QuantizedArgs),
}


def build_model(arch: str, model_args: dict[str, Any] | None = None) -> CodecModel:
    """A fresh network of architecture `arch`; `model_args` overrides its defaults (lists become tuples)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    cls, args_cls = ARCHITECTURES[arch]
    raw = dict(model_args or {})
    for f in dataclasses.fields(args_cls):
        if f.name in raw and isinstance(raw[f.name], list):
            raw[f.name] = tuple(raw[f.name])
    model: CodecModel = cls(args_cls(**raw))
    return model


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
    model: CodecModel
    model_id: str
    arch: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _args_as_dict(args: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(args).items()}


def save_checkpoint(path: Path, model: CodecModel, metadata: dict[str, Any]) -> str:
    """Write `model` to `path` atomically; returns its model id."""
    state_dict = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "arch": model.arch,
        "model_args": _args_as_dict(model.args),
        "state_dict": state_dict,
        # Through JSON, so only plain types reach the file and weights_only loading accepts it.
        "metadata": json.loads(json.dumps(metadata, default=str)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return model_id(state_dict, model.arch)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load and check a checkpoint of any registered architecture; any problem is a one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"checkpoint {path} is unreadable: {_one_line(exc)}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an mnist-codec checkpoint (format 1)")
    arch = checkpoint.get("arch")
    if arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise CheckpointError(f"checkpoint {path} has architecture {arch!r}, expected one of: {known}")
    try:
        model = build_model(arch, dict(checkpoint["model_args"]))
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the {arch} architecture: {_one_line(exc)}") from exc
    model.eval().requires_grad_(False)
    return LoadedModel(
        model=model.to(device),
        model_id=model_id(checkpoint["state_dict"], arch),
        arch=arch,
        metadata=dict(checkpoint.get("metadata") or {}),
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."

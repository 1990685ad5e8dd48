"""The autoencoders, their registry, and checkpoints.

Three architectures, each with its own latent format (`app.codec.latent`):

- `mlp6`, the reference design: encoder 784-128-64-12-6 with ReLU between layers,
  decoder the mirror image ending in a Sigmoid, so outputs lie in (0, 1) like the
  pixels. Its six latents are float32 ("6xf32le").
- `mlp24`: encoder 784-H1-H2-24 ending in a Sigmoid, decoder the mirror image.
  Its 24 latents are bounded to (0, 1) and stored as one byte each ("24xu8").
  In training, uniform noise of one quantisation step stands in for the rounding
  (it has a gradient, rounding has none); in eval mode `forward` rounds exactly
  as the wire format does, so what is measured is what is served.
- `ec64`: encoder 784-512-256-64 with GELU (tanh form) between layers, decoder
  the mirror image ending in a Sigmoid. Its 64 latents are rounded to integers
  and arithmetic-coded under a learned prior into at most 192 bits ("24xac");
  the prior is frozen into integer frequency tables stored with the weights.

A checkpoint is a safetensors file with a JSON header (`app.codec.checkpoint`, which
reads and writes it without torch): the state dict, the architecture's name and
`model_args` (its Args dataclass as a dict, tuples as lists), which rebuild the
exact network, and the training metadata. The model id is the architecture name
plus the first 12 hex digits of a SHA-256 over the weights, so a stored latent
can be tied to the weights that made it. The format-1 torch pickles (`.pt`) are
read only to convert them (`app.codec.convert`).
"""

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from app.codec import arith, checkpoint, latent
from app.errors import CheckpointError

ARCH = "mlp6"  # the reference architecture

Quantisation = Literal["noise", "straight-through", "round"]


class Reconstruction(NamedTuple):
    """What `forward` gives: the pixels and the latents they were decoded from (for a rate term)."""

    x_hat: torch.Tensor  # (N, 784) in (0, 1)
    q: torch.Tensor  # (N, dims), after the quantisation


def _mlp(sizes: list[int], last: nn.Module, activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
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

    def quantize(self, z: torch.Tensor, mode: Quantisation, generator: torch.Generator | None = None) -> torch.Tensor:
        """The latents as the decoder sees them: `mode` "round" is the wire format's rounding (what is served),
        "noise" and "straight-through" its stand-ins in training (rounding has no gradient). `generator`
        draws the noise (None: torch's global one). The base is `mlp6`'s: float32 on the wire, no rounding."""
        return z

    def forward(
        self, x: torch.Tensor, mode: Quantisation | None = None, generator: torch.Generator | None = None
    ) -> Reconstruction:
        """(N, 784) pixels -> their reconstruction and the latents decoded; by default noise while
        training and the wire's rounding in eval mode, so what is measured is what is served."""
        q = self.quantize(self.encode(x), mode or ("noise" if self.training else "round"), generator)
        return Reconstruction(self.decode(q), q)

    def wire_format(self) -> latent.LatentFormat:
        """The latent format this model's bytes follow; ValueError when the checkpoint cannot make it."""
        return latent.get_format(self.latent_format)


def uniform_noise(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform in [0, 1), z's shape; the same draws as `torch.rand_like(z)` when `generator` is None."""
    return torch.rand(z.shape, generator=generator, dtype=z.dtype, device=z.device)


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

    def quantize(self, z: torch.Tensor, mode: Quantisation, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise of one step, or "24xu8"'s rounding to 1/levels (halves to even, as numpy's on the wire)."""
        steps: int = self.args.levels
        rounded: torch.Tensor = torch.round(z * steps) / steps
        if mode == "noise":
            noisy: torch.Tensor = z + (uniform_noise(z, generator) - 0.5) / steps
            return noisy
        return rounded if mode == "round" else z + (rounded - z).detach()


def _gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")  # numpy computes the same formula in float64 (app.codec.engine)


@dataclass(frozen=True)
class EntropyCodedArgs:
    in_dim: int = 784
    hidden: tuple[int, ...] = (512, 256)
    latent_dim: int = 64
    mixtures: int = 3  # logistic components in each latent's prior
    code_bytes: int = 24  # the fixed code size; only 24 is served, others draw the rate-distortion curve
    table_width: int = 1  # symbols of the widest frequency table (`build_tables` sets it)


TABLE_TAIL = 2.0**-24  # prior mass beyond either end of a frequency table, folded into its end symbols
MAX_TABLE_SYMBOLS = 1024
MIN_SCALE = 0.05  # the smallest logistic scale the prior may use


class EntropyCodedAutoencoder(CodecModel):
    """`ec64`: 64 integer latents under a learned prior, arithmetic-coded into 24 bytes ("24xac").

    The encoder gives 64 real values; the wire carries them rounded to integers. Each latent
    has its own prior, a mixture of `mixtures` logistic distributions discretised to the
    integers (`likelihood`); training charges a digit the code length under it (`bits`).
    After training, `build_tables` freezes the prior into integer frequency tables (buffers
    `table_offsets` and `table_freqs`, so they are part of the weights and of the model id):
    serving codes with those integers alone.
    """

    arch = "ec64"
    latent_format = "24xac"

    def __init__(self, args: EntropyCodedArgs = EntropyCodedArgs()) -> None:
        super().__init__()
        self.args = args
        widths = [args.in_dim, *args.hidden, args.latent_dim]
        self.encoder = _mlp(widths, nn.Identity(), _gelu)
        self.decoder = _mlp(widths[::-1], nn.Sigmoid(), _gelu)
        d, k = args.latent_dim, args.mixtures
        self.prior_logits = nn.Parameter(torch.zeros(d, k))
        self.prior_means = nn.Parameter(torch.linspace(-1, 1, k).repeat(d, 1))
        self.prior_log_scales = nn.Parameter(torch.zeros(d, k))
        self.table_offsets: torch.Tensor
        self.table_freqs: torch.Tensor
        self.register_buffer("table_offsets", torch.zeros(d, dtype=torch.int64))
        self.register_buffer("table_freqs", torch.zeros(d, args.table_width, dtype=torch.int64))

    def likelihood(self, q: torch.Tensor) -> torch.Tensor:
        """(N, d) latents (integers, or integers plus noise) -> the prior's mass on [q - 1/2, q + 1/2]."""
        qe = q.unsqueeze(-1)
        scale = torch.exp(self.prior_log_scales).clamp_min(MIN_SCALE)
        upper = torch.sigmoid((qe + 0.5 - self.prior_means) / scale)
        lower = torch.sigmoid((qe - 0.5 - self.prior_means) / scale)
        weights = torch.softmax(self.prior_logits, dim=-1)
        mass: torch.Tensor = ((upper - lower) * weights).sum(-1).clamp_min(1e-9)
        return mass

    def bits(self, q: torch.Tensor) -> torch.Tensor:
        """(N, d) latents -> (N,) their ideal code length under the prior, in bits."""
        total: torch.Tensor = -torch.log2(self.likelihood(q)).sum(dim=1)
        return total

    def quantize(self, z: torch.Tensor, mode: Quantisation, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform noise in [-1/2, 1/2), or rounding to the integers: served, or straight-through (the decoder
        sees the integers, the gradient passes). "round" leaves out the coder's rate control."""
        if mode == "noise":
            noisy: torch.Tensor = z + uniform_noise(z, generator) - 0.5
            return noisy
        rounded = torch.round(z)
        return rounded if mode == "round" else z + (rounded - z).detach()

    @torch.no_grad()
    def build_tables(self) -> None:
        """Freeze the prior into integer frequency tables, computed in float64 (`arith.quantise`).

        Latent i's table covers the integers from the first whose upper edge (k + 1/2) has prior
        mass >= TABLE_TAIL below it to the first with mass < TABLE_TAIL above it; the mass
        beyond either end is folded into the end symbols.
        """
        weights = torch.softmax(self.prior_logits.detach().double().cpu(), dim=-1)
        means = self.prior_means.detach().double().cpu()
        scales = torch.exp(self.prior_log_scales.detach().double().cpu()).clamp_min(MIN_SCALE)
        offsets, tables = [], []
        for i in range(self.args.latent_dim):
            lo = math.floor(float((means[i] - 40 * scales[i]).min()))
            hi = math.ceil(float((means[i] + 40 * scales[i]).max()))
            grid = torch.arange(lo, hi + 1, dtype=torch.float64)
            edges = (weights[i] * torch.sigmoid((grid.unsqueeze(-1) + 0.5 - means[i]) / scales[i])).sum(-1)
            first = int(torch.nonzero(edges >= TABLE_TAIL)[0])
            beyond = torch.nonzero(edges >= 1 - TABLE_TAIL)
            last = int(beyond[0]) if len(beyond) else len(grid) - 1
            last = max(first, last)
            if last - first + 1 > MAX_TABLE_SYMBOLS:
                raise ValueError(f"latent {i}: its prior needs {last - first + 1} symbols, over {MAX_TABLE_SYMBOLS}")
            cumulative = torch.cat(
                [torch.zeros(1, dtype=torch.float64), edges[first:last], torch.ones(1, dtype=torch.float64)]
            )
            offsets.append(lo + first)
            tables.append(arith.quantise(torch.diff(cumulative).numpy()))
        width = max(len(t) for t in tables)
        freqs = torch.zeros(self.args.latent_dim, width, dtype=torch.int64)
        for i, table in enumerate(tables):
            freqs[i, : len(table)] = torch.tensor(table, dtype=torch.int64)
        self.args = dataclasses.replace(self.args, table_width=width)
        self.table_offsets = torch.tensor(offsets, dtype=torch.int64)
        self.table_freqs = freqs

    def frequency_tables(self) -> arith.FrequencyTables:
        """The coder's tables; ValueError when they were never built or are damaged."""
        return arith.FrequencyTables.from_arrays(self.table_offsets.cpu().numpy(), self.table_freqs.cpu().numpy())

    def wire_format(self) -> latent.LatentFormat:
        # Only the two table buffers: the same function builds the format from a checkpoint's tensors.
        tables = {"table_offsets": self.table_offsets.cpu().numpy(), "table_freqs": self.table_freqs.cpu().numpy()}
        return latent.format_for(self.latent_format, tables, _args_as_dict(self.args))


ARCHITECTURES: dict[str, tuple[type[CodecModel], type[Any]]] = {
    Autoencoder.arch: (Autoencoder, ModelArgs),
    QuantizedAutoencoder.arch: (QuantizedAutoencoder, QuantizedArgs),
    EntropyCodedAutoencoder.arch: (EntropyCodedAutoencoder, EntropyCodedArgs),
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


def tensors_of(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().to("cpu").contiguous().numpy() for k, v in state_dict.items()}


def model_id(state_dict: dict[str, torch.Tensor], arch: str = ARCH) -> str:
    return checkpoint.model_id(tensors_of(state_dict), arch)


@dataclass
class LoadedModel:
    model: CodecModel
    model_id: str
    arch: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _args_as_dict(args: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(args).items()}


# The element-wise modules numpy can run (app.codec.engine has the same names).
_NUMPY_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Identity: "identity"}


def numpy_program(model: nn.Module) -> checkpoint.Program | None:
    """The encoder and decoder as steps numpy can run (see app.codec.checkpoint); None if either is anything else."""
    program: checkpoint.Program = {}
    for part in ("encoder", "decoder"):
        stack = getattr(model, part, None)
        if not isinstance(stack, nn.Sequential):
            return None
        steps: list[list[str]] = []
        for name, module in stack.named_children():
            if isinstance(module, nn.Linear) and module.bias is not None:
                steps.append(["linear", f"{part}.{name}"])
            elif type(module) in _NUMPY_ACTIVATIONS:
                steps.append([_NUMPY_ACTIVATIONS[type(module)]])
            elif isinstance(module, nn.GELU) and module.approximate == "tanh":
                steps.append(["gelu_tanh"])  # the same formula, in float64 (app.codec.engine)
            else:
                return None
        program[part] = steps
    return program


def checkpoint_of(model: CodecModel, metadata: dict[str, Any]) -> checkpoint.Checkpoint:
    return checkpoint.Checkpoint(
        arch=model.arch,
        latent_format=model.latent_format,
        model_args=_args_as_dict(model.args),
        tensors=tensors_of(model.state_dict()),
        # Through JSON, so only plain types reach the file.
        metadata=json.loads(json.dumps(metadata, default=str)),
        numpy_program=numpy_program(model),
    )


def save_checkpoint(path: Path, model: CodecModel, metadata: dict[str, Any]) -> str:
    """Write `model` to `path` (safetensors, app.codec.checkpoint) atomically; returns its model id."""
    return checkpoint.write(path, checkpoint_of(model, metadata))


def torch_model(ckpt: checkpoint.Checkpoint, source: Path | str = "checkpoint") -> CodecModel:
    """The torch module of a checkpoint, in eval mode; CheckpointError if the weights do not fit the architecture."""
    if ckpt.arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise CheckpointError(f"checkpoint {source} has architecture {ckpt.arch!r}, expected one of: {known}")
    try:
        model = build_model(ckpt.arch, dict(ckpt.model_args))
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ckpt.tensors.items()}, strict=True)
        model.wire_format()  # "24xac": the frequency tables are sound and every digit can fit
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {source} does not fit the {ckpt.arch} architecture: {_one_line(exc)}"
        ) from exc
    model.eval().requires_grad_(False)
    return model


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A checkpoint file as a torch module (training, evaluation, the CUDA engine); any problem is a CheckpointError."""
    ckpt = checkpoint.read(path)
    model = torch_model(ckpt, path)
    return LoadedModel(model=model.to(device), model_id=ckpt.model_id, arch=ckpt.arch, metadata=ckpt.metadata)


_one_line = checkpoint.one_line

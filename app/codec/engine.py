"""Running a trained network for the service: float64 arithmetic, batch-size independent.

Training runs in float32 torch. Serving runs the same weights in float64 and
rounds the result to float32: summation order then no longer shows in the
result (a different order moves a float64 sum by ~1e-16, far below what float32
keeps), so a digit gives byte-identical latents whether it is computed alone,
in a micro-batch or in a batch request, on any BLAS. The float32 values differ
from the float32 torch model's by rounding only (~1e-5 here).

Two engines, chosen by `make_engine`:

- `NumpyMLP`, on the CPU, for networks made only of Linear layers and
  element-wise activations (the checkpoint's `numpy_program`): a handful of numpy
  calls, none of torch's per-op dispatch (a batch-1 encode costs about as much as
  parsing the PNG), and no torch at all: a CPU server does not import it.
- `TorchEngine`, for everything else and for CUDA: the torch module in float64.
  torch is imported only when one is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from app.codec.checkpoint import Checkpoint
from app.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

Activation = Callable[[np.ndarray], np.ndarray]


class Engine(Protocol):
    def forward_encoder(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 784) uint8 digits -> (N, dims) float32 latent values."""
        ...

    def forward_decoder(self, z: np.ndarray) -> np.ndarray:
        """(N, dims) float32 latent values -> (N, 784) uint8 digits."""
        ...


def to_pixel_bytes(y: np.ndarray) -> np.ndarray:
    """Network output -> pixel bytes: round(clamp(y, 0, 1) * 255), halves to even. Overwrites `y`."""
    np.clip(y, 0.0, 1.0, out=y)
    y *= 255.0
    np.rint(y, out=y)
    pixels: np.ndarray = y.astype(np.uint8)
    return pixels


def _relu(h: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(h, 0.0, out=h)
    return out


def _sigmoid(h: np.ndarray) -> np.ndarray:
    # In place: 1 / (1 + exp(-h)). exp overflows to inf harmlessly for h < -709: 1 / inf = 0.
    with np.errstate(over="ignore"):
        np.negative(h, out=h)
        np.exp(h, out=h)
        h += 1.0
        out: np.ndarray = np.reciprocal(h, out=h)
    return out


def _identity(h: np.ndarray) -> np.ndarray:
    return h


_GELU_C = float(np.sqrt(2.0 / np.pi))


def _gelu_tanh(h: np.ndarray) -> np.ndarray:
    # torch's GELU(approximate="tanh"): 0.5 h (1 + tanh(sqrt(2 / pi) (h + 0.044715 h^3))), every step float64.
    t: np.ndarray = h * h
    t *= 0.044715
    t += 1.0
    t *= h
    t *= _GELU_C
    np.tanh(t, out=t)
    t += 1.0
    t *= h
    t *= 0.5
    return t


# By the names app.codec.checkpoint's numpy_program uses.
_ACTIVATIONS: dict[str, Activation] = {
    "relu": _relu,
    "sigmoid": _sigmoid,
    "identity": _identity,
    "gelu_tanh": _gelu_tanh,
}
Layer = tuple[np.ndarray, np.ndarray] | Activation


def numpy_layers(steps: list[list[str]], tensors: dict[str, np.ndarray]) -> list[Layer]:
    """A numpy program's steps as float64 numpy steps; ValueError for a step or tensor that is not there."""
    layers: list[Layer] = []
    for step in steps:
        if step[0] == "linear":
            weight, bias = tensors[f"{step[1]}.weight"], tensors[f"{step[1]}.bias"]
            layers.append((weight.astype(np.float64).T.copy(), bias.astype(np.float64)))
        elif step[0] in _ACTIVATIONS:
            layers.append(_ACTIVATIONS[step[0]])
        else:
            raise ValueError(f"unknown step {step[0]!r}")
    return layers


# --------------------------------------------------------------------------- the decoder's gradient (search)

Snap = Callable[[np.ndarray], np.ndarray]  # applied to every matrix product's left operand; see app.codec.search
Trace = list[tuple[np.ndarray, ...]]  # what each activation's derivative needs, in order


def _same(h: np.ndarray) -> np.ndarray:
    return h


_GELU_A = 0.044715


def _traced_relu(h: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    out: np.ndarray = np.maximum(h, 0.0)
    return out, (out,)


def _traced_sigmoid(h: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    out = _sigmoid(h.copy())
    return out, (out,)


def _traced_identity(h: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    return h, ()


def _traced_gelu_tanh(h: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    # The same steps as _gelu_tanh (so the same float64 bits), keeping tanh(u) for the derivative.
    h2 = h * h
    u = h2 * _GELU_A
    u += 1.0
    u *= h
    u *= _GELU_C
    t = np.tanh(u)
    out = t + 1.0
    out *= h
    out *= 0.5
    return out, (h, h2, t)


def _d_relu(aux: tuple[np.ndarray, ...], g: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.where(aux[0] > 0.0, g, 0.0)
    return out


def _d_sigmoid(aux: tuple[np.ndarray, ...], g: np.ndarray) -> np.ndarray:
    s = aux[0]
    out: np.ndarray = g * s * (1.0 - s)
    return out


def _d_identity(aux: tuple[np.ndarray, ...], g: np.ndarray) -> np.ndarray:
    return g


def _d_gelu_tanh(aux: tuple[np.ndarray, ...], g: np.ndarray) -> np.ndarray:
    # y = h/2 (1 + t), t = tanh(c (h + a h^3)): dy/dh = (1 + t)/2 + h/2 (1 - t^2) c (1 + 3 a h^2)
    h, h2, t = aux
    slope = h2 * (3 * _GELU_A * _GELU_C)
    slope += _GELU_C
    slope *= 1.0 - t * t
    slope *= h
    slope += 1.0 + t
    slope *= 0.5
    out: np.ndarray = g * slope
    return out


Derivative = Callable[[tuple[np.ndarray, ...], np.ndarray], np.ndarray]
Traced = Callable[[np.ndarray], tuple[np.ndarray, tuple[np.ndarray, ...]]]
_TRACED: dict[Activation, tuple[Traced, Derivative]] = {
    _relu: (_traced_relu, _d_relu),
    _sigmoid: (_traced_sigmoid, _d_sigmoid),
    _identity: (_traced_identity, _d_identity),
    _gelu_tanh: (_traced_gelu_tanh, _d_gelu_tanh),
}


def forward(layers: list[Layer], h: np.ndarray, snap: Snap = _same) -> np.ndarray:
    """The layers' output for `h` (float64), each product's left operand through `snap` first."""
    return _run(layers, h.astype(np.float64), snap)


def forward_trace(layers: list[Layer], h: np.ndarray, snap: Snap = _same) -> tuple[np.ndarray, Trace]:
    """`_run` that keeps what the backward pass needs of each activation."""
    trace: Trace = []
    for layer in layers:
        if isinstance(layer, tuple):
            h = snap(h) @ layer[0]
            h += layer[1]
        else:
            h, aux = _TRACED[layer][0](h)
            trace.append(aux)
    return h, trace


def backward(layers: list[Layer], trace: Trace, g: np.ndarray, snap: Snap = _same) -> np.ndarray:
    """The gradient with respect to the input of `forward_trace(layers, h)`, given `g`, the one of its output.

    Linear (h W + b): g W^T; ReLU: g where h > 0; sigmoid s: g s (1 - s); GELU (tanh form): its derivative.
    """
    index = len(trace)
    for layer in reversed(layers):
        if isinstance(layer, tuple):
            g = snap(g) @ layer[0].T
        else:
            index -= 1
            g = _TRACED[layer][1](trace[index], g)
    return g


def _run(layers: list[Layer], h: np.ndarray, snap: Snap = _same) -> np.ndarray:
    for layer in layers:
        if isinstance(layer, tuple):
            h = snap(h) @ layer[0]
            h += layer[1]
        else:
            h = layer(h)
    return h


class NumpyMLP:
    def __init__(self, encoder: list[Layer], decoder: list[Layer]) -> None:
        self.encoder = encoder
        self.decoder = decoder

    def forward_encoder(self, pixels: np.ndarray) -> np.ndarray:
        return _run(self.encoder, pixels.astype(np.float64) / 255.0).astype(np.float32)

    def forward_decoder(self, z: np.ndarray) -> np.ndarray:
        return to_pixel_bytes(_run(self.decoder, z.astype(np.float64)))


class TorchEngine:
    def __init__(self, model: nn.Module, device: str) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=torch.float64).eval()

    def forward_encoder(self, pixels: np.ndarray) -> np.ndarray:
        import torch  # a dict look-up once imported

        with torch.inference_mode():
            # A copy: torch refuses (warns about) the read-only arrays that PNG decoding and request bodies give.
            x = torch.from_numpy(np.array(pixels)).to(self.device, torch.float64) / 255.0
            z: torch.Tensor = self.model.encode(x)  # type: ignore[operator]
            return np.asarray(z.to(torch.float32).cpu().numpy())

    def forward_decoder(self, z: np.ndarray) -> np.ndarray:
        import torch  # a dict look-up once imported

        with torch.inference_mode():
            y: torch.Tensor = self.model.decode(  # type: ignore[operator]
                torch.from_numpy(np.array(z)).to(self.device, torch.float64)
            )
            return to_pixel_bytes(y.cpu().numpy())


def make_engine(checkpoint: Checkpoint, device: str) -> Engine:
    """numpy for a plain MLP on the CPU; torch otherwise (imported only then)."""
    program = checkpoint.numpy_program
    if device == "cpu" and program is not None:
        return NumpyMLP(
            numpy_layers(program["encoder"], checkpoint.tensors), numpy_layers(program["decoder"], checkpoint.tensors)
        )
    try:
        from app.codec.model import torch_model
    except ImportError as exc:  # the CPU install has no torch
        raise CheckpointError(
            f"the {checkpoint.arch} network has no numpy program, and serving it needs torch: "
            "pip install -c requirements.lock '.[torch]' (or the GPU image)"
        ) from exc
    return TorchEngine(torch_model(checkpoint), device)

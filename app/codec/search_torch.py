"""The search's decoder for the torch engine (CUDA): the decoder in float64, its gradient by autograd.

The matrix products are snapped exactly as in `app.codec.search.NumpyDecoder` (a custom
autograd function for the linear layers, whose backward snaps the incoming gradient too),
so their sums are exact on any device and a digit's bytes do not depend on its batch.
Imported only where a torch engine searches.
"""

from typing import Any

import numpy as np
import torch
from torch import nn

from app.codec.search import ROW_BITS, snap_matrix


def snap_rows(a: torch.Tensor, bits: int = ROW_BITS) -> torch.Tensor:
    """`app.codec.search.snap_rows` in torch."""
    exponent = torch.frexp(a.abs().amax(dim=-1, keepdim=True)).exponent
    return torch.ldexp(torch.round(torch.ldexp(a, bits - exponent)), exponent - bits)


class SnappedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return snap_rows(x) @ weight + bias

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        return snap_rows(g) @ weight.T, None, None


class TorchDecoder:
    def __init__(self, decoder: nn.Module, device: torch.device) -> None:
        self.device = device
        self.steps: list[tuple[torch.Tensor, torch.Tensor] | nn.Module] = []
        for module in decoder.children():
            if isinstance(module, nn.Linear):
                weight = snap_matrix(module.weight.detach().double().cpu().numpy().T.copy())
                bias = module.bias.detach().to(device, torch.float64)
                self.steps.append((torch.from_numpy(weight).to(device), bias))
            else:
                self.steps.append(module)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float64)).to(self.device)

    def _forward(self, h: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            h = SnappedLinear.apply(h, *step) if isinstance(step, tuple) else step(h)
        return h

    @staticmethod
    def _square_sum(d: torch.Tensor) -> torch.Tensor:
        e = d + (snap_rows(d) - d).detach()  # snapped, with the gradient of d: 2 e, as numpy computes it
        return (e * e).sum(dim=1).clamp_min(1e-300)

    def loss(self, z: np.ndarray, target: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            s = self._square_sum(self._forward(self._tensor(z)) - self._tensor(target))
        return np.asarray(s.cpu().numpy())

    def loss_grad(self, z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.enable_grad():
            h = self._tensor(z).requires_grad_(True)
            s = self._square_sum(self._forward(h) - self._tensor(target))
            (grad,) = torch.autograd.grad(torch.log(s).sum(), h)
        return np.asarray(s.detach().cpu().numpy()), np.asarray(grad.cpu().numpy())

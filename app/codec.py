"""The model at work: pixels to latent bytes and latent bytes to PNG.

Pixel mapping, the same as in training: byte b -> b / 255 on the way in; output
y -> round(clamp(y, 0, 1) * 255) on the way out.
"""

import numpy as np
import torch

from app import imaging, latent
from app.errors import StartupError
from app.model import LoadedModel


def pick_device(requested: str) -> torch.device:
    """'auto' is CUDA when there is a GPU, else the CPU; 'cuda' without one is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise StartupError("device 'cuda' was requested but CUDA is not available")
    return torch.device(requested)


class Codec:
    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.model = loaded.model.to(device)
        self.name = loaded.arch
        self.model_id = loaded.model_id
        self.metadata = loaded.metadata
        self.device = device

    @torch.inference_mode()
    def encode(self, pixels: np.ndarray) -> bytes:
        """A (28, 28) uint8 digit -> 24 latent bytes."""
        x = torch.tensor(pixels.reshape(1, -1), device=self.device)
        z = self.model.encode(x.to(torch.float32) / 255)
        return latent.pack(z.cpu().numpy())

    @torch.inference_mode()
    def decode(self, data: bytes) -> bytes:
        """24 latent bytes -> an 8-bit grayscale 28x28 PNG."""
        z = torch.from_numpy(latent.unpack(data)).reshape(1, -1).to(self.device)
        # 3e38 would overflow to inf - inf = NaN inside the network; see latent.CLAMP.
        y = self.model.decode(z.clamp(-latent.CLAMP, latent.CLAMP))
        pixels = (y.clamp(0, 1) * 255).round().to(torch.uint8)
        return imaging.write_digit(pixels.reshape(imaging.SIDE, imaging.SIDE).cpu().numpy())

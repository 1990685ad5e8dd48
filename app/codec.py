"""The model at work: pixels to latent bytes and latent bytes to PNG.

Pixel mapping, the same as in training: byte b -> b / 255 on the way in; output
y -> round(clamp(y, 0, 1) * 255) on the way out. The latent bytes are whatever
the model's format (`app.latent`) makes of the encoder's output: the service,
the evaluation and the tests all go through `encode` / `decode_pixels`.
"""

import numpy as np
import torch

from app import imaging, latent
from app.errors import LatentError, StartupError
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
        self.model_id = loaded.model_id
        self.arch = loaded.arch
        self.metadata = loaded.metadata
        self.device = device
        self.format = latent.get_format(loaded.model.latent_format)

    @torch.inference_mode()
    def encode(self, pixels: np.ndarray) -> bytes:
        """A (28, 28) uint8 digit -> its 24 latent bytes."""
        x = torch.tensor(pixels.reshape(1, -1), device=self.device)
        z = self.model.encode(x.to(torch.float32) / 255)
        return self.format.pack(z.cpu().numpy())

    @torch.inference_mode()
    def decode_pixels(self, data: bytes) -> np.ndarray:
        """Latent bytes -> a (28, 28) uint8 digit; LatentError when they do not follow the format."""
        z = torch.from_numpy(self.format.unpack(data)).reshape(1, -1).to(self.device)
        y = self.model.decode(z)
        if not torch.isfinite(y).all():  # e.g. 3e38 overflows to inf - inf in a layer
            raise LatentError("latent values are too large to decode")
        pixels = (y.clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels.reshape(imaging.SIDE, imaging.SIDE).cpu().numpy()

    def decode(self, data: bytes) -> bytes:
        """24 latent bytes -> an 8-bit grayscale 28x28 PNG."""
        return imaging.write_digit(self.decode_pixels(data))

"""The model at work: pixels to latent bytes and latent bytes to PNG.

Pixel mapping, the same as in training: byte b -> b / 255 on the way in; output
y -> round(clamp(y, 0, 1) * 255) on the way out. The arithmetic is the engine's
(`app.engine`): float64, so a digit's bytes do not depend on what it was batched
with.
"""

from collections.abc import Callable

import numpy as np
import torch

from app import imaging, latent
from app.batching import MicroBatcher
from app.engine import make_engine
from app.errors import StartupError
from app.model import LoadedModel

PIXELS = imaging.SIDE * imaging.SIDE


def pick_device(requested: str) -> torch.device:
    """'auto' is CUDA when there is a GPU, else the CPU; 'cuda' without one is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise StartupError("device 'cuda' was requested but CUDA is not available")
    return torch.device(requested)


class Codec:
    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.name = loaded.arch
        self.model_id = loaded.model_id
        self.metadata = loaded.metadata
        self.device = device
        self.engine = make_engine(loaded.model, device)
        self.encode_batcher: MicroBatcher | None = None
        self.decode_batcher: MicroBatcher | None = None

    def enable_batching(
        self, max_batch: int, max_wait_us: int, on_batch: Callable[[str, int], None] | None = None
    ) -> None:
        """Let concurrent single requests share model calls (app/batching.py); `on_batch(name, size)` counts them."""

        def told(name: str) -> Callable[[int], None] | None:
            return None if on_batch is None else lambda size: on_batch(name, size)

        self.encode_batcher = MicroBatcher(self.engine.encode, max_batch, max_wait_us, told("/encode"))
        self.decode_batcher = MicroBatcher(self._decode_rows, max_batch, max_wait_us, told("/decode"))

    def encode_many(self, pixels: np.ndarray) -> bytes:
        """(N, 28, 28) uint8 digits -> N x 24 latent bytes, end to end."""
        return latent.pack_many(self.engine.encode(pixels.reshape(len(pixels), PIXELS)))

    def encode(self, pixels: np.ndarray) -> bytes:
        """A (28, 28) uint8 digit -> 24 latent bytes."""
        return self.encode_many(pixels[np.newaxis])

    def _decode_rows(self, z: np.ndarray) -> np.ndarray:
        # 3e38 would overflow to inf - inf = NaN inside the network; see latent.CLAMP.
        return self.engine.decode(np.clip(z, -latent.CLAMP, latent.CLAMP))

    def decode_many(self, z: np.ndarray) -> np.ndarray:
        """(N, 6) finite latent values -> (N, 28, 28) uint8 digits."""
        return self._decode_rows(z).reshape(len(z), imaging.SIDE, imaging.SIDE)

    def decode_pixels(self, data: bytes) -> np.ndarray:
        """24 latent bytes -> a (28, 28) uint8 digit; LatentError when they break the format."""
        pixels: np.ndarray = self.decode_many(latent.unpack(data)[np.newaxis])[0]
        return pixels

    def decode(self, data: bytes) -> bytes:
        """24 latent bytes -> an 8-bit grayscale 28x28 PNG."""
        return imaging.write_digit(self.decode_pixels(data))

    async def encode_one(self, pixels: np.ndarray) -> bytes:
        """`encode`, through the micro-batcher when batching is on."""
        if self.encode_batcher is None:
            return self.encode(pixels)
        return latent.pack(await self.encode_batcher.submit(pixels.reshape(PIXELS)))

    async def decode_one(self, data: bytes) -> bytes:
        """`decode`, through the micro-batcher when batching is on."""
        if self.decode_batcher is None:
            return self.decode(data)
        row = await self.decode_batcher.submit(latent.unpack(data))
        return imaging.write_digit(row.reshape(imaging.SIDE, imaging.SIDE))

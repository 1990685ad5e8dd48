"""The models at work: pixels to latent bytes and latent bytes to PNG.

Pixel mapping, the same as in training: byte b -> b / 255 on the way in; output
y -> round(clamp(y, 0, 1) * 255) on the way out. The latent bytes are whatever
the model's format (`app.codec.latent`) makes of the encoder's output. The arithmetic
is the engine's (`app.codec.engine`): float64, so a digit's bytes do not depend on
what it was batched with. The service, the evaluation and the tests all go
through these methods.

A server holds several codecs (`Codecs`), one per model, by name: the model's
architecture name (mlp6, mlp24, ec64). A request picks one; none picked is the default.
"""

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from app.codec import checkpoint, imaging, latent
from app.codec.batching import MicroBatcher
from app.codec.engine import make_engine
from app.errors import CheckpointError, StartupError, UnknownModelError
from app.settings import Settings

PIXELS = imaging.SIDE * imaging.SIDE
# Present whenever an NVIDIA driver is loaded (in a container too, with the NVIDIA runtime):
# without it CUDA cannot be there, and 'auto' need not import torch (2 s, 500 MiB) to learn so.
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def cuda_available() -> bool:
    if not NVIDIA_DRIVER.exists() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pick_device(requested: str) -> str:
    """'auto' is CUDA when there is a GPU (and torch to drive it), else the CPU; 'cuda' without one is an error."""
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise StartupError("device 'cuda' was requested but CUDA is not available (no NVIDIA driver, or no torch)")
    return requested


class Codec:
    def __init__(self, ckpt: checkpoint.Checkpoint, device: str, source: Path | str = "checkpoint") -> None:
        self.name = ckpt.arch
        self.model_id = ckpt.model_id
        self.metadata = ckpt.metadata
        self.device = device
        try:
            self.format = latent.format_for(ckpt.latent_format, ckpt.tensors, ckpt.model_args)
            self.engine = make_engine(ckpt, device)
            # One digit through both halves: weights that do not fit the program fail here, not on a request.
            z = self.engine.encode(np.zeros((1, PIXELS), np.uint8))
            if z.shape != (1, self.format.dims) or self.engine.decode(z).shape != (1, PIXELS):
                raise ValueError(f"the network does not map {PIXELS} pixels to {self.format.dims} latents and back")
        except (KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {source} does not fit the {ckpt.arch} architecture: {checkpoint.one_line(exc)}"
            ) from exc
        self.encode_batcher: MicroBatcher | None = None
        self.decode_batcher: MicroBatcher | None = None

    def enable_batching(
        self, max_batch: int, max_wait_us: int, on_batch: Callable[[str, int], None] | None = None
    ) -> None:
        """Let concurrent single requests share model calls (`batching`); `on_batch(name, size)` counts them."""

        def told(name: str) -> Callable[[int], None] | None:
            return None if on_batch is None else lambda size: on_batch(name, size)

        self.encode_batcher = MicroBatcher(self.engine.encode, max_batch, max_wait_us, told("/encode"))
        self.decode_batcher = MicroBatcher(self._decode_rows, max_batch, max_wait_us, told("/decode"))

    def encode_many(self, pixels: np.ndarray) -> bytes:
        """(N, 28, 28) uint8 digits -> N latents in the model's format, end to end."""
        return self.format.pack_many(self.engine.encode(pixels.reshape(len(pixels), PIXELS)))

    def encode(self, pixels: np.ndarray) -> bytes:
        """A (28, 28) uint8 digit -> its 24 latent bytes."""
        return self.encode_many(pixels[np.newaxis])

    def _decode_rows(self, z: np.ndarray) -> np.ndarray:
        # 3e38 would overflow to inf - inf = NaN inside the network; see latent.CLAMP.
        return self.engine.decode(np.clip(z, -latent.CLAMP, latent.CLAMP))

    def decode_many(self, z: np.ndarray) -> np.ndarray:
        """(N, dims) latent values, as the format gives them back -> (N, 28, 28) uint8 digits."""
        return self._decode_rows(z).reshape(len(z), imaging.SIDE, imaging.SIDE)

    def decode_pixels(self, data: bytes) -> np.ndarray:
        """Latent bytes -> a (28, 28) uint8 digit; LatentError when they do not follow the format."""
        pixels: np.ndarray = self.decode_many(self.format.unpack(data)[np.newaxis])[0]
        return pixels

    def decode(self, data: bytes) -> bytes:
        """24 latent bytes -> an 8-bit grayscale 28x28 PNG."""
        return imaging.write_digit(self.decode_pixels(data))

    async def encode_one(self, pixels: np.ndarray) -> bytes:
        """`encode`, through the micro-batcher when batching is on."""
        if self.encode_batcher is None:
            return self.encode(pixels)
        return self.format.pack(await self.encode_batcher.submit(pixels.reshape(PIXELS)))

    async def decode_one(self, data: bytes) -> bytes:
        """`decode`, through the micro-batcher when batching is on."""
        if self.decode_batcher is None:
            return self.decode(data)
        row = await self.decode_batcher.submit(self.format.unpack(data))
        return imaging.write_digit(row.reshape(imaging.SIDE, imaging.SIDE))


class Codecs:
    """The models a server holds, by name, and the one used when a request names none."""

    def __init__(self, codecs: list[Codec], default: str | None = None) -> None:
        if not codecs:
            raise StartupError("no model to serve")
        self.by_name: dict[str, Codec] = {}
        for codec in codecs:
            if codec.name in self.by_name:
                raise StartupError(f"two checkpoints hold a model named {codec.name!r}; serve one of them")
            self.by_name[codec.name] = codec
        self.default_name = codecs[0].name if default is None else default
        if self.default_name not in self.by_name:
            raise StartupError(f"the default model {default!r} is not among the models served: {self.known()}")

    @property
    def default(self) -> Codec:
        return self.by_name[self.default_name]

    def get(self, name: str | None) -> Codec:
        """The model named `name`, or the default for None; UnknownModelError names the known ones."""
        if name is None:
            return self.default
        try:
            return self.by_name[name]
        except KeyError:
            raise UnknownModelError(f"unknown model {name[:40]!r}; this server has: {self.known()}") from None

    def known(self) -> str:
        return ", ".join(self.by_name)

    def __iter__(self) -> Iterator[Codec]:
        return iter(self.by_name.values())


def load_codec(path: Path, device: str) -> Codec:
    return Codec(checkpoint.read(path), device, path)


def load_codecs(settings: Settings, device: str) -> Codecs:
    """Every checkpoint of the settings, loaded onto `device`; the default one first."""
    codecs = [load_codec(path, device) for path in settings.checkpoints()]
    return Codecs(codecs, settings.default_model)

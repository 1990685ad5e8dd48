"""The model at work: pixels to latent bytes and latent bytes to PNG.

Pixel mapping, the same as in training: byte b -> b / 255 on the way in; output
y -> round(clamp(y, 0, 1) * 255) on the way out. The latent bytes are whatever
the model's format (`app.latent`) makes of the encoder's output: the service,
the evaluation and the tests all go through `encode` / `decode_pixels`.

A server holds several codecs (`Codecs`), one per model, by name: the model's
architecture name (mlp6, mlp24). A request picks one; none picked is the default.
"""

from collections.abc import Iterator

import numpy as np
import torch

from app import imaging, latent
from app.errors import LatentError, StartupError, UnknownModelError
from app.model import LoadedModel, load_checkpoint
from app.settings import Settings


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


def load_codecs(settings: Settings, device: torch.device) -> Codecs:
    """Every checkpoint of the settings, loaded onto `device`; the default one first."""
    codecs = [Codec(load_checkpoint(path, device), device) for path in settings.checkpoints()]
    return Codecs(codecs, settings.default_model)

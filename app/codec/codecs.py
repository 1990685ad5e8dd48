"""The models at work: pixels to latent bytes and latent bytes to PNG.

Pixel mapping, the same as in training: byte b -> b / 255 on the way in; output
y -> round(clamp(y, 0, 1) * 255) on the way out. The latent bytes are whatever
the model's format (`app.codec.latent`) makes of the encoder's output. The arithmetic
is the engine's (`app.codec.engine`): float64, so a digit's bytes do not depend on
what it was batched with. The service, the evaluation and the tests all go
through these methods.

Encode effort (`app.codec.search`): level 0 is the encoder's single pass; higher levels
search for a latent the decoder reads better, each by a fixed recipe. The measured
figures of each level (PSNR, cost) are read from `<checkpoint>.efforts.json` beside the
checkpoint, written by `python -m app.training.evaluate --efforts`, when its model id matches.

A server holds several codecs (`Codecs`), one per version. A model's *name* is its
architecture (mlp6, mlp24, ec64); a *version* is one checkpoint of it, known by its model id
(`ec64-ea9647b7fd42`: the name and a hash of the weights). Several versions of one name may be
served side by side; the name means the newest (by `trained_at`; ties: the later in the
settings' list) unless `default_versions` pins one. `Codecs.resolve` turns what a request
asks for (`?model=` a name or an id, and on the decode side the id a latent claims) into
the one codec that serves it, or a domain error.
"""

import importlib.util
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.codec import blas, checkpoint, imaging, latent, search
from app.codec.engine import Engine, NumpyMLP, TorchEngine, make_engine
from app.codec.microbatch import MicroBatcher
from app.errors import CheckpointError, EffortError, ModelMismatchError, StartupError, UnknownModelError
from app.settings import Settings

PIXELS = imaging.SIDE * imaging.SIDE
log = logging.getLogger("app")
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
        self.source = source  # the checkpoint's path (its efforts.json lies beside it)
        self.metadata = ckpt.metadata
        self.device = device
        try:
            # When the weights were made (ISO-8601 UTC), None when the checkpoint does not say.
            self.trained_at = None if ckpt.trained_at is None else checkpoint.utc_iso(ckpt.trained_at)
        except ValueError as exc:
            raise CheckpointError(
                f"checkpoint {source} says it was trained at {str(ckpt.trained_at)[:40]!r}: {exc}"
            ) from exc
        try:
            self.format = latent.format_for(ckpt.latent_format, ckpt.tensors, ckpt.model_args)
            self.engine = make_engine(ckpt, device)
            # One digit through both halves: weights that do not fit the program fail here, not on a request.
            z = self.engine.forward_encoder(np.zeros((1, PIXELS), np.uint8))
            if z.shape != (1, self.format.dims) or self.engine.forward_decoder(z).shape != (1, PIXELS):
                raise ValueError(f"the network does not map {PIXELS} pixels to {self.format.dims} latents and back")
        except (KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {source} does not fit the {ckpt.arch} architecture: {checkpoint.one_line(exc)}"
            ) from exc
        self.encode_batcher: MicroBatcher | None = None
        self.decode_batcher: MicroBatcher | None = None
        self.space, self.recipes = search.space_and_recipes(self.format)
        self._searcher: search.SearchDecoder | None = None
        figures = read_figures(source, self.model_id)
        self.efforts: list[search.Effort] = [
            search.Effort(
                level=level,
                steps=recipe.steps,
                sweeps=recipe.sweeps,
                cost=search.cost_of(recipe, self.format.dims),
                psnr_db=figures.get(level, {}).get("psnr_db"),
                us_per_digit=figures.get(level, {}).get("us_per_digit"),
            )
            for level, recipe in enumerate(self.recipes)
        ]
        self.default_effort = 0

    @property
    def max_effort(self) -> int:
        return len(self.efforts) - 1

    def effort(self, value: int | str | None) -> search.Effort:
        """None -> the default; an int or a decimal string in 0..max_effort -> that level; else EffortError."""
        if value is None:
            return self.efforts[self.default_effort]
        level: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            level = value
        elif isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 6:
            level = int(value)
        if level is None or not 0 <= level <= self.max_effort:
            shown = value if isinstance(value, int) and not isinstance(value, bool) else str(value)[:20]
            raise EffortError(
                f"effort must be an integer from 0 to {self.max_effort} for model {self.name}; got {str(shown)!r}"
            )
        return self.efforts[level]

    def searcher(self) -> search.SearchDecoder:
        """The decoder the search runs on, made on first use (torch's needs torch)."""
        if self._searcher is None:
            self._searcher = search_decoder(self.engine)
        return self._searcher

    def enable_microbatching(
        self, max_batch: int, max_wait_us: int, on_batch: Callable[[str, int], None] | None = None
    ) -> None:
        """Let concurrent single requests share model calls (app.codec.microbatch); `on_batch(name, size)` counts
        them."""

        def told(name: str) -> Callable[[int], None] | None:
            return None if on_batch is None else lambda size: on_batch(name, size)

        self.encode_batcher = MicroBatcher(self.engine.forward_encoder, max_batch, max_wait_us, told("/encode"))
        self.decode_batcher = MicroBatcher(self._decode_rows, max_batch, max_wait_us, told("/decode"))

    def encode_many(self, pixels: np.ndarray, effort: int = 0) -> bytes:
        """(N, 28, 28) uint8 digits -> N latents in the model's format, end to end, searched at `effort`."""
        level = self.effort(effort).level
        rows = pixels.reshape(len(pixels), PIXELS)
        z = self.engine.forward_encoder(rows)
        if level == 0:
            return self.format.pack_many(z)
        with blas.one_thread():  # a search's many small products: one BLAS thread is several times faster
            return self.format.pack_many(search.search(self.searcher(), self.space, self.recipes[level], rows, z))

    def encode(self, pixels: np.ndarray, effort: int = 0) -> bytes:
        """A (28, 28) uint8 digit -> its 24 latent bytes."""
        return self.encode_many(pixels[np.newaxis], effort)

    def _decode_rows(self, z: np.ndarray) -> np.ndarray:
        # 3e38 would overflow to inf - inf = NaN inside the network; see latent.CLAMP.
        return self.engine.forward_decoder(np.clip(z, -latent.CLAMP, latent.CLAMP))

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


def search_decoder(engine: Engine) -> search.SearchDecoder:
    if isinstance(engine, NumpyMLP):
        return search.NumpyDecoder(engine.decoder)
    if isinstance(engine, TorchEngine):
        from app.codec.search_torch import TorchDecoder

        return TorchDecoder(engine.model.get_submodule("decoder"), engine.device)
    raise TypeError(f"no search for the engine {type(engine).__name__}")


FIGURES_SUFFIX = ".efforts.json"


def figures_path(source: Path) -> Path:
    """Where the measured figures of a checkpoint's effort levels are kept: beside it."""
    return source.with_name(source.name.removesuffix(checkpoint.SUFFIX) + FIGURES_SUFFIX)


def read_figures(source: Path | str, model_id: str) -> dict[int, dict[str, Any]]:
    """level -> {"psnr_db": ..., "us_per_digit": ...} for these weights; {} when not measured (or other weights)."""
    if not isinstance(source, Path):
        return {}
    path = figures_path(source)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("model_id") != model_id:
        return {}
    return {int(row["level"]): row for row in data.get("levels", []) if isinstance(row, dict) and "level" in row}


class Codecs:
    """The versions a server holds, by model id and by name, and the model used when a request names none."""

    def __init__(
        self, codecs: list[Codec], default: str | None = None, default_versions: Mapping[str, str] | None = None
    ) -> None:
        if not codecs:
            raise StartupError("no model to serve")
        self.by_id: dict[str, Codec] = {}
        for codec in codecs:
            if codec.model_id in self.by_id:
                log.info("model %s is listed twice; serving it once", codec.model_id)
            else:
                self.by_id[codec.model_id] = codec
        self.versions: dict[str, list[Codec]] = {}  # name -> its versions, in the settings' order
        for codec in self.by_id.values():
            self.versions.setdefault(codec.name, []).append(codec)
        # name -> the version the name means: the newest, or the one pinned
        self.by_name = {name: newest(versions) for name, versions in self.versions.items()}
        self.pinned = set(default_versions or {})
        for name, model_id in (default_versions or {}).items():
            pinned = self.by_id.get(model_id)
            if pinned is None:
                raise StartupError(
                    f"the default version {name}={model_id} is not among the models served: {self.known()}"
                )
            if pinned.name != name:
                raise StartupError(f"the default version {name}={model_id} is a version of {pinned.name}, not {name}")
            self.by_name[name] = pinned
        self.default_name = codecs[0].name if default is None else default
        if self.default_name not in self.by_name:
            raise StartupError(f"the default model {default!r} is not among the models served: {self.known()}")

    @property
    def default(self) -> Codec:
        return self.by_name[self.default_name]

    def get(self, model: str | None) -> Codec:
        """`model` a name (the version it means), a model id (that version) or None (the default model);
        UnknownModelError names the known ones."""
        if model is None:
            return self.default
        codec = self.by_name.get(model) or self.by_id.get(model)
        if codec is None:
            raise UnknownModelError(f"unknown model {model[:40]!r}; this server has: {self.known()}")
        return codec

    def resolve(self, model: str | None, claimed: str | None = None) -> Codec:
        """The one version a request means: `model` is ?model= (a name, an id or None), `claimed` the id the
        latents say made them (X-Model-Id, or a container's id), None when they do not say.

        A latent decoded by other weights than the ones that made it is a wrong digit with no error, so a
        claimed id that is not served, or that is not a version of what `model` names, is a ModelMismatchError
        (409); a claimed version of the named model is that version (a v1 latent after v2 became the default).
        An unknown `model` is an UnknownModelError (404) first, whatever the claim.
        """
        named = None if model is None else self.get(model)
        if claimed is None:
            self.refuse_a_guess(self.default_name if model is None else model)
            return self.default if named is None else named
        codec = self.by_id.get(claimed)
        if codec is None:
            raise ModelMismatchError(
                f"the latent was made by model {claimed[:60]!r}; this server has {', '.join(self.by_id)}"
            )
        if named is not None and model not in (codec.name, codec.model_id):
            raise ModelMismatchError(
                f"the latent was made by model {claimed[:60]!r}; model {model!r} here is {named.model_id!r}"
            )
        return codec

    def refuse_a_guess(self, model: str) -> None:
        """Bare latents decoded by a name that has several versions: the bytes do not say which made them.

        Taking the newest would give a v1 latent v2's digit, with no error; so unless the operator pinned
        what the name means (MNIST_CODEC_DEFAULT_VERSIONS: "my stored bare latents are that version's"),
        it is a ModelMismatchError (409) that says how to name the version. A model id is never a guess.
        """
        versions = self.versions.get(model, [])
        if len(versions) > 1 and model not in self.pinned:
            raise ModelMismatchError(
                f"model {model!r} has {len(versions)} versions here ({', '.join(c.model_id for c in versions)}) "
                "and 24 bytes do not say which one made them: send the X-Model-Id that /encode returned with "
                "them, or ask for ?model=<model id>"
            )

    def means(self, codec: Codec) -> bool:
        """Whether `codec` is the version its name means."""
        return self.by_name[codec.name] is codec

    def names(self) -> list[str]:
        return list(self.by_name)

    def known(self) -> str:
        """What `?model=` may say here: the names, then the model ids of every version."""
        return f"{', '.join(self.by_name)}; model ids {', '.join(self.by_id)}"

    def __iter__(self) -> Iterator[Codec]:
        """Every version, in the settings' order."""
        return iter(self.by_id.values())


def trained_order(codec: Codec) -> datetime:
    """A checkpoint that does not say when it was trained sorts oldest."""
    return datetime.min.replace(tzinfo=UTC) if codec.trained_at is None else datetime.fromisoformat(codec.trained_at)


def newest(versions: list[Codec]) -> Codec:
    """The newest by `trained_at`; of equals, the later in the list (max keeps the first of equals, so reversed)."""
    return max(reversed(versions), key=trained_order)


def parse_default_versions(text: str) -> dict[str, str]:
    """MNIST_CODEC_DEFAULT_VERSIONS, 'ec64=ec64-ea9647b7fd42,mlp6=...', as {name: model id}; StartupError when
    a pair is not NAME=MODEL_ID or a name comes twice."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, model_id = (side.strip() for side in item.partition("="))
        if not name or not model_id or name in pairs:
            raise StartupError(
                "MNIST_CODEC_DEFAULT_VERSIONS: expected comma-separated NAME=MODEL_ID pairs, each name once "
                f"(e.g. ec64=ec64-ea9647b7fd42); got {item[:80]!r}"
            )
        pairs[name] = model_id
    return pairs


def load_codec(path: Path, device: str) -> Codec:
    return Codec(checkpoint.read(path), device, path)


def load_served(paths: list[Path], device: str) -> list[Codec]:
    """The checkpoints a server (or `mnist-codec --local`) serves, loaded onto `device`, in order; two paths to
    the same weights load once. A model whose latents are not the API's 24 bytes (ec64 trained for another code
    size, the rate-distortion study's) is refused: `load_codec` still loads one for `evaluate --curve`."""
    codecs: list[Codec] = []
    for path in paths:
        ckpt = checkpoint.read(path)
        if any(codec.model_id == ckpt.model_id for codec in codecs):
            log.info("%s holds %s, loaded already; serving it once", path, ckpt.model_id)
            continue
        codec = Codec(ckpt, device, path)
        if codec.format.nbytes != latent.LATENT_BYTES:
            raise CheckpointError(
                f"checkpoint {path} codes {codec.format.nbytes}-byte latents; the service serves "
                f"{latent.LATENT_BYTES}-byte latents only (evaluate it with python -m app.training.evaluate --curve)"
            )
        codecs.append(codec)
    return codecs


def load_codecs(settings: Settings, device: str) -> Codecs:
    """Every checkpoint of the settings (`load_served`), the default model's first."""
    pinned = parse_default_versions(settings.default_versions)  # a typo fails before minutes of loading
    return Codecs(load_served(settings.checkpoints(), device), settings.default_model, pinned)

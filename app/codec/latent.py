"""The latent wire formats: what /encode returns and /decode takes.

Each model names the one format it speaks; this module is the only place that
packs, unpacks or validates latent bytes. Every format is exactly 24 bytes, with
no header and no padding: the bytes alone do not say which model made them, so
keep the model id (`X-Model-Id`) next to stored latents.

Format "6xf32le", version 1 (the reference model, `mlp6`):

    offset  size  content
    0       4     z[0]  IEEE-754 binary32, little-endian
    4       4     z[1]
    ...
    20      4     z[5]

The six latent values in the order of the encoder's output units.
`numpy.fromfile(path, dtype="<f4")` reads one back, and N latents stored end to
end are an (N, 6) "<f4" array. Every value must be finite; NaN and +/-Inf are
rejected. Finite values of any magnitude are accepted: the decoder first clamps
each to [-CLAMP, CLAMP] (1e6, far beyond the encoder's range of a few tens) so
that no value can overflow inside the network, and its output is clamped to
[0, 1].

Format "24xu8", version 1 (the quantised model, `mlp24`):

    offset  size  content
    0       1     q[0]  unsigned 8-bit integer, 0..255
    1       1     q[1]
    ...
    23      1     q[23]

The 24 latent values in the order of the encoder's output units, each uniformly
quantised on [0, 1]: the encoder's output z (a sigmoid, so inside (0, 1)) is
stored as q = round(z * 255) (halves to even, numpy's and torch's rounding), and
the decoder is given q / 255 as float32. `numpy.fromfile(path, dtype="u1")`
reads one back, N latents end to end are an (N, 24) uint8 array. Every byte
value is valid, so a 24-byte body always decodes, and always to the same digit.
"""

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from app.errors import LatentError

LATENT_BYTES = 24  # every format; the wire size the service promises
CLAMP = 1e6  # latent values beyond this are clamped before decoding (see "6xf32le")


class LatentFormat(ABC):
    """One wire format: `dims` latent values in exactly `nbytes` bytes."""

    name: ClassVar[str]
    dims: ClassVar[int]
    dtype: ClassVar[np.dtype[np.generic]]
    description: ClassVar[str]  # one line for error messages and the API docs

    @property
    def nbytes(self) -> int:
        return self.dims * self.dtype.itemsize

    def pack(self, z: np.ndarray) -> bytes:
        """One latent (shape (dims,) or (1, dims), any float dtype) as its wire bytes."""
        values = np.asarray(z).reshape(-1)
        if values.shape != (self.dims,):
            raise ValueError(f"expected {self.dims} latent values, got {values.size}")
        return self._encode_values(values.astype(np.float64)).astype(self.dtype).tobytes()

    def unpack(self, data: bytes) -> np.ndarray:
        """Wire bytes as the (dims,) float32 values the decoder takes; LatentError when they are not valid."""
        if len(data) != self.nbytes:
            raise LatentError(
                f"a latent is exactly {self.nbytes} bytes ({self.description}); received {len(data)} bytes"
            )
        return self._decode_values(np.frombuffer(data, dtype=self.dtype))

    def pack_many(self, z: np.ndarray) -> bytes:
        """(N, dims) latents as N wire latents, end to end."""
        if z.ndim != 2 or z.shape[1] != self.dims:
            raise ValueError(f"expected an (N, {self.dims}) array, got {z.shape}")
        return self._encode_values(z.astype(np.float64)).astype(self.dtype).tobytes()

    def unpack_many(self, data: bytes) -> np.ndarray:
        """N wire latents, end to end, as (N, dims) float32; LatentError names the first bad latent."""
        if len(data) % self.nbytes:
            raise LatentError(
                f"a batch of latents is a multiple of {self.nbytes} bytes ({self.description} each); "
                f"received {len(data)} bytes"
            )
        stored = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.dims)
        try:
            return self._decode_values(stored.reshape(-1)).reshape(-1, self.dims)
        except LatentError:
            for index, row in enumerate(stored):  # only on failure: find the first bad one
                try:
                    self._decode_values(row)
                except LatentError as exc:
                    raise LatentError(f"latent {index}: {exc}") from exc
            raise

    @abstractmethod
    def _encode_values(self, values: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _decode_values(self, stored: np.ndarray) -> np.ndarray: ...


class Float32Format(LatentFormat):
    """ "6xf32le": six little-endian float32 values, stored as they are."""

    name = "6xf32le"
    dims = 6
    dtype = np.dtype("<f4")
    description = "6 little-endian float32 values"

    def _encode_values(self, values: np.ndarray) -> np.ndarray:
        return values

    def _decode_values(self, stored: np.ndarray) -> np.ndarray:
        z = stored.astype(np.float32)
        if not np.isfinite(z).all():
            bad = [int(i) for i in np.flatnonzero(~np.isfinite(z))]
            raise LatentError(f"latent values must be finite; value(s) at index {bad} are NaN or infinite")
        return z


class UInt8Format(LatentFormat):
    """ "24xu8": 24 values in [0, 1], each quantised to one byte, q = round(z * 255)."""

    name = "24xu8"
    dims = 24
    dtype = np.dtype("u1")
    description = "24 unsigned bytes, value = byte / 255"
    levels = 255

    def _encode_values(self, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError(f"{self.name} latent values must lie in [0, 1], got {values.min()}..{values.max()}")
        return np.round(values * self.levels)

    def _decode_values(self, stored: np.ndarray) -> np.ndarray:
        return (stored.astype(np.float32) / np.float32(self.levels)).astype(np.float32)


FORMATS: dict[str, LatentFormat] = {fmt.name: fmt for fmt in (Float32Format(), UInt8Format())}

# The reference format, also as module-level functions (the original interface of this module).
REFERENCE = FORMATS["6xf32le"]
LATENT_DIMS = REFERENCE.dims
DTYPE = REFERENCE.dtype


def get_format(name: str) -> LatentFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown latent format {name!r}; known: {', '.join(FORMATS)}") from None


def pack(z: np.ndarray) -> bytes:
    """Six latent values as 24 "6xf32le" wire bytes."""
    return REFERENCE.pack(z)


def unpack(data: bytes) -> np.ndarray:
    """24 "6xf32le" wire bytes as a (6,) float32 array; raises LatentError when they are not."""
    return REFERENCE.unpack(data)

"""The latent wire format: what /encode returns and /decode takes.

Format "6xf32le", version 1 (the reference model):

    offset  size  content
    0       4     z[0]  IEEE-754 binary32, little-endian
    4       4     z[1]
    ...
    20      4     z[5]

Exactly 24 bytes, no header, no padding: the six latent values in the order of the
encoder's output units. `numpy.fromfile(path, dtype="<f4")` reads one back, and N
latents stored end to end are an (N, 6) "<f4" array. Every value must be finite;
NaN and +/-Inf are rejected. Finite values of any magnitude are accepted: the
decoder first clamps each to [-CLAMP, CLAMP] (1e6, far beyond the encoder's
range of a few tens) so that no value can overflow inside the network, and its
output is clamped to [0, 1].

This module is the only place that packs, unpacks or validates latent bytes.
"""

import numpy as np

from app.errors import LatentError

FORMAT_NAME = "6xf32le"
LATENT_DIMS = 6
DTYPE = np.dtype("<f4")
LATENT_BYTES = LATENT_DIMS * DTYPE.itemsize  # 24
CLAMP = 1e6


def pack(z: np.ndarray) -> bytes:
    """Six latent values (any float dtype, shape (6,) or (1, 6)) as 24 wire bytes."""
    values = np.asarray(z).reshape(-1)
    if values.shape != (LATENT_DIMS,):
        raise ValueError(f"expected {LATENT_DIMS} latent values, got {values.size}")
    return values.astype(DTYPE).tobytes()


def unpack(data: bytes) -> np.ndarray:
    """24 wire bytes as a (6,) float32 array; raises LatentError when they are not."""
    if len(data) != LATENT_BYTES:
        raise LatentError(
            f"a latent is exactly {LATENT_BYTES} bytes ({LATENT_DIMS} little-endian "
            f"float32 values); received {len(data)} bytes"
        )
    z = np.frombuffer(data, dtype=DTYPE).astype(np.float32)
    if not np.isfinite(z).all():
        bad = [int(i) for i in np.flatnonzero(~np.isfinite(z))]
        raise LatentError(f"latent values must be finite; value(s) at index {bad} are NaN or infinite")
    return z


def pack_many(z: np.ndarray) -> bytes:
    """(N, 6) latent values as N x 24 wire bytes, end to end."""
    if z.ndim != 2 or z.shape[1] != LATENT_DIMS:
        raise ValueError(f"expected an (N, {LATENT_DIMS}) array, got {z.shape}")
    return np.ascontiguousarray(z, dtype=DTYPE).tobytes()


def unpack_many(data: bytes) -> np.ndarray:
    """N x 24 wire bytes as an (N, 6) float32 array; LatentError names the first bad latent."""
    if len(data) % LATENT_BYTES:
        raise LatentError(
            f"a batch of latents is a multiple of {LATENT_BYTES} bytes ({LATENT_DIMS} little-endian float32 "
            f"values each); received {len(data)} bytes"
        )
    z = np.frombuffer(data, dtype=DTYPE).reshape(-1, LATENT_DIMS).astype(np.float32)
    finite = np.isfinite(z).all(axis=1)
    if not finite.all():
        raise LatentError(f"latent {int(np.argmin(finite))} holds NaN or infinite values; all must be finite")
    return z

"""The latent wire formats: what /encode returns and /decode takes.

Each model names the one format it speaks; this module is the only place that
packs, unpacks or validates latent bytes. Each format owns its size (`nbytes`) and,
apart from it, its symbols (`symbols`: what the encoder's values are rounded to). Every
format the service serves is exactly 24 bytes (`LATENT_BYTES`, the API's promise), with
no header: the bytes alone do not say which model made them, so keep the model
id (`X-Model-Id`) next to stored latents. "6xf32le" and "24xu8" are fixed
layouts (`FORMATS`); "24xac" codes under the frequency tables of the model that
speaks it, so each such model makes its own `ArithmeticCodedFormat`.

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

Format "24xac", version 1 (the entropy-coded model, `ec64`):

    offset  size  content
    0       24    one unsigned 192-bit integer V, big-endian (byte 0 holds bits 191..184)

V / 2**192 is a point of [0, 1) that an arithmetic code (`app.codec.arith`) places in
the interval of the digit's 64 integer latents q[0..63]. Latent i's integer q[i] has
the probability f_i[q[i] - offset_i] / 2**16 under the model's frequency table i
(integers stored in the checkpoint, buffers `table_offsets` and `table_freqs`); the
latents are coded in order i = 0..63, each narrowing the interval to its share.

- Encoding: the encoder's 64 values (float32 from the float64 engine) are rounded
  to integers (halves to even) and clamped into their tables. The code is the
  shortest bit string b_1..b_k whose value 0.b_1..b_k lies in the digit's interval;
  it is unique and ends in a 1 (k >= 1), and it is never more than one bit longer
  than the information content -sum log2(f_i / 2**16). Its bits are V's most
  significant bits, in order; the 192 - k bits after it are zero (the padding).
- Rate control: a code over 192 bits is made to fit by moving latents, one step of
  one latent at a time, toward their tables' most probable values (`arith.fit`
  says which latent moves; the choice depends on the integers only; the steps are
  planned at once rather than taken one by one, which changes the cost, not the result). The latent
  made of every most probable value codes in at most 192 bits, which loading the
  checkpoint checks, so every digit fits. The decoder needs no side information.
- Decoding reads V and, for i = 0..63, takes the symbol whose sub-interval holds
  V / 2**192. Every point of [0, 1) lies in exactly one sub-interval at each step,
  so any 24 bytes decode, in exactly 64 steps: the decoder stops after the 64th
  latent, there is no end marker, and the padding bits are never read as symbols
  of their own. Bytes whose bits after the last 1 are not zero, or whose code is
  not the shortest, decode as well (to the latents whose interval holds them), so
  decode(encode(x)) is exact but not every 24 bytes are some encoder output. The
  decoder is given the 64 integers as float32.

N latents of one model in one file: the container, app.codec.container.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from app.codec import arith
from app.errors import LatentError

LATENT_BYTES = 24  # the size of every latent the service serves (the API's promise); each format owns its `nbytes`
CLAMP = 1e6  # latent values beyond this are clamped before decoding (see "6xf32le")


class LatentFormat(ABC):
    """One wire format. Its symbols and its bytes are different things, as CompressAI keeps
    `quantize(mode="symbols")` apart from `compress`: `symbols` rounds the encoder's values to what
    is sent (`dims` of them), `nbytes` is the size of one latent on the wire, which only a fixed
    layout ties to `dims` (an entropy code has no per-symbol size)."""

    name: ClassVar[str]
    dims: ClassVar[int]  # symbols per latent: the values the decoder takes
    symbol_dtype: ClassVar[np.dtype[np.generic]]  # one symbol
    description: ClassVar[str]  # one line for error messages and the API docs

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes of one latent on the wire."""

    @property
    def wire_dtype(self) -> np.dtype[np.generic] | None:
        """The numpy dtype that reads the bytes as the symbols end to end (`numpy.fromfile`); None for a code."""
        return None

    @abstractmethod
    def symbols(self, values: np.ndarray) -> np.ndarray:
        """float64 encoder values, N latents end to end (any shape) -> the symbols sent, element by element;
        ValueError for values it cannot send."""

    @abstractmethod
    def values(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols -> the float32 values the decoder takes, element by element; LatentError when not valid."""

    @abstractmethod
    def _write(self, symbols: np.ndarray) -> bytes:
        """N latents' symbols, end to end -> N * nbytes bytes."""

    @abstractmethod
    def _read(self, data: bytes) -> np.ndarray:
        """N * nbytes bytes -> the N * dims symbols, flat."""

    def pack(self, z: np.ndarray) -> bytes:
        """One latent (shape (dims,) or (1, dims), any float dtype) as its wire bytes."""
        values = np.asarray(z).reshape(-1)
        if values.shape != (self.dims,):
            raise ValueError(f"expected {self.dims} latent values, got {values.size}")
        return self._write(self.symbols(values.astype(np.float64)))

    def unpack(self, data: bytes) -> np.ndarray:
        """Wire bytes as the (dims,) float32 values the decoder takes; LatentError when they are not valid."""
        if len(data) != self.nbytes:
            raise LatentError(
                f"a latent is exactly {self.nbytes} bytes ({self.description}); received {len(data)} bytes"
            )
        return self.values(self._read(data))

    def pack_many(self, z: np.ndarray) -> bytes:
        """(N, dims) latents as N wire latents, end to end."""
        if z.ndim != 2 or z.shape[1] != self.dims:
            raise ValueError(f"expected an (N, {self.dims}) array, got {z.shape}")
        return self._write(self.symbols(z.astype(np.float64)))

    def unpack_many(self, data: bytes) -> np.ndarray:
        """N wire latents, end to end, as (N, dims) float32; LatentError names the first bad latent."""
        if len(data) % self.nbytes:
            raise LatentError(
                f"a batch of latents is a multiple of {self.nbytes} bytes ({self.description} each); "
                f"received {len(data)} bytes"
            )
        symbols = self._read(data).reshape(-1, self.dims)
        try:
            return self.values(symbols)
        except LatentError:
            for index in range(len(symbols)):  # only on failure: find the first bad one
                try:
                    self.values(symbols[index : index + 1])
                except LatentError as exc:
                    raise LatentError(f"latent {index}: {exc}") from exc
            raise


class FixedLayout(LatentFormat):
    """A format whose bytes are its symbols end to end, each `symbol_dtype`: nbytes = dims * itemsize."""

    @property
    def nbytes(self) -> int:
        return self.dims * self.symbol_dtype.itemsize

    @property
    def wire_dtype(self) -> np.dtype[np.generic]:
        return self.symbol_dtype

    def _write(self, symbols: np.ndarray) -> bytes:
        return symbols.astype(self.symbol_dtype).tobytes()

    def _read(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=self.symbol_dtype)


class Float32Format(FixedLayout):
    """ "6xf32le": six little-endian float32 values, stored as they are."""

    name = "6xf32le"
    dims = 6
    symbol_dtype = np.dtype("<f4")
    description = "6 little-endian float32 values"

    def symbols(self, values: np.ndarray) -> np.ndarray:
        return values

    def values(self, symbols: np.ndarray) -> np.ndarray:
        z = symbols.astype(np.float32)
        if not np.isfinite(z).all():
            bad = [int(i) for i in np.flatnonzero(~np.isfinite(z))]
            raise LatentError(f"latent values must be finite; value(s) at index {bad} are NaN or infinite")
        return z


class UInt8Format(FixedLayout):
    """ "24xu8": 24 values in [0, 1], each quantised to one byte, q = round(z * 255)."""

    name = "24xu8"
    dims = 24
    symbol_dtype = np.dtype("u1")
    description = "24 unsigned bytes, value = byte / 255"
    levels = 255

    def symbols(self, values: np.ndarray) -> np.ndarray:
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ValueError(f"{self.name} latent values must lie in [0, 1], got {values.min()}..{values.max()}")
        return np.round(values * self.levels)

    def values(self, symbols: np.ndarray) -> np.ndarray:
        return (symbols.astype(np.float32) / np.float32(self.levels)).astype(np.float32)


class ArithmeticCodedFormat(LatentFormat):
    """ "24xac": 64 integer latents, arithmetic-coded under the model's frequency tables, in 24 bytes."""

    name = "24xac"
    dims = 64
    symbol_dtype = np.dtype("<i8")
    description = "an arithmetic code of 64 integer latents, at most 192 bits, zero-padded, big-endian"

    def __init__(self, tables: arith.FrequencyTables, code_bytes: int = LATENT_BYTES) -> None:
        if tables.dims != self.dims:
            raise ValueError(f"{self.name} codes {self.dims} latents; the frequency tables have {tables.dims}")
        mode_bits = arith.encode_symbols(tables, tables.mode)[1]
        if mode_bits > 8 * code_bytes:
            raise ValueError(
                f"the most probable latent codes in {mode_bits} bits, over the {8 * code_bytes} of {code_bytes} "
                "bytes: rate control could not make every digit fit"
            )
        self.tables = tables
        self.code_bytes = code_bytes
        self.budget = 8 * code_bytes

    @property
    def nbytes(self) -> int:
        return self.code_bytes

    def symbols(self, values: np.ndarray) -> np.ndarray:
        # The integers before rate control; `_write` clamps them into the tables and makes them fit.
        if not np.isfinite(values).all():
            raise ValueError(f"{self.name} latent values must be finite")
        symbols: np.ndarray = np.rint(np.clip(values, -1e9, 1e9)).astype(np.int64)  # rint of anything finite
        return symbols

    def values(self, symbols: np.ndarray) -> np.ndarray:
        return symbols.astype(np.float32)

    def code(self, z: np.ndarray) -> tuple[np.ndarray, int, int, int]:
        """One latent's (64,) values -> (the integers sent, the code m, its length k in bits, rate-control steps)."""
        return arith.fit(self.tables, self.symbols(np.asarray(z, np.float64).reshape(-1)), self.budget)

    def _write(self, symbols: np.ndarray) -> bytes:
        _, ms, ks, _, _ = arith.fit_many(self.tables, symbols.reshape(-1, self.dims), self.budget)
        return b"".join(arith.code_to_bytes(m, k, self.code_bytes) for m, k in zip(ms, ks, strict=True))

    def _read(self, data: bytes) -> np.ndarray:
        n = self.code_bytes
        rows = [arith.symbols_from_bytes(self.tables, data[i : i + n]) for i in range(0, len(data), n)]
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)


FORMATS: dict[str, LatentFormat] = {fmt.name: fmt for fmt in (Float32Format(), UInt8Format())}


def get_format(name: str) -> LatentFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown latent format {name!r}; known: {', '.join(FORMATS)}") from None


def format_bytes(name: str) -> int:
    """The size of one latent of the format `name`, as a container stores it; ValueError for an unknown name.
    "24xac" is 24 bytes by its name (the curve's other code sizes are never served, nor stored)."""
    if name == ArithmeticCodedFormat.name:
        return LATENT_BYTES
    return get_format(name).nbytes


def format_for(name: str, tensors: Mapping[str, np.ndarray], model_args: Mapping[str, Any]) -> LatentFormat:
    """The format a model speaks, from its checkpoint: a fixed layout by name, or for "24xac" one
    made from the frequency tables stored with the weights (buffers `table_offsets`, `table_freqs`).
    ValueError when the name is unknown or the tables are missing or unsound."""
    if name != ArithmeticCodedFormat.name:
        return get_format(name)
    try:
        offsets, freqs = tensors["table_offsets"], tensors["table_freqs"]
    except KeyError as exc:
        raise ValueError(f"a {name} model's checkpoint holds its frequency tables; {exc.args[0]} is missing") from None
    tables = arith.FrequencyTables.from_arrays(offsets, freqs)
    return ArithmeticCodedFormat(tables, int(model_args.get("code_bytes", LATENT_BYTES)))

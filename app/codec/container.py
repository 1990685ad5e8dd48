"""The latent container: N latents of one model in one file, with the model's id (its specification).

Container "MNISTLAT", version 1: N latents of one model in one file (extension
`.lats`, media type `application/x-mnist-latents`), each latent in its format
(app.codec.latent). All integers little-endian.

    offset      size    content
    0           8       magic, the ASCII bytes "MNISTLAT"
    8           2       version, uint16 = 1
    10          2       flags, uint16: bit 0 set = names follow the latents; other bits 0
    12          4       count N, uint32
    16          4       CRC-32 (zlib.crc32) of every byte after the header
    20          40      model id, ASCII, NUL-padded (the X-Model-Id of the weights that made them)
    60          20      latent format name, ASCII, NUL-padded ("6xf32le", "24xu8", ...)
    80          S*N     the N latents, end to end, each in that format, S bytes each (S = 24 for
                        every format the service serves: `format_bytes`)
    80+S*N      4       (only with flag bit 0) L, uint32: byte length of the names
    84+S*N      L       (only with flag bit 0) N names, UTF-8, each ended by "\\n"

Nothing may follow. A reader checks the magic, version, flags, that the file is
exactly as long as the header says and the CRC-32; a truncated or damaged file
is refused as a whole. In numpy, without this package:

    header = np.dtype([("magic", "S8"), ("version", "<u2"), ("flags", "<u2"), ("count", "<u4"),
                       ("crc32", "<u4"), ("model_id", "S40"), ("format", "S20")])   # CONTAINER_HEADER
    h = np.fromfile(path, dtype=header, count=1)[0]
    raw = np.fromfile(path, dtype="u1", offset=80, count=24 * int(h["count"])).reshape(-1, 24)
    z = raw.view("<f4")   # if h["format"] == b"6xf32le": (N, 6) float32; for b"24xu8", raw is (N, 24) uint8
    # for b"24xac", each 24-byte row is one arithmetic code: decoding it needs the model's frequency tables
"""

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from app.codec.latent import format_bytes
from app.errors import LatentError

CONTAINER_MAGIC = b"MNISTLAT"
CONTAINER_VERSION = 1
CONTAINER_SUFFIX = ".lats"
CONTAINER_MEDIA_TYPE = "application/x-mnist-latents"
FLAG_NAMES = 1
CONTAINER_HEADER = np.dtype(
    [
        ("magic", "S8"),
        ("version", "<u2"),
        ("flags", "<u2"),
        ("count", "<u4"),
        ("crc32", "<u4"),
        ("model_id", "S40"),
        ("format", "S20"),
    ]
)
HEADER_BYTES = CONTAINER_HEADER.itemsize  # 80
MAX_NAME_BYTES = 1024  # one name, in UTF-8: a file name, not a document


@dataclass(frozen=True)
class Container:
    """N latents of one model: what a `.lats` file holds."""

    model_id: str
    format_name: str
    latents: list[bytes]  # each exactly its format's size (`format_bytes`)
    names: list[str] | None = None  # one per latent, or None

    def __post_init__(self) -> None:
        for label, text, size in (("model id", self.model_id, 40), ("format name", self.format_name, 20)):
            if not text or not text.isascii() or "\x00" in text or len(text) > size:
                raise ValueError(f"a container's {label} is 1 to {size} ASCII characters; got {text!r}")
        size = format_bytes(self.format_name)
        if any(len(item) != size for item in self.latents):
            raise ValueError(f"every {self.format_name} latent in a container is exactly {size} bytes")
        if self.names is not None:
            if len(self.names) != len(self.latents):
                raise ValueError(f"{len(self.names)} names for {len(self.latents)} latents")
            for name in self.names:
                if not name or "\n" in name or "\x00" in name or len(name.encode()) > MAX_NAME_BYTES:
                    raise ValueError(f"a latent's name is 1 to {MAX_NAME_BYTES} bytes without newline or NUL")


def write_container(container: Container) -> bytes:
    """The container's bytes (see "Container MNISTLAT" in this module's docstring)."""
    body = b"".join(container.latents)
    flags = 0
    if container.names is not None:
        names = "".join(name + "\n" for name in container.names).encode()
        body += struct.pack("<I", len(names)) + names
        flags |= FLAG_NAMES
    header = np.zeros((), dtype=CONTAINER_HEADER)
    header["magic"] = CONTAINER_MAGIC
    header["version"] = CONTAINER_VERSION
    header["flags"] = flags
    header["count"] = len(container.latents)
    header["crc32"] = zlib.crc32(body)
    header["model_id"] = container.model_id.encode("ascii")
    header["format"] = container.format_name.encode("ascii")
    return header.tobytes() + body


def read_container(data: bytes) -> Container:
    """A container's latents, model id, format and names; LatentError says what is wrong with it."""
    if not data.startswith(CONTAINER_MAGIC):
        if data and CONTAINER_MAGIC.startswith(data):
            raise LatentError(f"truncated latent container: {len(data)} bytes")
        raise LatentError("not a latent container (the data does not start with MNISTLAT)")
    if len(data) < HEADER_BYTES:
        raise LatentError(f"truncated latent container: {len(data)} bytes, shorter than its {HEADER_BYTES}-byte header")
    header = np.frombuffer(data, dtype=CONTAINER_HEADER, count=1)[0]
    version, flags, count = int(header["version"]), int(header["flags"]), int(header["count"])
    if version != CONTAINER_VERSION:
        raise LatentError(f"latent container version {version} is not supported (this reader knows 1)")
    if flags & ~FLAG_NAMES:
        raise LatentError(f"latent container has unknown flags {flags:#06x}")
    try:
        model_id, format_name = (bytes(header[key]).decode("ascii") for key in ("model_id", "format"))
    except UnicodeDecodeError:
        raise LatentError("latent container's model id or format name is not ASCII (damaged header)") from None
    try:
        size = format_bytes(format_name)
    except ValueError as exc:
        raise LatentError(f"latent container: {exc}") from None
    end = HEADER_BYTES + count * size
    expected = end
    names: list[str] | None = None
    if flags & FLAG_NAMES:  # then a uint32 length and the names
        expected = end + 4 + (struct.unpack_from("<I", data, end)[0] if len(data) >= end + 4 else 0)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "damaged (bytes after its end)"
        raise LatentError(
            f"{what} latent container: {len(data)} bytes; its header promises {count} latents, {expected} bytes"
        )
    if zlib.crc32(data[HEADER_BYTES:]) != int(header["crc32"]):
        raise LatentError("damaged latent container: the CRC-32 of its contents does not match its header")
    if flags & FLAG_NAMES:
        try:
            names = data[end + 4 :].decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise LatentError("latent container's names are not UTF-8") from None
        if names.pop() != "" or len(names) != count:
            raise LatentError(f"latent container holds {count} latents but {len(names)} names")
    latents = [data[i : i + size] for i in range(HEADER_BYTES, end, size)]
    try:
        return Container(model_id, format_name, latents, names)
    except ValueError as exc:
        raise LatentError(f"invalid latent container: {exc}") from exc


def is_container(data: bytes) -> bool:
    return data.startswith(CONTAINER_MAGIC)


def container_count(data: bytes) -> int | None:
    """The number of latents a container's header promises, read from the header alone (the rest
    unread and unchecked: `read_container` does that); None when `data` has no container header."""
    if len(data) < HEADER_BYTES or not is_container(data):
        return None
    return int(np.frombuffer(data, dtype=CONTAINER_HEADER, count=1)[0]["count"])

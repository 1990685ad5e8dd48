"""PNG in, PNG out: the only place that touches image files.

`read_digit` turns an uploaded PNG into a (28, 28) uint8 array the way MNIST
stores digits (0 = black background, 255 = full ink):

- L (8-bit gray) is taken as is; 1-bit becomes 0/255.
- 16-bit gray is scaled to 8 bits, v -> round(v / 257), never clipped.
- RGB and palette images become gray with ITU-R 601 luma (Pillow's "L"
  conversion), which leaves a gray pixel (r = g = b) unchanged.
- Alpha is composited over black, MNIST's background: v -> round(v * a / 255).

The size comes from the PNG header and is checked before any pixel is
decompressed, so a "decompression bomb" costs nothing but its upload.

One validator, `check_png`, stands in front of both decoders, so they cannot
disagree about what is a PNG: chunk order and CRCs, the IHDR fields, PLTE,
tRNS, and image data that inflates to exactly what the header needs. Pillow
alone accepts a PNG cut short or with a bad IDAT CRC; the fast path alone
refused those, and neither checked a palette.

Speed: the common case, an 8-bit gray non-interlaced PNG, skips Pillow's
Python-level PNG parser and hands the checked IDAT stream to Pillow's C decoder
(three times faster). Every other flavour takes the full Pillow path. Writing
builds the PNG directly: one IDAT of unfiltered rows at zlib level 1 (seven
times faster than Pillow's encoder, and smaller).
"""

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from app.errors import ImageError, ImageSizeError, NotPNGError

SIDE = 28
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Far above 28x28, far below anything that could hurt; Pillow errors at twice this.
Image.MAX_IMAGE_PIXELS = 1024 * 1024
# A cut-off PNG is an error, never a half-black digit.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Magic numbers of images people upload by mistake, to answer "415: send a PNG".
_OTHER_FORMATS = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
)


def _sniff_other_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypavif", b"ftypavis", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIF"
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return name
    return None


def read_digit(data: bytes) -> np.ndarray:
    """Decode a 28x28 PNG into a (28, 28) uint8 array; raise an ImageError if we can't."""
    if not data:
        raise ImageError("the upload is empty; expected a 28x28 PNG")
    if not data.startswith(PNG_SIGNATURE):
        other = _sniff_other_format(data)
        if other:
            raise NotPNGError(f"received a {other} image; only PNG is accepted")
        raise ImageError("the upload is not a PNG image (no PNG signature)")
    width, height = _header_size(data)
    if (width, height) != (SIDE, SIDE):
        raise ImageSizeError(f"expected a {SIDE}x{SIDE} PNG, received {width}x{height}")
    png = check_png(data)  # both decoders below only ever see a PNG that passed this
    if png.plain_gray:
        return _read_plain_gray(png)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            image.load()
        except Exception as exc:  # Pillow raises several kinds; check_png should have caught them all first
            raise ImageError(f"corrupt PNG: {exc}") from exc
    if png.palette_size and int(np.asarray(image).max()) >= png.palette_size:
        raise ImageError(f"corrupt PNG: a pixel's palette index is past the {png.palette_size} PLTE entries")
    return _to_gray(image)


def _header_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first, read before anything is decompressed."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG: no IHDR header after the PNG signature")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# --------------------------------------------------------------------------- the one validator

# Bit depths each colour type allows, and its samples per pixel (PNG spec, 11.2.2).
_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7: (first column, first row, column step, row step) of each of the seven passes.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# Ancillary chunks whose place the spec fixes (5.6): before PLTE, between PLTE and IDAT, or before IDAT.
_BEFORE_PLTE = frozenset({b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"cLLI"})
_AFTER_PLTE = frozenset({b"tRNS", b"bKGD", b"hIST"})
_BEFORE_IDAT = _BEFORE_PLTE | _AFTER_PLTE | frozenset({b"pHYs", b"sPLT", b"oFFs", b"pCAL", b"sCAL"})
# Chunks that change no pixel value as Pillow reads a gray PNG; anything else (tRNS!) takes Pillow's path.
_HARMLESS_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs", b"gAMA", b"sRGB"})
_PLAIN_GRAY_IHDR = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 0, 0, 0, 0)  # 8-bit gray, not interlaced


@dataclass(frozen=True)
class CheckedPNG:
    """What `check_png` found: enough for either decoder."""

    idat: bytes  # the compressed image data, every IDAT joined
    palette_size: int  # PLTE entries of a palette image; 0 otherwise
    plain_gray: bool  # 8-bit gray, not interlaced, no chunk that changes a pixel: the fast path reads it


def check_png(data: bytes) -> CheckedPNG:
    """Check a PNG's whole structure, or raise an ImageError that says what is wrong.

    Every chunk's CRC; chunk order (IHDR first, PLTE before the IDATs, the IDATs
    consecutive, IEND last with nothing after it, no unknown critical chunk); the
    IHDR fields; PLTE present and sized for a palette image, absent for gray;
    tRNS sized for the colour type; and the image data: a complete zlib stream
    that inflates to exactly the bytes the header calls for (fewer is
    "truncated", more is refused as corrupt), each row with a known filter.
    Palette indices are checked against PLTE by `read_digit`, once decoded.
    """
    width, height, depth, colour, _, _, interlace = _ihdr_fields(data)
    seen: list[bytes] = []
    idat: list[bytes] = []
    palette_size = 0
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ImageError("truncated PNG: the data ends before the IEND chunk")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        name = kind.decode("latin-1")
        end = pos + 8 + length
        if not (kind.isascii() and kind.isalpha()):
            raise ImageError(f"corrupt PNG: {name!r} at byte {pos} is not a chunk type")
        if length > 2**31 - 1 or end + 4 > len(data):
            raise ImageError(f"truncated PNG: chunk {name} runs past the end of the data")
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            raise ImageError(f"corrupt PNG: chunk {name} fails its CRC check")
        _check_place(kind, seen, colour)
        payload = data[pos + 8 : end]
        if kind == b"PLTE":
            palette_size = _palette_entries(payload, colour, depth)
        elif kind == b"tRNS":
            _check_transparency(payload, colour, palette_size)
        elif kind == b"IDAT":
            idat.append(payload)
        seen.append(kind)
        pos = end + 4
        if kind == b"IEND":
            break
    if pos != len(data):
        raise ImageError(f"corrupt PNG: {len(data) - pos} bytes after the IEND chunk")
    if not idat:
        raise ImageError("corrupt PNG: no IDAT chunk (no image data)")
    if colour == 3 and not palette_size:
        raise ImageError("corrupt PNG: a palette image without its PLTE chunk")
    joined = b"".join(idat)
    _check_image_data(joined, width, height, depth * _CHANNELS[colour], interlace)
    plain = data[16:29] == _PLAIN_GRAY_IHDR and _HARMLESS_CHUNKS.issuperset(seen)
    return CheckedPNG(joined, palette_size if colour == 3 else 0, plain)


def _ihdr_fields(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    if len(data) < 33:
        raise ImageError("truncated PNG: the IHDR chunk is cut off")
    (length,) = struct.unpack_from(">I", data, 8)
    if length != 13:
        raise ImageError(f"corrupt PNG: IHDR holds {length} bytes, not 13")
    fields: tuple[int, int, int, int, int, int, int] = struct.unpack_from(">IIBBBBB", data, 16)
    _, _, depth, colour, compression, filtering, interlace = fields
    if colour not in _BIT_DEPTHS:
        raise ImageError(f"corrupt PNG: IHDR colour type {colour} does not exist (0, 2, 3, 4 or 6)")
    if depth not in _BIT_DEPTHS[colour]:
        allowed = ", ".join(map(str, _BIT_DEPTHS[colour]))
        raise ImageError(f"corrupt PNG: IHDR bit depth {depth} is not valid for colour type {colour} ({allowed})")
    if compression != 0:
        raise ImageError(f"corrupt PNG: IHDR compression method {compression}; only 0 (deflate) exists")
    if filtering != 0:
        raise ImageError(f"corrupt PNG: IHDR filter method {filtering}; only 0 exists")
    if interlace not in (0, 1):
        raise ImageError(f"corrupt PNG: IHDR interlace method {interlace}; only 0 and 1 (Adam7) exist")
    return fields


def _check_place(kind: bytes, seen: list[bytes], colour: int) -> None:
    """The chunk ordering rules of the PNG spec (5.6), for chunk `kind` after the chunks `seen`."""
    name = kind.decode("latin-1")
    if kind == b"IHDR":
        if seen:
            raise ImageError("corrupt PNG: a second IHDR chunk")
        return
    after_idat = b"IDAT" in seen
    if kind == b"IDAT":
        if after_idat and seen[-1] != b"IDAT":
            raise ImageError(f"corrupt PNG: IDAT chunks not consecutive ({seen[-1].decode('latin-1')} between them)")
        return
    if kind == b"PLTE":
        if b"PLTE" in seen:
            raise ImageError("corrupt PNG: a second PLTE chunk")
        if colour in (0, 4):
            raise ImageError(f"corrupt PNG: a PLTE chunk in a gray image (colour type {colour})")
    if after_idat and (kind == b"PLTE" or kind in _BEFORE_IDAT):
        raise ImageError(f"corrupt PNG: chunk {name} after the image data; it must come before IDAT")
    if kind in _BEFORE_PLTE and b"PLTE" in seen:
        raise ImageError(f"corrupt PNG: chunk {name} after PLTE; it must come before it")
    if kind in _AFTER_PLTE and colour == 3 and b"PLTE" not in seen:
        raise ImageError(f"corrupt PNG: chunk {name} before PLTE; it must come after it")
    if kind[0] & 0x20 == 0 and kind not in (b"IEND", b"PLTE"):  # an upper-case first letter: critical
        raise ImageError(f"corrupt PNG: unknown critical chunk {name}")


def _palette_entries(payload: bytes, colour: int, depth: int) -> int:
    entries, rest = divmod(len(payload), 3)
    if rest or not 1 <= entries <= 256:
        raise ImageError(f"corrupt PNG: PLTE of {len(payload)} bytes; it must hold 1 to 256 RGB entries")
    if colour == 3 and entries > 1 << depth:
        raise ImageError(f"corrupt PNG: PLTE of {entries} entries for a {depth}-bit palette image")
    return entries


def _check_transparency(payload: bytes, colour: int, palette_size: int) -> None:
    sizes = {0: 2, 2: 6}
    if colour in (4, 6):
        raise ImageError("corrupt PNG: a tRNS chunk in an image that has an alpha channel")
    if colour == 3 and len(payload) > palette_size:
        raise ImageError(f"corrupt PNG: tRNS of {len(payload)} entries for a PLTE of {palette_size}")
    if colour in sizes and len(payload) != sizes[colour]:
        raise ImageError(f"corrupt PNG: tRNS of {len(payload)} bytes; colour type {colour} needs {sizes[colour]}")


def _passes(width: int, height: int, bits_per_pixel: int, interlace: int) -> list[tuple[int, int]]:
    """(rows, bytes per row with its filter byte) of each pass of the image data: one, or Adam7's seven."""
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    layout = []
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:  # an empty pass has no filter bytes either
            layout.append((rows, 1 + -(-(columns * bits_per_pixel) // 8)))
    return layout


def _check_image_data(idat: bytes, width: int, height: int, bits_per_pixel: int, interlace: int) -> None:
    layout = _passes(width, height, bits_per_pixel, interlace)
    needed = sum(rows * stride for rows, stride in layout)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(idat, needed + 1)  # never inflates more than one byte past what is needed
    except zlib.error as exc:
        raise ImageError(f"corrupt PNG: the image data is not a valid zlib stream ({exc})") from exc
    if len(raw) > needed or inflater.unconsumed_tail:
        raise ImageError(f"corrupt PNG: the image data inflates to more than the {needed} bytes the header needs")
    if len(raw) < needed:
        raise ImageError(f"truncated PNG: the image data inflates to {len(raw)} of the {needed} bytes it needs")
    if not inflater.eof:
        raise ImageError("truncated PNG: the image data's zlib stream is cut off before its end")
    if inflater.unused_data:
        extra = len(inflater.unused_data)
        raise ImageError(f"corrupt PNG: {extra} bytes after the end of the image data's zlib stream")
    start = 0
    for rows, stride in layout:
        if max(raw[start : start + rows * stride : stride]) > 4:
            raise ImageError("corrupt PNG: a row of the image data has an unknown filter type (not 0 to 4)")
        start += rows * stride


def _read_plain_gray(png: CheckedPNG) -> np.ndarray:
    """The fast path for a checked plain 8-bit gray PNG: Pillow's C decoder, without its Python PNG parser."""
    image = Image.frombytes("L", (SIDE, SIDE), png.idat, "zip", "L")
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(SIDE, SIDE)


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif image.mode in ("L", "RGB") and "transparency" in image.info:  # a tRNS chunk: one colour is transparent
        image = image.convert(image.mode + "A")
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I"):  # 16-bit gray ("I;16", "I;16B", "I")
        v = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return ((2 * v + 257) // 514).astype(np.uint8)  # round(v / 257)
    if mode in ("LA", "RGBA"):
        gray = np.asarray(image.convert("L"), dtype=np.int64)
        alpha = np.asarray(image.getchannel("A"), dtype=np.int64)
        return ((2 * gray * alpha + 255) // 510).astype(np.uint8)  # round(v * a / 255)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


_PNG_HEAD = PNG_SIGNATURE + _chunk(b"IHDR", _PLAIN_GRAY_IHDR)
_PNG_TAIL = _chunk(b"IEND", b"")


def write_digit(pixels: np.ndarray) -> bytes:
    """A (28, 28) uint8 array as an 8-bit grayscale PNG."""
    if pixels.shape != (SIDE, SIDE) or pixels.dtype != np.uint8:
        raise ValueError(f"expected a ({SIDE}, {SIDE}) uint8 array, got {pixels.shape} {pixels.dtype}")
    rows = np.zeros((SIDE, SIDE + 1), dtype=np.uint8)  # filter byte 0 ("None") before each row
    rows[:, 1:] = pixels
    return _PNG_HEAD + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + _PNG_TAIL

"""The one PNG validator in front of both decoders: hand-built PNGs, each wrong in one way.

Every case here was answered 200 (a digit) or by one decoder only before the
validator; each must now be a 400 whose detail says what is wrong, whichever
decoder (the fast path or Pillow's) would have read it.
"""

import io
import struct
import zlib

import numpy as np
import png  # pypng: an independent encoder, for the flavours Pillow does not write
import pytest
from conftest import png_bytes
from PIL import Image

from app.codec import imaging
from app.errors import ImageError

GRAY = np.random.default_rng(3).integers(0, 256, size=(28, 28), dtype=np.uint8)


def chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def ihdr(depth: int = 8, colour: int = 0, compression: int = 0, filtering: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, depth, colour, compression, filtering, interlace))


def rows(pixels: np.ndarray, filter_byte: int = 0) -> bytes:
    """Scanlines of a non-interlaced image: a filter byte, then the row's bytes."""
    lines = pixels.reshape(28, -1)
    return b"".join(bytes([filter_byte]) + line.tobytes() for line in lines)


def build(*chunks: bytes) -> bytes:
    return imaging.PNG_SIGNATURE + b"".join(chunks)


def gray(idat_payload: bytes, *extra: bytes, header: bytes | None = None) -> bytes:
    """An 8-bit gray PNG with the given compressed image data and extra chunks before IDAT."""
    return build(header or ihdr(), *extra, chunk(b"IDAT", idat_payload), chunk(b"IEND", b""))


PALETTE_4 = bytes(range(12))  # four RGB entries
INDICES = np.random.default_rng(4).integers(0, 4, size=(28, 28), dtype=np.uint8)


def palette_png(plte: bytes | None, indices: np.ndarray) -> bytes:
    plte_chunk = [chunk(b"PLTE", plte)] if plte is not None else []
    return build(ihdr(colour=3), *plte_chunk, chunk(b"IDAT", zlib.compress(rows(indices))), chunk(b"IEND", b""))


def rgb_with_bad_idat_crc() -> bytes:
    data = bytearray(png_bytes(Image.fromarray(GRAY).convert("RGB")))
    idat = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, idat - 4)
    data[idat + 4 + length] ^= 0xFF  # the CRC's first byte; the pixels stay intact
    return bytes(data)


def half_the_rows() -> bytes:
    return gray(zlib.compress(rows(GRAY)[: 14 * 29]))  # a complete zlib stream of 14 rows out of 28


def sanity_valid() -> bytes:
    return gray(zlib.compress(rows(GRAY)))


def test_the_hand_built_pngs_are_otherwise_valid() -> None:
    np.testing.assert_array_equal(imaging.read_digit(sanity_valid()), GRAY)
    np.testing.assert_array_equal(
        imaging.read_digit(palette_png(PALETTE_4, INDICES)), np.asarray(palette_reference(INDICES))
    )


def palette_reference(indices: np.ndarray) -> Image.Image:
    image = Image.fromarray(indices, mode="P")
    image.putpalette(list(PALETTE_4))
    return image.convert("L")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # The cases the issue found answered 200.
        pytest.param(half_the_rows(), r"truncated PNG: .*inflates to 406 of the 812 bytes", id="fewer-rows-than-ihdr"),
        pytest.param(palette_png(None, INDICES), "palette image without its PLTE", id="palette-without-plte"),
        pytest.param(
            palette_png(PALETTE_4[:6], INDICES), r"palette index is past the 2 PLTE entries", id="index-past-plte"
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), header=ihdr(compression=1)), "compression method 1", id="ihdr-compression-1"
        ),
        pytest.param(rgb_with_bad_idat_crc(), "chunk IDAT fails its CRC check", id="idat-crc-rgb"),
        # IHDR fields.
        pytest.param(gray(zlib.compress(rows(GRAY)), header=ihdr(filtering=1)), "filter method 1", id="ihdr-filter-1"),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), header=ihdr(interlace=2)), "interlace method 2", id="ihdr-interlace-2"
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), header=ihdr(depth=3)),
            "bit depth 3 is not valid for colour type 0",
            id="gray-depth-3",
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), header=ihdr(depth=4, colour=2)),
            "bit depth 4 is not valid for colour type 2",
            id="rgb-depth-4",
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), header=ihdr(colour=5)), "colour type 5 does not exist", id="colour-type-5"
        ),
        pytest.param(gray(zlib.compress(rows(GRAY)), header=ihdr() + ihdr()), "second IHDR", id="two-ihdr"),
        # CRCs, on every chunk and on both decoders' inputs.
        pytest.param(
            gray(
                zlib.compress(rows(GRAY)), header=chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0), crc=1)
            ),
            "chunk IHDR fails its CRC",
            id="ihdr-crc",
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), chunk(b"tEXt", b"a\0b", crc=7)), "chunk tEXt fails its CRC", id="text-crc"
        ),
        pytest.param(
            build(ihdr(), chunk(b"IDAT", zlib.compress(rows(GRAY))), chunk(b"IEND", b"", crc=0)),
            "chunk IEND fails its CRC",
            id="iend-crc",
        ),
        # Chunk order.
        pytest.param(
            build(ihdr(), chunk(b"IDAT", zlib.compress(rows(GRAY)))), "ends before the IEND chunk", id="no-iend"
        ),
        pytest.param(sanity_valid() + b"junk", "4 bytes after the IEND chunk", id="bytes-after-iend"),
        pytest.param(build(ihdr(), chunk(b"IEND", b"")), "no IDAT chunk", id="no-idat"),
        pytest.param(
            build(
                ihdr(),
                chunk(b"IDAT", zlib.compress(rows(GRAY))[:20]),
                chunk(b"tEXt", b"a\0b"),
                chunk(b"IDAT", zlib.compress(rows(GRAY))[20:]),
                chunk(b"IEND", b""),
            ),
            "IDAT chunks not consecutive",
            id="idat-split-by-text",
        ),
        pytest.param(
            build(
                ihdr(colour=2),
                chunk(b"IDAT", zlib.compress(rows(np.dstack([GRAY] * 3)))),
                chunk(b"PLTE", PALETTE_4),
                chunk(b"IEND", b""),
            ),
            "PLTE after the image data",
            id="plte-after-idat",
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), chunk(b"PLTE", PALETTE_4)), "PLTE chunk in a gray image", id="plte-in-gray"
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), chunk(b"ABCD", b"")), "unknown critical chunk ABCD", id="unknown-critical"
        ),
        pytest.param(
            gray(zlib.compress(rows(GRAY)), chunk(b"tRNS", b"\0")),
            "tRNS of 1 bytes; colour type 0 needs 2",
            id="trns-size",
        ),
        pytest.param(
            build(ihdr(), chunk(b"IDAT", zlib.compress(rows(GRAY))), chunk(b"gAMA", b"\0\0\0\1"), chunk(b"IEND", b"")),
            "gAMA after the image data",
            id="gama-after-idat",
        ),
        # PLTE.
        pytest.param(palette_png(PALETTE_4[:5], INDICES), "PLTE of 5 bytes", id="plte-not-multiple-of-3"),
        # The image data.
        pytest.param(
            gray(zlib.compress(rows(GRAY) + b"\0" * 29)), "inflates to more than the 812 bytes", id="one-row-too-many"
        ),
        pytest.param(gray(zlib.compress(rows(GRAY))[:-6]), "truncated PNG", id="zlib-stream-cut"),
        pytest.param(gray(b"not zlib at all"), "not a valid zlib stream", id="not-zlib"),
        pytest.param(
            gray(zlib.compress(rows(GRAY)) + b"\0\0"), "2 bytes after the end of the image data", id="bytes-after-zlib"
        ),
        pytest.param(gray(zlib.compress(rows(GRAY, filter_byte=5))), "unknown filter type", id="filter-type-5"),
    ],
)
def test_a_malformed_png_is_refused_with_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        imaging.read_digit(data)


def test_an_interlaced_png_short_of_its_last_pass_is_truncated() -> None:
    buffer = io.BytesIO()
    png.Writer(28, 28, greyscale=True, bitdepth=8, interlace=True).write(buffer, GRAY.tolist())
    good = buffer.getvalue()
    idat = good.index(b"IDAT")
    (length,) = struct.unpack_from(">I", good, idat - 4)
    raw = zlib.decompress(good[idat + 4 : idat + 4 + length])
    short = build(ihdr(interlace=1), chunk(b"IDAT", zlib.compress(raw[:-50])), chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="truncated PNG"):
        imaging.read_digit(short)


def test_both_decoders_see_only_what_the_validator_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt plain gray PNG never reaches the fast path, a corrupt RGB one never reaches Pillow."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder was handed a PNG the validator should have refused")

    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(Image, "frombytes", refuse)
    for data in (half_the_rows(), rgb_with_bad_idat_crc(), palette_png(None, INDICES)):
        with pytest.raises(ImageError):
            imaging.read_digit(data)


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
@pytest.mark.parametrize("interlace", [False, True])
def test_palette_pngs_of_every_depth_still_read(depth: int, interlace: bool) -> None:
    entries = min(1 << depth, 16)
    palette = [(3 * i, 5 * i, 7 * i) for i in range(entries)]
    indices = np.random.default_rng(depth).integers(0, entries, size=(28, 28))
    buffer = io.BytesIO()
    png.Writer(28, 28, palette=palette, bitdepth=depth, interlace=interlace).write(buffer, indices.tolist())
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))
    np.testing.assert_array_equal(imaging.read_digit(buffer.getvalue()), expected)

import io
import struct
import zlib
from functools import cache

import numpy as np
import png  # pypng: writes the Adam7-interlaced PNGs that Pillow cannot
import pytest
from conftest import png_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, PngImagePlugin

from app.codec import imaging
from app.errors import ImageError, ImageSizeError, NotPNGError

rng = np.random.default_rng(7)
GRAY = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds no pixels at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return imaging.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@cache
def bomb(side: int = 12_000) -> bytes:
    """A real side x side all-black PNG: about 140 kB on the wire, 144 MB once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return imaging.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def interlaced(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    png.Writer(28, 28, greyscale=True, bitdepth=8, interlace=True).write(buffer, pixels.tolist())
    return buffer.getvalue()


def with_text_chunks(image: Image.Image) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a digit")
    info.add_itxt("Author", "mnist-codec tests")
    return png_bytes(image, pnginfo=info)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_bytes(Image.fromarray(GRAY)), id="L"),
        pytest.param(png_bytes(Image.fromarray(GRAY).convert("RGB")), id="RGB"),
        pytest.param(png_bytes(Image.fromarray(GRAY).convert("LA")), id="LA-opaque"),
        pytest.param(png_bytes(Image.fromarray(GRAY).convert("RGBA")), id="RGBA-opaque"),
        pytest.param(png_bytes(Image.fromarray(GRAY).convert("P")), id="P"),
        pytest.param(png_bytes(Image.fromarray(GRAY.astype(np.uint16) * 257)), id="16-bit"),
        pytest.param(with_text_chunks(Image.fromarray(GRAY)), id="text-chunks"),
        pytest.param(interlaced(GRAY), id="adam7-interlaced"),
        pytest.param(png_bytes(Image.fromarray(GRAY), optimize=True), id="optimized"),
    ],
)
def test_flavours_of_the_same_pixels_read_the_same(data: bytes) -> None:
    np.testing.assert_array_equal(imaging.read_digit(data), GRAY)


def test_one_bit_becomes_0_or_255() -> None:
    bits = GRAY > 127
    pixels = imaging.read_digit(png_bytes(Image.fromarray(bits)))
    np.testing.assert_array_equal(pixels, np.where(bits, 255, 0))


def test_16_bit_is_scaled_and_rounded_not_clipped() -> None:
    values = np.array([0, 128, 129, 257, 385, 386, 65535, 1000] * 98, dtype=np.uint16).reshape(28, 28)
    pixels = imaging.read_digit(png_bytes(Image.fromarray(values)))
    expected = np.round(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.max() == 255 and expected[0, 2] == 1 and expected[0, 5] == 2


def test_alpha_is_composited_over_black() -> None:
    alpha = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    rgba = np.dstack([GRAY, GRAY, GRAY, alpha])
    pixels = imaging.read_digit(png_bytes(Image.fromarray(rgba)))
    expected = np.round(GRAY.astype(np.float64) * alpha / 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)


def test_palette_transparency_is_composited() -> None:
    image = Image.fromarray(GRAY).convert("P")
    image.info["transparency"] = int(np.asarray(image)[0, 0])
    pixels = imaging.read_digit(png_bytes(image, transparency=image.info["transparency"]))
    assert pixels[0, 0] == 0


def _truncated() -> bytes:
    data = png_bytes(Image.fromarray(GRAY))
    return data[: len(data) // 2]


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(GRAY).save(buffer, format="JPEG")
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(GRAY).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        pytest.param(b"", ImageError, "empty", id="empty"),
        pytest.param(b"hello, this is text", ImageError, "not a PNG", id="not-an-image"),
        pytest.param(imaging.PNG_SIGNATURE + b"garbage" * 10, ImageError, "corrupt PNG", id="magic-then-garbage"),
        pytest.param(_truncated(), ImageError, "truncated", id="truncated-png"),
        pytest.param(_jpeg(), NotPNGError, "JPEG", id="jpeg"),
        pytest.param(_gif(), NotPNGError, "GIF", id="gif"),
        pytest.param(png_bytes(Image.new("L", (29, 28))), ImageSizeError, "received 29x28", id="29x28"),
        pytest.param(png_bytes(Image.new("L", (1, 1))), ImageSizeError, "received 1x1", id="1x1"),
        pytest.param(png_header_only(100_000, 100_000), ImageSizeError, "100000x100000", id="header-bomb"),
        pytest.param(bomb(), ImageSizeError, "12000x12000", id="12000x12000-bomb"),
    ],
)
def test_bad_uploads_are_refused(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        imaging.read_digit(data)


def test_write_digit_is_8_bit_gray_28x28() -> None:
    image = Image.open(io.BytesIO(imaging.write_digit(GRAY)))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    np.testing.assert_array_equal(np.asarray(image), GRAY)


def test_interlaced_png_really_is_interlaced() -> None:
    assert interlaced(GRAY)[28] == 1  # IHDR's interlace method byte: Adam7


@pytest.mark.parametrize(
    "data",
    [pytest.param(bomb(), id="12000x12000"), pytest.param(png_header_only(100_000, 100_000), id="100000x100000")],
)
def test_size_is_decided_before_pillow_sees_the_pixels(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow was asked to open an oversized PNG")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageSizeError):
        imaging.read_digit(data)


def test_pillow_safety_settings() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= 1024 * 1024
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def pillow_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


@given(st.binary(min_size=784, max_size=784), st.sampled_from([0, 1, 6, 9]), st.booleans())
@settings(max_examples=100, deadline=None)
def test_fast_path_reads_what_pillow_reads(raw: bytes, level: int, optimize: bool) -> None:
    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(28, 28)
    data = png_bytes(Image.fromarray(pixels), compress_level=level, optimize=optimize)
    np.testing.assert_array_equal(imaging.read_digit(data), pillow_pixels(data))


def test_plain_gray_skips_pillows_png_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    data = with_text_chunks(Image.fromarray(GRAY))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast path should have read this PNG")

    monkeypatch.setattr(Image, "open", refuse)
    np.testing.assert_array_equal(imaging.read_digit(data), GRAY)


def test_gray_transparency_is_composited_over_black() -> None:
    transparent = int(GRAY[0, 0])
    pixels = imaging.read_digit(png_bytes(Image.fromarray(GRAY), transparency=transparent))
    np.testing.assert_array_equal(pixels, np.where(transparent == GRAY, 0, GRAY))


def test_a_bad_crc_is_an_error_not_a_digit() -> None:
    data = bytearray(png_bytes(Image.fromarray(GRAY)))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # flip bits inside the compressed pixels, leave the CRC as it was
    with pytest.raises(ImageError):
        imaging.read_digit(bytes(data))


def test_written_pngs_read_back_exactly_everywhere() -> None:
    data = imaging.write_digit(GRAY)
    np.testing.assert_array_equal(pillow_pixels(data), GRAY)
    reader = png.Reader(bytes=data)  # an independent decoder
    width, height, rows, info = reader.read()
    assert (width, height, info["bitdepth"], info["greyscale"]) == (28, 28, 8, True)
    np.testing.assert_array_equal(np.array([list(row) for row in rows], dtype=np.uint8), GRAY)

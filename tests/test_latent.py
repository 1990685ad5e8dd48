import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.codec import container, latent
from app.errors import LatentError

F32 = latent.FORMATS["6xf32le"]  # the reference format, mlp6's


def test_pack_is_six_little_endian_float32() -> None:
    z = np.array([1.5, -2.0, 0.0, 3.25, -0.125, 1e-3], dtype=np.float64)
    data = F32.pack(z)
    assert len(data) == latent.LATENT_BYTES == 24
    assert data[:4] == b"\x00\x00\xc0\x3f"  # 1.5 as little-endian binary32
    np.testing.assert_array_equal(np.frombuffer(data, "<f4"), z.astype(np.float32))


def test_unpack_round_trips_exactly() -> None:
    z = np.array([np.pi, -1e30, 1e-38, 0.0, -0.0, 7.0], dtype=np.float32)
    assert F32.pack(F32.unpack(F32.pack(z))) == F32.pack(z)


def test_pack_refuses_wrong_count() -> None:
    with pytest.raises(ValueError, match="expected 6"):
        F32.pack(np.zeros(5))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "received 0 bytes", id="empty"),
        pytest.param(b"\x00" * 23, "received 23 bytes", id="23-bytes"),
        pytest.param(b"\x00" * 25, "received 25 bytes", id="25-bytes"),
        pytest.param(b"\x00" * 48, "received 48 bytes", id="two-latents"),
        pytest.param(np.array([0, 0, np.nan, 0, 0, 0], "<f4").tobytes(), r"index \[2\]", id="nan"),
        pytest.param(np.array([np.inf, 0, 0, 0, 0, -np.inf], "<f4").tobytes(), r"index \[0, 5\]", id="inf"),
    ],
)
def test_unpack_rejects(data: bytes, message: str) -> None:
    with pytest.raises(LatentError, match=message):
        F32.unpack(data)


# --------------------------------------------------------------------------- the format registry and "24xu8"

U8 = latent.get_format("24xu8")


def test_every_format_is_24_bytes() -> None:
    assert {name: fmt.nbytes for name, fmt in latent.FORMATS.items()} == {"6xf32le": 24, "24xu8": 24}
    assert latent.get_format("6xf32le") is latent.FORMATS["6xf32le"]


def test_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="6xf32le, 24xu8"):
        latent.get_format("12xf16")


def test_u8_byte_layout_is_round_of_z_times_255_in_order() -> None:
    z = np.linspace(0, 1, 24)
    z[1], z[2], z[3] = 0.5 / 255, 1.5 / 255, 0.4 / 255  # halves go to even: 0 and 2; 0.4 down to 0
    data = U8.pack(z)
    expected = bytes([0, 0, 2, 0, *np.round(np.linspace(0, 1, 24)[4:] * 255).astype(np.uint8)])
    assert data == expected
    assert data[0] == 0 and data[23] == 255 and len(data) == 24


def test_u8_unpack_gives_byte_over_255_as_float32() -> None:
    data = bytes(range(0, 240, 10))
    z = U8.unpack(data)
    assert z.dtype == np.float32 and z.shape == (24,)
    np.testing.assert_array_equal(z, np.arange(0, 240, 10, dtype=np.float32) / np.float32(255))


def test_u8_every_byte_value_round_trips() -> None:
    for start in range(0, 256, 24):
        data = bytes((start + i) % 256 for i in range(24))
        assert U8.pack(U8.unpack(data)) == data


@pytest.mark.parametrize(
    ("z", "message"),
    [
        pytest.param(np.full(24, 1.0001), r"in \[0, 1\]", id="above-one"),
        pytest.param(np.full(24, -1e-6), r"in \[0, 1\]", id="negative"),
        pytest.param(np.array([np.nan] + [0.5] * 23), r"in \[0, 1\]", id="nan"),
        pytest.param(np.full(6, 0.5), "expected 24", id="six-values"),
    ],
)
def test_u8_pack_refuses(z: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        U8.pack(z)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 6, id="6-bytes"),
        pytest.param(b"\x00" * 23, id="23-bytes"),
        pytest.param(b"\x00" * 25, id="25-bytes"),
    ],
)
def test_u8_unpack_rejects_wrong_length(data: bytes) -> None:
    with pytest.raises(LatentError, match=rf"exactly 24 bytes \(24 unsigned bytes.*received {len(data)} bytes"):
        U8.unpack(data)


# --------------------------------------------------------------------------- the container for N latents

ID6 = "mlp6-40870c98c2d7"


def some_latents(count: int) -> list[bytes]:
    rng = np.random.default_rng(count)
    return [F32.pack(rng.normal(size=6)) for _ in range(count)]


def container_bytes(count: int = 3, names: list[str] | None = None) -> bytes:
    return container.write_container(container.Container(ID6, "6xf32le", some_latents(count), names))


def test_container_header_is_laid_out_as_specified() -> None:
    items = some_latents(2)
    data = container.write_container(container.Container(ID6, "6xf32le", items, None))
    assert data[0:8] == b"MNISTLAT"
    assert data[8:10] == (1).to_bytes(2, "little")  # version
    assert data[10:12] == b"\x00\x00"  # flags: no names
    assert data[12:16] == (2).to_bytes(4, "little")  # count
    assert data[16:20] == zlib.crc32(data[80:]).to_bytes(4, "little")
    assert data[20:60] == ID6.encode().ljust(40, b"\x00")
    assert data[60:80] == b"6xf32le".ljust(20, b"\x00")
    assert data[80:] == b"".join(items)
    assert container.HEADER_BYTES == container.CONTAINER_HEADER.itemsize == 80


def test_container_names_follow_the_latents() -> None:
    data = container_bytes(2, ["7.png", "seven two.png"])
    assert data[10:12] == b"\x01\x00"  # flag bit 0
    names = b"7.png\nseven two.png\n"
    assert data[80 + 48 :] == len(names).to_bytes(4, "little") + names


@pytest.mark.parametrize("names", [None, ["a.png", "b.png", "ünïcode.png"]])
def test_container_round_trips(names: list[str] | None) -> None:
    items = some_latents(3)
    back = container.read_container(container.write_container(container.Container(ID6, "6xf32le", items, names)))
    assert back == container.Container(ID6, "6xf32le", items, names)


def test_container_reads_with_numpy_as_the_docstring_says(tmp_path: Path) -> None:
    """The recipe in app/codec/container.py's docstring, run as written there (without this package)."""
    items = some_latents(4)
    path = tmp_path / "digits.lats"
    path.write_bytes(container.write_container(container.Container(ID6, "6xf32le", items, ["a", "b", "c", "d"])))
    recipe = container.__doc__.split("In numpy, without this package:")[1]
    code = "\n".join(line.removeprefix("    ") for line in recipe.strip().splitlines())
    scope: dict[str, object] = {"np": np, "path": path}
    exec(code, scope)
    assert scope["h"]["model_id"] == ID6.encode() and scope["h"]["format"] == b"6xf32le"
    np.testing.assert_array_equal(scope["z"], np.stack([np.frombuffer(item, "<f4") for item in items]))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda d: b"", "not a latent container", id="empty"),
        pytest.param(lambda d: b"MNIST", "truncated", id="part-of-the-magic"),
        pytest.param(lambda d: b"PNG\x00" + d[4:], "not a latent container", id="other-magic"),
        pytest.param(lambda d: d[:50], "shorter than its 80-byte header", id="cut-in-the-header"),
        pytest.param(lambda d: d[:-1], "truncated latent container", id="cut-in-the-latents"),
        pytest.param(lambda d: d + b"\x00", r"bytes after its end", id="trailing-byte"),
        pytest.param(lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "CRC-32", id="flipped-bit"),
        pytest.param(lambda d: d[:8] + b"\x02\x00" + d[10:], "version 2 is not supported", id="version-2"),
        pytest.param(lambda d: d[:10] + b"\x02\x00" + d[12:], "unknown flags", id="unknown-flag"),
        pytest.param(lambda d: d[:12] + b"\x04\x00\x00\x00" + d[16:], "promises 4 latents", id="count-too-big"),
        pytest.param(lambda d: d[:20] + b"\xff" * 40 + d[60:], "not ASCII", id="binary-model-id"),
    ],
)
def test_damaged_containers_are_refused_whole(damage: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(LatentError, match=message):
        container.read_container(damage(container_bytes(3)))


def test_a_container_with_too_few_names_is_refused() -> None:
    data = bytearray(container_bytes(2, ["a", "b"]))
    names = b"a\n"  # one name for two latents, with a consistent length and CRC
    body = bytes(data[80 : 80 + 48]) + len(names).to_bytes(4, "little") + names
    data[16:20] = zlib.crc32(body).to_bytes(4, "little")
    with pytest.raises(LatentError, match="2 latents but 1 names"):
        container.read_container(bytes(data[:80]) + body)


@pytest.mark.parametrize(
    ("model_id", "names"),
    [("", None), ("x" * 41, None), ("mlp6-é", None), (ID6, ["a\nb", "c", "d"]), (ID6, ["a", "b"])],
)
def test_a_container_that_cannot_be_written_is_refused(model_id: str, names: list[str] | None) -> None:
    with pytest.raises(ValueError):
        container.Container(model_id, "6xf32le", some_latents(3), names)

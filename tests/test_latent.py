import numpy as np
import pytest

from app.codec import latent
from app.errors import LatentError


def test_pack_is_six_little_endian_float32() -> None:
    z = np.array([1.5, -2.0, 0.0, 3.25, -0.125, 1e-3], dtype=np.float64)
    data = latent.pack(z)
    assert len(data) == latent.LATENT_BYTES == 24
    assert data[:4] == b"\x00\x00\xc0\x3f"  # 1.5 as little-endian binary32
    np.testing.assert_array_equal(np.frombuffer(data, "<f4"), z.astype(np.float32))


def test_unpack_round_trips_exactly() -> None:
    z = np.array([np.pi, -1e30, 1e-38, 0.0, -0.0, 7.0], dtype=np.float32)
    assert latent.pack(latent.unpack(latent.pack(z))) == latent.pack(z)


def test_pack_refuses_wrong_count() -> None:
    with pytest.raises(ValueError, match="expected 6"):
        latent.pack(np.zeros(5))


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
        latent.unpack(data)


# --------------------------------------------------------------------------- the format registry and "24xu8"

U8 = latent.get_format("24xu8")


def test_every_format_is_24_bytes() -> None:
    assert {name: fmt.nbytes for name, fmt in latent.FORMATS.items()} == {"6xf32le": 24, "24xu8": 24}
    assert latent.get_format("6xf32le") is latent.REFERENCE


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

import numpy as np
import pytest

from app import latent
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

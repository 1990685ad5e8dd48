"""app.training.quality: per-image PSNR and SSIM."""

import numpy as np
import pytest

from app.training import quality

rng = np.random.default_rng(3)
DIGITS = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
NOISY = np.clip(DIGITS.astype(np.int64) + rng.integers(-30, 31, size=DIGITS.shape), 0, 255).astype(np.uint8)


def test_psnr_of_a_known_error() -> None:
    a = np.zeros((28, 28), np.uint8)
    b = np.full((28, 28), 51, np.uint8)  # 0.2 everywhere: MSE 0.04, 13.98 dB
    assert quality.psnr_db(a, b) == pytest.approx([10 * np.log10(1 / 0.04)])


def test_identical_images_score_perfect() -> None:
    np.testing.assert_array_equal(quality.psnr_db(DIGITS, DIGITS), [quality.PERFECT_PSNR_DB] * 4)
    np.testing.assert_allclose(quality.ssim(DIGITS, DIGITS), 1.0)


def test_ssim_matches_a_direct_computation() -> None:
    """Window by window, the textbook formula, against the separable-filter version."""
    a, b = DIGITS[0].astype(np.float64) / 255, NOISY[0].astype(np.float64) / 255
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(18):
        for j in range(18):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert quality.ssim(DIGITS[0], NOISY[0])[0] == pytest.approx(np.mean(values), rel=1e-9)


def test_ssim_falls_with_the_error() -> None:
    worse = np.clip(DIGITS.astype(np.int64) + rng.integers(-90, 91, size=DIGITS.shape), 0, 255).astype(np.uint8)
    assert (quality.ssim(DIGITS, NOISY) > quality.ssim(DIGITS, worse)).all()
    assert (quality.ssim(DIGITS, NOISY) < 1).all()


def test_ssim_agrees_with_scikit_image() -> None:
    """skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255), scikit-image 0.26, on these four pairs."""
    expected = [0.975067366668121, 0.9704999773482401, 0.970419483729089, 0.9711075515487901]
    np.testing.assert_allclose(quality.ssim(DIGITS, NOISY), expected, rtol=1e-12)

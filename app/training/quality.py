"""Image quality measures for 8-bit digits: per-image PSNR and SSIM.

Both take uint8 arrays of shape (N, 28, 28) (or (28, 28)) and return one value
per image, so means are "mean per-image PSNR" and "mean SSIM", the figures the
README reports. Pixels are compared as b / 255, i.e. on a peak value of 1.

SSIM is Wang, Bovik, Sheikh and Simoncelli's (IEEE TIP 2004) with its standard
constants: an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, and the
SSIM map averaged over the positions where the window fits inside the image
(18x18 of them on a 28x28 digit), as in the authors' reference implementation.
Computed here in numpy (a separable filter as two small matrix products) rather
than with a new dependency.
"""

from typing import TypeVar

import numpy as np
import torch

# The one PSNR of every measurement (evaluation, the trainers' test figures): a lossless image counts as
# PERFECT_PSNR_DB, not infinity, so means stay finite. MSE_FLOOR is where that cap sits, 1e-10, below the
# smallest MSE two different 8-bit digits can have (1 / (784 * 255**2), about 2e-8): on digits it changes
# nothing but the lossless case. (The losses' own, softer cap is `app.training.loop.LOSS_MSE_OFFSET`.)
MSE_FLOOR = 1e-10
PERFECT_PSNR_DB = 100.0  # = 10 log10(1 / MSE_FLOOR)
WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def psnr_from_mse(mse: Array) -> Array:
    """Mean squared errors of images in [0, 1] (numpy or torch) -> PSNR in dB, at most PERFECT_PSNR_DB."""
    if isinstance(mse, torch.Tensor):
        return 10 * torch.log10(1 / mse.clamp_min(MSE_FLOOR))
    result: np.ndarray = 10 * np.log10(1 / np.maximum(mse, MSE_FLOOR))
    return result


def psnr_db(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of 8-bit images; a perfect image scores PERFECT_PSNR_DB."""
    a, b = _as_batch(original), _as_batch(decoded)
    return psnr_from_mse(((a - b) ** 2).mean(axis=(1, 2)))


def ssim(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian 11x11, sigma 1.5, valid positions only), in [-1, 1]."""
    a, b = _as_batch(original), _as_batch(decoded)
    blur = _blur_matrix(a.shape[1]), _blur_matrix(a.shape[2])

    def filt(x: np.ndarray) -> np.ndarray:
        rows, cols = blur
        out: np.ndarray = rows @ x @ cols.T  # (18, 28) @ (N, 28, 28) @ (28, 18), batched
        return out

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = K1**2, K2**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    result: np.ndarray = ssim_map.mean(axis=(1, 2))
    return result


def _blur_matrix(side: int) -> np.ndarray:
    """(side - 10, side) matrix whose rows are the normalised 1-D Gaussian at each valid offset."""
    x = np.arange(WINDOW) - WINDOW // 2
    g = np.exp(-(x**2) / (2 * SIGMA**2))
    g /= g.sum()
    m = np.zeros((side - WINDOW + 1, side))
    for i in range(side - WINDOW + 1):
        m[i, i : i + WINDOW] = g
    return m


def _as_batch(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64) / 255
    return x[None] if x.ndim == 2 else x

"""Random distortions of training digits, for the regularisation options of `app.training.train_ec`.

Both work on a batch of (N, 784) pixels in [0, 1], draw from the caller's generator (so a seed
fixes them), and return a new batch of the same shape; the autoencoder is then asked to give
back the distorted digit, so they widen the input distribution rather than change the target.

- `shift`: every digit moved by whole pixels, dy and dx each uniform in -n..n, with zeros
  coming in at the edges (an MNIST digit's 20x20 box leaves four blank pixels a side).
- `elastic`: Simard et al.'s elastic distortion (2003): a random displacement field, uniform in
  [-1, 1] per pixel and axis, smoothed by a Gaussian of `sigma` pixels and scaled by `alpha`
  pixels, applied with bilinear sampling.
"""

import torch
import torch.nn.functional as F

SIDE = 28


def shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each digit moved by its own whole-pixel (dy, dx), each in -pixels..pixels."""
    if pixels == 0:
        return x
    n = len(x)
    padded = F.pad(x.reshape(n, SIDE, SIDE), (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    base = torch.arange(SIDE)
    rows = (base + dy[:, None])[:, :, None]
    cols = (base + dx[:, None])[:, None, :]
    moved = padded[torch.arange(n)[:, None, None], rows, cols]
    return moved.reshape(n, SIDE * SIDE)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def elastic(x: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Each digit under its own smooth random displacement field (alpha, sigma in pixels)."""
    if alpha == 0:
        return x
    n = len(x)
    field = torch.rand((n * 2, 1, SIDE, SIDE), generator=generator) * 2 - 1
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    field = F.conv2d(field, k.view(1, 1, 1, -1), padding=(0, r))
    field = F.conv2d(field, k.view(1, 1, -1, 1), padding=(r, 0))
    # pixels -> grid_sample's normalised coordinates, where the image spans [-1, 1] (align_corners=False)
    displacement = field.view(n, 2, SIDE, SIDE).permute(0, 2, 3, 1) * (alpha * 2 / SIDE)
    identity = torch.eye(2, 3).expand(n, 2, 3)
    grid = F.affine_grid(identity, [n, 1, SIDE, SIDE], align_corners=False) + displacement
    images = x.reshape(n, 1, SIDE, SIDE)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.reshape(n, SIDE * SIDE)

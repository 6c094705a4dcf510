"""The detector's photometric augmentation, applied to every image inside the model in training only.

Upstream: SparseOcc@af4d9df models/utils.py (GpuPhotoMetricDistortion, rgb_to_hsv, hsv_to_rgb), called by
models/sparseocc.py (SparseOcc.extract_feat) when ``data_aug.img_color_aug`` is set and the model trains,
before the normalisation. Each image draws its own parameters, each step with probability 1/2:
brightness ±32, contrast ×U(0.5, 1.5) (before or after the HSV steps, chosen per image), saturation
×U(0.5, 1.5), hue ±18°, a channel permutation. Values are not clipped to 0..255 (as upstream).

The draws come from numpy's legacy generator in the official order (all contrast modes first, then per
image: brightness, early contrast; per image: saturation, hue; per image: late contrast, channel swap), so a
seeded ``numpy.random`` reproduces the official parameters; the arithmetic is batched over the images.
"""
from __future__ import annotations

import numpy as np
import torch

BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18.0
_HSV_EPS = 1e-8


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """(M, 3, H, W) RGB 0..255 -> H in [0, 360), S in [0, 1], V 0..255 (upstream rgb_to_hsv)."""
    image = image / 255.0
    max_rgb, argmax_rgb = image.max(-3)
    min_rgb = image.min(-3).values
    deltac = max_rgb - min_rgb
    v = max_rgb
    s = deltac / (max_rgb + _HSV_EPS)
    deltac = torch.where(deltac == 0, torch.ones_like(deltac), deltac)
    rc, gc, bc = torch.unbind(max_rgb.unsqueeze(-3) - image, dim=-3)
    h = torch.stack((bc - gc, (rc - bc) + 2.0 * deltac, (gc - rc) + 4.0 * deltac), dim=-3) / deltac.unsqueeze(-3)
    h = torch.gather(h, -3, argmax_rgb.unsqueeze(-3)).squeeze(-3)
    h = (h / 6.0) % 1.0
    return torch.stack((h * 360.0, s, v * 255.0), dim=-3)


def hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hsv`` (upstream hsv_to_rgb)."""
    h = image[:, 0] / 360.0
    s = image[:, 1]
    v = image[:, 2] / 255.0
    hi = torch.floor(h * 6) % 6
    f = ((h * 6) % 6) - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    hi = hi.long()
    indices = torch.stack([hi, hi + 6, hi + 12], dim=-3)
    out = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), dim=-3)
    return torch.gather(out, -3, indices) * 255.0


def draw_params(num_images: int, rng: np.random.RandomState | None = None) -> dict[str, torch.Tensor]:
    """Per-image parameters in the official draw order; identity values where a step is not taken.
    ``rng``: a ``numpy.random.RandomState``; None = numpy's global generator (as upstream)."""
    rng = np.random if rng is None else rng
    n = num_images
    brightness, contrast_early, contrast_late = np.zeros(n), np.ones(n), np.ones(n)
    saturation, hue = np.ones(n), np.zeros(n)
    perm = np.tile(np.arange(3), (n, 1))
    modes = [rng.randint(2) for _ in range(n)]  # 0: contrast before the HSV steps, 1: after
    for i in range(n):
        if rng.randint(2):
            brightness[i] = rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
        if modes[i] == 0 and rng.randint(2):
            contrast_early[i] = rng.uniform(*CONTRAST_RANGE)
    for i in range(n):
        if rng.randint(2):
            saturation[i] = rng.uniform(*SATURATION_RANGE)
        if rng.randint(2):
            hue[i] = rng.uniform(-HUE_DELTA, HUE_DELTA)
    for i in range(n):
        if modes[i] == 1 and rng.randint(2):
            contrast_late[i] = rng.uniform(*CONTRAST_RANGE)
        if rng.randint(2):
            perm[i] = rng.permutation(3)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {"brightness": as_t(brightness), "contrast_early": as_t(contrast_early), "saturation": as_t(saturation),
            "hue": as_t(hue), "contrast_late": as_t(contrast_late), "perm": torch.as_tensor(perm, dtype=torch.long)}


def photometric_distortion(img: torch.Tensor, rng: np.random.RandomState | None = None) -> torch.Tensor:
    """(M, 3, H, W) float BGR 0..255 -> distorted BGR (new tensor); ``rng`` as in ``draw_params``."""
    params = {k: v.to(img.device) for k, v in draw_params(img.shape[0], rng).items()}
    col = lambda k: params[k].to(img.dtype).view(-1, 1, 1)  # noqa: E731
    x = img[:, [2, 1, 0]]  # BGR -> RGB
    x = (x + col("brightness")[:, None]) * col("contrast_early")[:, None]
    hsv = rgb_to_hsv(x)
    h = hsv[:, 0] + col("hue")
    h = torch.where(h > 360, h - 360, h)
    h = torch.where(h < 0, h + 360, h)
    x = hsv_to_rgb(torch.stack((h, hsv[:, 1] * col("saturation"), hsv[:, 2]), dim=1))
    x = x * col("contrast_late")[:, None]
    x = torch.gather(x, 1, params["perm"].view(-1, 3, 1, 1).expand_as(x))
    return x[:, [2, 1, 0]]  # RGB -> BGR


__all__ = ["photometric_distortion", "draw_params", "rgb_to_hsv", "hsv_to_rgb"]

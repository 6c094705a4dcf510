"""Per-sample transforms with the official semantics (flashocc.md §4.3-§4.5, §3.7, §12.1-§12.3, §12.11).

Images are decoded with PIL, resized (bicubic, antialiased), cropped (zero fill outside), flipped and
rotated exactly like ``PrepareImageInputs``; ``post_rot``/``post_tran`` come from
``flashocc.geometry.image_aug_matrices``. Train-time parameters are random, test-time fixed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from flashocc.geometry import bda_matrix, image_aug_matrices

if TYPE_CHECKING:
    from flashocc.data.dataset import DataConfig

# mmcv ``imnormalize`` constants of the official configs (flashocc.md §4.3).
IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ImageAug:
    """One camera's image augmentation; all frames of a sample reuse it (flashocc.md §4.3)."""

    resize: float
    resize_dims: tuple[int, int]        # (W, H) after the resize
    crop: tuple[int, int, int, int]     # (left, top, right, bottom) in resized pixels
    flip: bool
    rotate_deg: float

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """post_rot (3, 3) and post_tran (3,) float32: original pixels -> augmented pixels."""
        return image_aug_matrices(self.resize, self.crop, self.flip, self.rotate_deg)


def sample_image_aug(config: DataConfig, image_size: tuple[int, int], rng: np.random.Generator | None,
                     train: bool) -> ImageAug:
    """Draw (train) or fix (test) the augmentation for an image of ``image_size`` = (W, H).

    Mirrors ``sample_augmentation``: base scale input_W / W, bottom crop (crop_h = (0, 0)), horizontal
    centre crop at test time. The official code uses each image's own size, so we do too.
    """
    width, height = image_size
    out_h, out_w = config.input_size
    resize = out_w / width
    if train:
        resize += float(rng.uniform(*config.resize))
    else:
        resize += config.resize_test
    new_w, new_h = int(width * resize), int(height * resize)
    if train:
        crop_h = int((1 - rng.uniform(*config.crop_h)) * new_h) - out_h
        crop_w = int(rng.uniform(0, max(0, new_w - out_w)))
        flip = bool(config.flip and rng.choice([0, 1]))
        rotate = float(rng.uniform(*config.rot))
    else:
        crop_h = int((1 - float(np.mean(config.crop_h))) * new_h) - out_h
        crop_w = int(max(0, new_w - out_w) / 2)
        flip, rotate = False, 0.0
    return ImageAug(resize, (new_w, new_h), (crop_w, crop_h, crop_w + out_w, crop_h + out_h), flip, rotate)


def load_image(path: str | os.PathLike, token: str) -> Image.Image:
    """Decode an RGB image; errors name the sample token and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample {token}: image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the try
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"sample {token}: cannot decode image {path} ({type(exc).__name__}: {exc})") from exc


def augment_image(img: Image.Image, aug: ImageAug) -> Image.Image:
    """resize -> crop -> flip -> rotate, exactly as ``img_transform_core`` (flashocc.md §4.3, §12.2).

    Official quirk (§12.2): PIL's antialiased bicubic resize (its default), not torch interpolate;
    crops past the border are zero-filled by PIL; ``rotate`` is counter-clockwise, nearest, no expand.
    """
    img = img.resize(aug.resize_dims, Image.Resampling.BICUBIC)
    img = img.crop(aug.crop)
    if aug.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.rotate_deg != 0.0:
        img = img.rotate(aug.rotate_deg)
    return img


def normalize_image(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in **BGR** channel order.

    Official quirk (flashocc.md §12.1): PIL gives RGB and mmcv ``imnormalize(to_rgb=True)`` swaps it to
    BGR before subtracting (123.675, 116.28, 103.53) and multiplying by 1 / (58.395, 57.12, 57.375) per
    channel index, so channel 0 is blue normalised with the *red* statistics. The released weights expect it.
    A 256-entry table per channel gives the same float32 values ~10x faster than arithmetic on the image.
    """
    rgb = np.asarray(img, dtype=np.uint8)                      # (H, W, 3)
    out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    for k, table in enumerate(_normalisation_tables()):
        np.take(table, rgb[..., 2 - k], out=out[k])            # output channel k = B, G, R
    return torch.from_numpy(out)


@lru_cache(maxsize=1)
def _normalisation_tables() -> tuple[np.ndarray, ...]:
    values = np.arange(256, dtype=np.float32)
    return tuple((values - np.float32(m)) * np.float32(1.0 / s) for m, s in zip(IMAGE_MEAN, IMAGE_STD))


def sample_bda_flips(config: DataConfig, rng: np.random.Generator | None, train: bool) -> tuple[bool, bool]:
    """(flip_dx, flip_dy) of the BEV augmentation; test time never flips (flashocc.md §4.4)."""
    if not train:
        return False, False
    return bool(rng.uniform() < config.flip_dx_ratio), bool(rng.uniform() < config.flip_dy_ratio)


def bda_for_flips(flip_dx: bool, flip_dy: bool) -> np.ndarray:
    """3x3 float32 bda; rotation and scale stay off because they are never applied to the occupancy GT."""
    return bda_matrix(0.0, 1.0, flip_dx, flip_dy)


def flip_volume(volume: np.ndarray, flip_dx: bool, flip_dy: bool) -> np.ndarray:
    """Flip an [x, y, z] volume to match the bda (flashocc.md §4.5, §12.11).

    flip_dx mirrors dim 0, flip_dy dim 1: exact because the grid is symmetric about the ego (±40 m).
    """
    if flip_dx:
        volume = volume[::-1]
    if flip_dy:
        volume = volume[:, ::-1]
    return np.ascontiguousarray(volume)


def load_points(path: str | os.PathLike, token: str, num_features: int = 5) -> np.ndarray:
    """LiDAR sweep ``.bin``: (M, 5) float32 x, y, z, intensity, ring in the LiDAR frame."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample {token}: LiDAR file not found: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % num_features:
        raise ValueError(f"sample {token}: {path} holds {raw.size} float32 values, not a multiple of "
                         f"{num_features} (x, y, z, intensity, ring)")
    return raw.reshape(-1, num_features)


def lidar_to_camera(lidar2ego: np.ndarray, lidar_ego2global: np.ndarray, sensor2ego: np.ndarray,
                    cam_ego2global: np.ndarray) -> np.ndarray:
    """4x4 LiDAR -> camera: lidar -> lidar-ego -> global -> camera-ego -> camera (flashocc.md §3.7).

    Uses the LiDAR keyframe's ego pose and the camera's own ego pose, as ``PointToMultiViewDepth``.
    """
    lidar2global = np.asarray(lidar_ego2global, np.float64) @ np.asarray(lidar2ego, np.float64)
    cam2global = np.asarray(cam_ego2global, np.float64) @ np.asarray(sensor2ego, np.float64)
    return np.linalg.inv(cam2global) @ lidar2global


def lidar_depth_map(points: np.ndarray, lidar2cam: np.ndarray, intrinsics: np.ndarray, post_rot: np.ndarray,
                    post_tran: np.ndarray, image_hw: tuple[int, int],
                    depth_range: tuple[float, float] = (1.0, 45.0)) -> np.ndarray:
    """(H, W) float32 depth in metres of the nearest LiDAR point per augmented pixel; 0 = no point.

    ``PointToMultiViewDepth`` (downsample 1, flashocc.md §3.7): project with K, apply the image
    augmentation, round to integer pixels, keep 0 <= u < W, 0 <= v < H and depth in [1, 45), and keep the
    nearest point per pixel. BDA does not touch it.
    """
    height, width = image_hw
    pts = np.asarray(points, np.float64)[:, :3]
    lidar2img = np.eye(4)
    lidar2img[:3, :3] = np.asarray(intrinsics, np.float64)
    lidar2img = lidar2img @ lidar2cam
    cam = pts @ lidar2img[:3, :3].T + lidar2img[:3, 3]
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvd = np.concatenate([cam[:, :2] / depth[:, None], depth[:, None]], axis=1)
    uvd = uvd @ np.asarray(post_rot, np.float64).T + np.asarray(post_tran, np.float64)
    uv = np.round(uvd[:, :2])
    depth = uvd[:, 2]
    keep = ((uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
            & (depth >= depth_range[0]) & (depth < depth_range[1]))
    u, v, depth = uv[keep, 0].astype(np.int64), uv[keep, 1].astype(np.int64), depth[keep]
    ranks = v * width + u
    order = np.lexsort((depth, ranks))          # by pixel, nearest first
    ranks, u, v, depth = ranks[order], u[order], v[order], depth[order]
    first = np.ones(ranks.shape, dtype=bool)
    first[1:] = ranks[1:] != ranks[:-1]
    out = np.zeros((height, width), dtype=np.float32)
    out[v[first], u[first]] = depth[first]
    return out

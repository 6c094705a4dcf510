"""Per-sample transforms with the official semantics.

Upstream: FlashOCC@4084861 projects/mmdet3d_plugin/datasets/pipelines/loading.py (PrepareImageInputs,
LoadAnnotationsBEVDepth, LoadOccGTFromFile, PointToMultiViewDepth); the quirks are explained in
docs/official-behaviour.md.

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

from flashocc.errors import ConfigError, DataError, MissingFileError
from flashocc.geometry import bda_matrix, image_aug_matrices

if TYPE_CHECKING:
    from flashocc.data.dataset import DataConfig

# mmcv ``imnormalize`` constants of the official pipeline (loading.py, mmlabNormalize).
IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ImageAug:
    """One camera's image augmentation; all frames of a sample reuse it (PrepareImageInputs.get_inputs)."""

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
    if new_w < 1 or new_h < 1:
        raise ConfigError(f"data.resize / data.resize_test: scale {resize:.3f} leaves no pixels of a {width}x{height} "
                          f"image; expected input_W / image_W ({out_w / width:.3f}) + the resize offset > 0")
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
    """Decode an RGB image; errors name the sample token and the file.

    A truncated JPEG or PNG is an error, not a grey-filled image: PIL raises on it unless
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set, which flashocc never does.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"sample {token}: image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the try
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"sample {token}: cannot decode image {path} ({type(exc).__name__}: {exc}); expected a "
                        f"complete JPEG or PNG file") from exc


# How far (as a fraction of the image width / height) the principal point may sit from the image centre.
# Real nuScenes cameras are at most ~6 % off (cy = 501 of 900 for CAM_BACK_RIGHT in the fixture) and the
# synthetic rig scales those same intrinsics. Intrinsics meant for an image s times larger put the principal
# point near s/2 of the size, so 0.15 refuses every size mismatch outside s in [0.7, 1.3] (1600x900
# intrinsics with a 704x396 image: s = 2.27; the reverse: s = 0.44) while leaving 2.5x headroom over real
# calibrations. A mismatch inside that band is caught across the cameras of a sample (check_sample_sizes).
PRINCIPAL_POINT_TOLERANCE = 0.15
# Cameras whose principal points agree within this fraction have intrinsics for the same image size;
# their images must then agree in size within it too (nuScenes: all six are 1600x900).
SAME_SCALE_TOLERANCE = 0.05


def check_image_fits_intrinsics(size: tuple[int, int], intrinsics: np.ndarray, path: Path, token: str) -> None:
    """Refuse an image of ``size`` = (W, H) whose intrinsics were made for another image size."""
    width, height = size
    cx, cy = float(intrinsics[0][2]), float(intrinsics[1][2])
    off_x, off_y = cx / width - 0.5, cy / height - 0.5
    if abs(off_x) > PRINCIPAL_POINT_TOLERANCE or abs(off_y) > PRINCIPAL_POINT_TOLERANCE:
        raise DataError(
            f"sample {token}: {path} is {width}x{height} pixels, but its intrinsics put the principal point at "
            f"({cx:.1f}, {cy:.1f}); expected it within {PRINCIPAL_POINT_TOLERANCE:.0%} of the image centre "
            f"({width / 2:.0f}, {height / 2:.0f}). The intrinsics fit an image of about {2 * cx:.0f}x{2 * cy:.0f}: "
            f"was the image resized or regenerated at another size? Rebuild the info files (or the synthetic "
            f"set) so images and intrinsics match")


def check_sample_sizes(images: list[tuple[str, Path, tuple[int, int], np.ndarray]], token: str) -> None:
    """Cameras of one sample with intrinsics for the same image size must have images of that size.

    ``images``: (camera name, path, (W, H), intrinsics). A set that mixes two image sizes (an
    interrupted regeneration at another size) shows up here even where each image alone passes
    ``check_image_fits_intrinsics``.
    """
    def close(a: float, b: float) -> bool:
        return abs(a - b) <= SAME_SCALE_TOLERANCE * max(abs(a), abs(b))

    for i, (name_a, path_a, size_a, k_a) in enumerate(images):
        for name_b, path_b, size_b, k_b in images[i + 1:]:
            same_scale = close(k_a[0][2], k_b[0][2]) and close(k_a[1][2], k_b[1][2])
            if same_scale and not (close(size_a[0], size_b[0]) and close(size_a[1], size_b[1])):
                raise DataError(
                    f"sample {token}: {name_a} image {path_a} is {size_a[0]}x{size_a[1]} but {name_b} image "
                    f"{path_b} is {size_b[0]}x{size_b[1]}, although their intrinsics are for the same image size "
                    f"(principal points ({k_a[0][2]:.1f}, {k_a[1][2]:.1f}) and ({k_b[0][2]:.1f}, {k_b[1][2]:.1f})); "
                    f"expected equal sizes. Does the set mix images of two sizes (an interrupted regeneration)?")


def augment_image(img: Image.Image, aug: ImageAug) -> Image.Image:
    """resize -> crop -> flip -> rotate, exactly as ``PrepareImageInputs.img_transform_core``.

    Official quirk (docs/official-behaviour.md#image-augmentation): PIL's antialiased bicubic resize
    (its default), not torch interpolate; crops past the border are zero-filled by PIL; ``rotate`` is
    counter-clockwise, nearest, no expand.
    """
    img = img.resize(aug.resize_dims, Image.Resampling.BICUBIC)
    return flip_rotate(img.crop(aug.crop), aug)


def flip_rotate(img: Image.Image, aug: ImageAug) -> Image.Image:
    """The flip and rotation of ``augment_image`` on an already resized and cropped image (shared with
    the reduced-decode path, flashocc.data.jpeg.augment_reduced)."""
    if aug.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.rotate_deg != 0.0:
        img = img.rotate(aug.rotate_deg)
    return img


def normalize_image(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in **BGR** channel order.

    Official quirk (loading.py, mmlabNormalize; docs/official-behaviour.md#bgr-normalisation): PIL gives
    RGB and mmcv ``imnormalize(to_rgb=True)`` swaps it to BGR before subtracting (123.675, 116.28, 103.53)
    and multiplying by 1 / (58.395, 57.12, 57.375) per channel index, so channel 0 is blue normalised
    with the *red* statistics. The released weights expect it.
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
    """(flip_dx, flip_dy) of the BEV augmentation; test time never flips
    (LoadAnnotationsBEVDepth.sample_bda_augmentation)."""
    if not train:
        return False, False
    return bool(rng.uniform() < config.flip_dx_ratio), bool(rng.uniform() < config.flip_dy_ratio)


def bda_for_flips(flip_dx: bool, flip_dy: bool) -> np.ndarray:
    """3x3 float32 bda; rotation and scale stay off because they are never applied to the occupancy GT."""
    return bda_matrix(0.0, 1.0, flip_dx, flip_dy)


def flip_volume(volume: np.ndarray, flip_dx: bool, flip_dy: bool) -> np.ndarray:
    """Flip an [x, y, z] volume to match the bda (LoadOccGTFromFile;
    docs/official-behaviour.md#bev-augmentation).

    flip_dx mirrors dim 0, flip_dy dim 1: exact because the grid is symmetric about the ego (±40 m).
    """
    if flip_dx:
        volume = volume[::-1]
    if flip_dy:
        volume = volume[:, ::-1]
    return np.ascontiguousarray(volume)


def load_points(path: str | os.PathLike, token: str, num_features: int = 5) -> np.ndarray:
    """LiDAR sweep ``.bin``: (M, 5) float32 x, y, z, intensity, ring in the LiDAR frame.

    A size that is not a whole number of points (a truncated copy) or a non-finite value is a DataError:
    ``np.fromfile`` would silently drop the tail, and one NaN point would poison the depth targets.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"sample {token}: LiDAR file not found: {path}")
    stride = 4 * num_features
    size = path.stat().st_size
    if size % stride:
        raise DataError(f"sample {token}: LiDAR file {path} is {size} bytes, expected a multiple of {stride} "
                        f"({num_features} float32 per point: x, y, z, intensity, ring); is it truncated?")
    points = np.fromfile(path, dtype=np.float32).reshape(-1, num_features)
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise DataError(f"sample {token}: LiDAR file {path} holds {int(bad.sum())} point(s) with NaN or infinite "
                        f"values (first at point {int(np.argmax(bad))} of {len(points)}); expected finite points")
    return points


def lidar_to_camera(lidar2ego: np.ndarray, lidar_ego2global: np.ndarray, sensor2ego: np.ndarray,
                    cam_ego2global: np.ndarray) -> np.ndarray:
    """4x4 LiDAR -> camera: lidar -> lidar-ego -> global -> camera-ego -> camera.

    Uses the LiDAR keyframe's ego pose and the camera's own ego pose, as ``PointToMultiViewDepth``
    (docs/official-behaviour.md#lidar-depth-targets).
    """
    lidar2global = np.asarray(lidar_ego2global, np.float64) @ np.asarray(lidar2ego, np.float64)
    cam2global = np.asarray(cam_ego2global, np.float64) @ np.asarray(sensor2ego, np.float64)
    return np.linalg.inv(cam2global) @ lidar2global


def lidar_depth_map(points: np.ndarray, lidar2cam: np.ndarray, intrinsics: np.ndarray, post_rot: np.ndarray,
                    post_tran: np.ndarray, image_hw: tuple[int, int],
                    depth_range: tuple[float, float] = (1.0, 45.0)) -> np.ndarray:
    """(H, W) float32 depth in metres of the nearest LiDAR point per augmented pixel; 0 = no point.

    ``PointToMultiViewDepth`` (downsample 1): project with K, apply the image
    augmentation, round to integer pixels, keep 0 <= u < W, 0 <= v < H and depth in [1, 45), and keep the
    nearest point per pixel. BDA does not touch it.
    """
    height, width = image_hw
    pts = np.asarray(points, np.float64)[:, :3]
    lidar2img = np.eye(4)
    lidar2img[:3, :3] = np.asarray(intrinsics, np.float64)
    lidar2img = lidar2img @ lidar2cam
    # Column arithmetic: numpy's (M, 3) @ (3, 3) matmul was ~4x slower here on a 10-sweep cloud (2 cores).
    cam = _affine(pts, lidar2img[:3, :3], lidar2img[:3, 3])
    depth = cam[:, 2]
    post_rot, post_tran = np.asarray(post_rot, np.float64), np.asarray(post_tran, np.float64)
    if post_rot[2].tolist() == [0.0, 0.0, 1.0] and post_tran[2] == 0.0:
        # The image augmentation keeps the depth, so points outside the depth range can go before the work.
        near = (depth >= depth_range[0]) & (depth < depth_range[1])
        cam, depth = cam[near], depth[near]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvd = np.stack([cam[:, 0] / depth, cam[:, 1] / depth, depth], axis=1)
    uvd = _affine(uvd, post_rot, post_tran)
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


def _affine(points: np.ndarray, rot: np.ndarray, tran: np.ndarray) -> np.ndarray:
    """points (M, 3) @ rot.T + tran, float64, one output column at a time."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return np.stack([x * rot[i, 0] + y * rot[i, 1] + z * rot[i, 2] + tran[i] for i in range(3)], axis=1)

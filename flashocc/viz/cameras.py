"""Occupancy projected onto the six camera images, laid out 2x3 like the official visualiser.

Voxel centres (ego frame) are projected with ``flashocc.geometry.project_to_image`` and drawn as
squares of the voxel's projected size, far to near, then blended over the photo. The calibration
is passed explicitly (``sensor2ego`` camera -> occupancy ego frame, ``intrinsics``), so this
module does not depend on an info-file format; ``flashocc.viz.run`` does the info-file glue.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from flashocc.geometry import NUSCENES_CAMERAS, project_to_image
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.common import check_labels, check_mask, draw_title, occupied, palette, tile

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]


@dataclass(frozen=True)
class CameraCalib:
    """One camera's calibration: ``sensor2ego`` (4, 4) camera (x right, y down, z forward) -> the
    occupancy's ego frame, and ``intrinsics`` (3, 3) in pixels of the full-size image."""

    sensor2ego: np.ndarray
    intrinsics: np.ndarray


def as_image(image: ImageLike) -> Image.Image:
    """A PIL RGB image from a PIL image, an (H, W, 3) uint8 RGB array or a file path."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"camera image array: expected (H, W, 3) uint8 RGB, found {image.shape} {image.dtype}")
        return Image.fromarray(image, "RGB")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"camera image not found: {path}")
    with Image.open(path) as im:
        return im.convert("RGB")


def _surface_voxels(occ: np.ndarray) -> np.ndarray:
    """Occupied voxels with at least one free 6-neighbour; the others are hidden by them."""
    padded = np.pad(occ, 1, constant_values=False)
    inner = np.ones_like(occ)
    for axis in range(3):
        for shift in (-1, 1):
            sl = [slice(1, -1)] * 3
            sl[axis] = slice(1 + shift, occ.shape[axis] + 1 + shift)
            inner &= padded[tuple(sl)]
    return occ & ~inner


def overlay_occupancy(
    image: ImageLike,
    sensor2ego: np.ndarray,
    intrinsics: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    alpha: float = 0.5,
    width: int | None = None,
    min_depth: float = 1.0,
) -> Image.Image:
    """One camera image with the occupancy drawn over it, semi-transparent (``alpha`` 0..1).

    ``labels`` (Dx, Dy, Dz) [x, y, z] in the ego frame; ``sensor2ego`` maps camera coordinates to
    that frame and ``intrinsics`` is for the full-size image. ``width`` resizes the output (the
    projection is scaled accordingly). Voxels nearer than ``min_depth`` metres are skipped.
    """
    photo = as_image(image)
    labels = check_labels(labels, grid)
    occ = _surface_voxels(occupied(labels, grid, check_mask(mask, grid)))
    k = np.asarray(intrinsics, dtype=np.float64).copy()
    if width is not None and width != photo.width:
        factor = width / photo.width
        photo = photo.resize((width, max(int(round(photo.height * factor)), 1)), Image.BILINEAR)
        k[:2] *= factor
    idx = np.argwhere(occ)
    centres = np.asarray(grid.lower) + (idx + 0.5) * np.asarray(grid.voxel_size)
    uv, depth = project_to_image(centres, np.asarray(sensor2ego, dtype=np.float64), k)
    half = 0.5 * k[0, 0] * max(grid.voxel_size) / np.maximum(depth, 1e-6)
    inside = ((depth > min_depth) & (uv[:, 0] + half >= 0) & (uv[:, 0] - half < photo.width)
              & (uv[:, 1] + half >= 0) & (uv[:, 1] - half < photo.height))
    if not inside.any():
        return photo
    idx, uv, depth, half = idx[inside], uv[inside], depth[inside], half[inside]
    colors = palette(grid)[labels[idx[:, 0], idx[:, 1], idx[:, 2]]]
    order = np.argsort(-depth, kind="stable")  # nearest drawn last, so it stays on top
    painted = photo.copy()
    coverage = Image.new("L", photo.size, 0)
    draw, cover = ImageDraw.Draw(painted), ImageDraw.Draw(coverage)
    boxes = np.stack([uv[:, 0] - half, uv[:, 1] - half, uv[:, 0] + half, uv[:, 1] + half], axis=1)
    edge = (colors * 0.6).astype(np.uint8)
    for box, fill, line, h in zip(boxes[order].tolist(), colors[order].tolist(), edge[order].tolist(),
                                  half[order].tolist()):
        # Outlines only where a voxel is big enough on screen to show its edges.
        draw.rectangle(box, fill=tuple(fill), outline=tuple(line) if h > 3 else None)
        cover.rectangle(box, fill=255)
    blended = Image.blend(photo, painted, float(np.clip(alpha, 0.0, 1.0)))
    return Image.composite(blended, photo, coverage)


def _calib_of(cam: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        return np.asarray(cam.sensor2ego, dtype=np.float64), np.asarray(cam.intrinsics, dtype=np.float64)
    except AttributeError as exc:
        raise ValueError(f"camera calibration: expected an object with 'sensor2ego' (4x4) and 'intrinsics' "
                         f"(3x3) such as CameraCalib or CameraInfo, found {type(cam).__name__}") from exc


def render_cameras(
    images: Sequence[ImageLike] | Mapping[str, ImageLike],
    cams: Sequence[Any] | Mapping[str, Any],
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    names: Sequence[str] = NUSCENES_CAMERAS,
    alpha: float = 0.5,
    tile_width: int = 480,
    mirror_back: bool = False,
) -> Image.Image:
    """Six camera images with the occupancy overlaid, in a 2x3 grid.

    ``images`` and ``cams`` are either sequences in the order of ``names`` (default
    ``NUSCENES_CAMERAS``: FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_LEFT, BACK, BACK_RIGHT, which is
    also the grid order: front row, then back row) or mappings keyed by camera name. Each ``cams``
    entry has ``sensor2ego`` (camera -> occupancy ego frame) and ``intrinsics`` (CameraCalib or
    ``flashocc.data.infos.CameraInfo``). ``mirror_back`` flips the back row horizontally, as the
    official visualiser does (FlashOCC@4084861 tools/analysis_tools/vis_occ.py, main).
    """
    if isinstance(images, Mapping):
        missing = [n for n in names if n not in images]
        if missing:
            raise ValueError(f"render_cameras: no image for {missing}; found {sorted(images)}")
        images = [images[n] for n in names]
    if isinstance(cams, Mapping):
        missing = [n for n in names if n not in cams]
        if missing:
            raise ValueError(f"render_cameras: no calibration for {missing}; found {sorted(cams)}")
        cams = [cams[n] for n in names]
    if not len(images) == len(cams) == len(names):
        raise ValueError(f"render_cameras: expected {len(names)} images and calibrations ({', '.join(names)}), "
                         f"found {len(images)} images and {len(cams)} calibrations")
    tiles = []
    for image, cam, name in zip(images, cams, names):
        sensor2ego, intrinsics = _calib_of(cam)
        view = overlay_occupancy(image, sensor2ego, intrinsics, labels, mask=mask, grid=grid, alpha=alpha,
                                 width=tile_width)
        if mirror_back and "BACK" in name:
            view = ImageOps.mirror(view)
        draw_title(view, name, size=14)
        tiles.append(view)
    return tile(tiles, columns=3)

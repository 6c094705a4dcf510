"""A quick camera overlay: occupied voxel centres projected onto the six images as small squares.

``overlay_occupancy`` (viz/cameras.py) draws every surface voxel as a PIL rectangle of its projected
size, which takes seconds per image when much is occupied. Here the squares are capped at
``max_radius`` pixels and painted with numpy through a depth buffer (the nearest voxel wins each
pixel), so an image costs a few tens of milliseconds: what ``flashocc demo`` needs on 2 CPU cores.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from flashocc.geometry import NUSCENES_CAMERAS, project_to_image
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.cameras import ImageLike, _calib_of, _surface_voxels, as_image
from flashocc.viz.common import check_labels, check_mask, draw_title, occupied, palette, tile


def surface_points(labels: np.ndarray, mask: np.ndarray | None = None,
                   grid: OccGrid = OCC3D_NUSCENES) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 3) in the ego frame and class colours (N, 3) of the occupied voxels with a free
    neighbour (the others are hidden behind them in every view)."""
    labels = check_labels(labels, grid)
    idx = np.argwhere(_surface_voxels(occupied(labels, grid, check_mask(mask, grid))))
    centres = np.asarray(grid.lower) + (idx + 0.5) * np.asarray(grid.voxel_size)
    return centres, palette(grid)[labels[idx[:, 0], idx[:, 1], idx[:, 2]]].astype(np.float32)


def overlay_points(image: ImageLike, sensor2ego: np.ndarray, intrinsics: np.ndarray, centres: np.ndarray,
                   colors: np.ndarray, voxel: float = 0.4, alpha: float = 0.6, width: int | None = None,
                   min_depth: float = 1.0, max_radius: int = 2) -> Image.Image:
    """``image`` with ``centres`` (N, 3, ego frame; ``surface_points``) painted in ``colors``, blended
    by ``alpha``; ``intrinsics`` are for the image as given, ``width`` resizes it."""
    photo = as_image(image)
    k = np.asarray(intrinsics, dtype=np.float64).copy()
    if width is not None and width != photo.width:
        factor = width / photo.width
        photo = photo.resize((width, max(int(round(photo.height * factor)), 1)), Image.BILINEAR)
        k[:2] *= factor
    w, h = photo.size
    ego2cam = np.linalg.inv(np.asarray(sensor2ego, dtype=np.float64))
    # Depth first: behind-camera points are dropped before the (more costly) projection.
    depth = centres @ ego2cam[2, :3] + ego2cam[2, 3]
    ahead = depth > min_depth
    if not ahead.any():
        return photo
    uv, depth = project_to_image(centres[ahead], np.asarray(sensor2ego, dtype=np.float64), k)
    colors = colors[ahead]
    keep = (uv[:, 0] > -max_radius) & (uv[:, 0] < w + max_radius) & (uv[:, 1] > -max_radius) \
        & (uv[:, 1] < h + max_radius)
    if not keep.any():
        return photo
    uv, depth, colors = uv[keep], depth[keep], colors[keep]
    radius = np.clip(np.round(0.5 * k[0, 0] * voxel / depth), 0, max_radius).astype(np.int64)
    u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
    pix, dep, which = [], [], []
    for dx in range(-max_radius, max_radius + 1):
        for dy in range(-max_radius, max_radius + 1):
            sel = np.flatnonzero(radius >= max(abs(dx), abs(dy)))
            x, y = u[sel] + dx, v[sel] + dy
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            pix.append((y * w + x)[inside])
            dep.append(depth[sel][inside])
            which.append(sel[inside])
    pix, dep, which = np.concatenate(pix), np.concatenate(dep), np.concatenate(which)
    order = np.lexsort((dep, pix))            # by pixel, nearest first
    pix, which = pix[order], which[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    pix, which = pix[first], which[first]
    rgb = np.asarray(photo, dtype=np.float32).reshape(-1, 3).copy()
    rgb[pix] = (1 - alpha) * rgb[pix] + alpha * colors[which]
    return Image.fromarray(rgb.reshape(h, w, 3).round().astype(np.uint8), "RGB")


def render_camera_points(images: Sequence[ImageLike], cams: Sequence[Any], labels: np.ndarray,
                         mask: np.ndarray | None = None, grid: OccGrid = OCC3D_NUSCENES,
                         names: Sequence[str] = NUSCENES_CAMERAS, alpha: float = 0.6,
                         tile_width: int = 352) -> Image.Image:
    """The cameras (in ``names`` order: front row, then back row) with ``overlay_points``, 2x3 tiles."""
    if not len(images) == len(cams) == len(names):
        raise ValueError(f"render_camera_points: expected {len(names)} images and calibrations "
                         f"({', '.join(names)}), found {len(images)} images and {len(cams)} calibrations")
    centres, colors = surface_points(labels, mask, grid)
    tiles = []
    for image, cam, name in zip(images, cams, names):
        sensor2ego, intrinsics = _calib_of(cam)
        view = overlay_points(image, sensor2ego, intrinsics, centres, colors, max(grid.voxel_size), alpha,
                              tile_width)
        draw_title(view, name, size=12)
        tiles.append(view)
    return tile(tiles, columns=3)

"""Top-down (BEV) class maps: each (x, y) column shows its highest occupied class.

Image layout: ego forward (+x) is up and ego left (+y) is left, so row ``r`` holds x index
``Dx - 1 - r`` and column ``c`` holds y index ``Dy - 1 - c``. The official panoptic visualiser
(FlashOCC@4084861 tools/vis_occ.py) uses the same highest-voxel rule but writes the raw [x, y] array, which puts
forward down; we flip so the picture reads like a map seen from above with the car facing up.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.common import (
    BACKGROUND, EGO_BOX_LOWER, EGO_BOX_UPPER, EGO_COLOR, check_labels, check_mask, draw_legend, legend_entries,
    occupied, palette,
)


def bev_labels(labels: np.ndarray, grid: OccGrid = OCC3D_NUSCENES, mask: np.ndarray | None = None) -> np.ndarray:
    """(Dx, Dy) class of the highest drawn voxel per column, ``grid.free_label`` where the column is empty."""
    labels = check_labels(labels, grid)
    occ = occupied(labels, grid, check_mask(mask, grid))
    dz = grid.shape[2]
    # argmax over the reversed z axis finds the first occupied voxel from the top.
    top = dz - 1 - np.argmax(occ[:, :, ::-1], axis=2)
    out = np.take_along_axis(labels, top[:, :, None], axis=2)[:, :, 0].astype(np.int64)
    out[~occ.any(axis=2)] = grid.free_label
    return out


def to_map_orientation(columns: np.ndarray) -> np.ndarray:
    """Turn an [x, y, ...] array into image rows/columns: forward up, left on the left."""
    return columns[::-1, ::-1]


def colorize_bev(classes: np.ndarray, colors: np.ndarray, empty: int, background=BACKGROUND) -> np.ndarray:
    """(Dx, Dy) class ids -> (Dx, Dy, 3) uint8 in map orientation; ``empty`` cells get ``background``."""
    table = np.asarray(colors, dtype=np.uint8).copy()
    table[empty] = background
    return table[to_map_orientation(classes)]


def draw_ego_marker(image: Image.Image, grid: OccGrid, scale: int) -> None:
    """Outline of the ego car with a notch at the front, in place (the BEV is ``scale`` px per voxel)."""
    dx, dy = grid.shape[:2]

    def pixel(x: float, y: float) -> tuple[float, float]:
        col = (dy - (y - grid.lower[1]) / grid.voxel_size[1]) * scale
        row = (dx - (x - grid.lower[0]) / grid.voxel_size[0]) * scale
        return col, row

    (x0, y0), (x1, y1) = EGO_BOX_LOWER[:2], EGO_BOX_UPPER[:2]
    c0, r0 = pixel(x1, y1)  # front-left corner is the top-left of the picture
    c1, r1 = pixel(x0, y0)
    draw = ImageDraw.Draw(image)
    draw.rectangle([c0, r0, c1, r1], fill=EGO_COLOR)
    mid = (c0 + c1) / 2
    draw.polygon([(c0 + 1, r0 + 1), (c1 - 1, r0 + 1), (mid, r0 - 0.6 * (c1 - c0))], fill=EGO_COLOR)


def render_bev(
    labels: np.ndarray,
    grid: OccGrid = OCC3D_NUSCENES,
    scale: int = 4,
    mask: np.ndarray | None = None,
    draw_ego: bool = True,
    legend: bool = False,
) -> Image.Image:
    """Top-down class map of an occupancy volume as an RGB image.

    ``labels`` is (Dx, Dy, Dz) [x, y, z] in the ego frame; ``mask`` (same shape, e.g. ``mask_camera``)
    hides voxels where it is False. Each voxel column becomes ``scale`` x ``scale`` pixels of its
    highest drawn class colour (``grid.colors``); empty columns are white. The image is
    (Dy*scale) wide and (Dx*scale) tall, forward up, left on the left; ``legend`` adds a strip on
    the right listing the classes present.
    """
    if scale < 1:
        raise ValueError(f"render_bev: scale must be a positive integer, found {scale}")
    classes = bev_labels(labels, grid, mask)
    rgb = colorize_bev(classes, palette(grid), grid.free_label)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if draw_ego:
        draw_ego_marker(image, grid, scale)
    if legend:
        image = add_legend_strip(image, legend_entries(classes, grid))
    return image


def add_legend_strip(image: Image.Image, entries, width: int = 190, text_size: int = 14) -> Image.Image:
    """Return ``image`` widened by a white strip on the right holding the legend ``entries``."""
    out = Image.new("RGB", (image.width + width, image.height), BACKGROUND)
    out.paste(image, (0, 0))
    draw_legend(out, entries, (image.width + 12, 12), size=text_size)
    return out

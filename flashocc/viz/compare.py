"""Prediction vs ground truth: 3D views and BEV maps side by side, plus an error map.

Per voxel (inside ``mask`` when given, e.g. the GT ``mask_camera`` that mIoU uses):
correct (both occupied, same class), wrong class (both occupied, classes differ), missed (GT
occupied, prediction free) and false occupied (prediction occupied, GT free).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.bev import add_legend_strip, colorize_bev, draw_ego_marker, render_bev
from flashocc.viz.common import (
    BACKGROUND, check_labels, check_mask, draw_title, legend_entries, occupied, tile,
)
from flashocc.viz.render import ChaseCamera, render_color_ids, render_voxels

# Error codes of ``error_volume``; NONE = both free (or outside the mask).
NONE, CORRECT, WRONG_CLASS, MISSED, FALSE_OCCUPIED = 0, 1, 2, 3, 4
ERROR_NAMES = {CORRECT: "correct", WRONG_CLASS: "wrong class", MISSED: "missed", FALSE_OCCUPIED: "false occupied"}
ERROR_COLORS = {
    CORRECT: (200, 200, 200),
    WRONG_CLASS: (255, 190, 0),
    MISSED: (30, 100, 255),
    FALSE_OCCUPIED: (230, 30, 30),
}


@dataclass(frozen=True)
class ErrorCounts:
    """Voxel counts of each outcome inside the mask."""

    correct: int
    wrong_class: int
    missed: int
    false_occupied: int

    def describe(self) -> str:
        return (f"wrong {self.wrong_class:,}, missed {self.missed:,}, "
                f"false {self.false_occupied:,}, correct {self.correct:,}")


def error_volume(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
                 grid: OccGrid = OCC3D_NUSCENES) -> np.ndarray:
    """(Dx, Dy, Dz) uint8 error codes (NONE, CORRECT, WRONG_CLASS, MISSED, FALSE_OCCUPIED)."""
    pred = check_labels(pred, grid, "pred")
    gt = check_labels(gt, grid, "gt")
    mask = check_mask(mask, grid)
    pred_occ = occupied(pred, grid, mask)
    gt_occ = occupied(gt, grid, mask)
    codes = np.full(grid.shape, NONE, dtype=np.uint8)
    both = pred_occ & gt_occ
    codes[both & (pred == gt)] = CORRECT
    codes[both & (pred != gt)] = WRONG_CLASS
    codes[gt_occ & ~pred_occ] = MISSED
    codes[pred_occ & ~gt_occ] = FALSE_OCCUPIED
    return codes


def count_errors(codes: np.ndarray) -> ErrorCounts:
    counts = np.bincount(codes.ravel(), minlength=5)
    return ErrorCounts(int(counts[CORRECT]), int(counts[WRONG_CLASS]), int(counts[MISSED]), int(counts[FALSE_OCCUPIED]))


def error_bev(codes: np.ndarray) -> np.ndarray:
    """(Dx, Dy) error code per column: the most frequent error in the column (ties: wrong class,
    then missed, then false), CORRECT if it only has correct voxels, NONE if nothing is occupied."""
    per_type = np.stack([(codes == c).sum(axis=2) for c in (WRONG_CLASS, MISSED, FALSE_OCCUPIED)], axis=-1)
    out = np.where(per_type.max(axis=-1) > 0, np.argmax(per_type, axis=-1) + WRONG_CLASS, NONE)
    out[(out == NONE) & (codes == CORRECT).any(axis=2)] = CORRECT
    return out.astype(np.uint8)


def _error_table() -> np.ndarray:
    table = np.zeros((5, 3), dtype=np.uint8)
    table[NONE] = BACKGROUND
    for code, color in ERROR_COLORS.items():
        table[code] = color
    return table


def render_error_bev(codes: np.ndarray, grid: OccGrid = OCC3D_NUSCENES, scale: int = 4,
                     draw_ego: bool = True) -> Image.Image:
    """Top-down error map of ``error_volume`` codes (forward up, left on the left)."""
    rgb = colorize_bev(error_bev(codes), _error_table(), NONE)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if draw_ego:
        draw_ego_marker(image, grid, scale)
    return image


def render_error_voxels(codes: np.ndarray, grid: OccGrid = OCC3D_NUSCENES, size: tuple[int, int] = (1024, 720),
                        camera: ChaseCamera = ChaseCamera(), show_correct: bool = True) -> Image.Image:
    """3D view of the error volume: errors in their colours, correct voxels light grey (or hidden)."""
    ids = codes.astype(np.int64)
    ids[(ids == NONE) | ((ids == CORRECT) & (not show_correct))] = -1
    return render_color_ids(ids, _error_table(), grid, size=size, camera=camera)


def error_legend() -> list[tuple[str, tuple[int, int, int]]]:
    return [(ERROR_NAMES[c], ERROR_COLORS[c]) for c in (WRONG_CLASS, MISSED, FALSE_OCCUPIED, CORRECT)]


def render_comparison(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    view_size: tuple[int, int] = (640, 450),
    bev_scale: int = 3,
    camera: ChaseCamera = ChaseCamera(),
) -> Image.Image:
    """Prediction | ground truth | errors, as 3D views (top row) and BEV maps (bottom row).

    ``pred`` and ``gt`` are (Dx, Dy, Dz) label volumes [x, y, z]; ``mask`` (e.g. the GT
    ``mask_camera``) restricts everything, as in mIoU. A legend of classes and error colours
    sits on the right; the error panels' titles give the voxel counts.
    """
    codes = error_volume(pred, gt, mask, grid)
    counts = count_errors(codes)
    panels = [
        render_voxels(pred, mask=mask, grid=grid, size=view_size, camera=camera, legend=False),
        render_voxels(gt, mask=mask, grid=grid, size=view_size, camera=camera, legend=False),
        render_error_voxels(codes, grid, size=view_size, camera=camera),
    ]
    bev_panels = [render_bev(pred, grid, bev_scale, mask), render_bev(gt, grid, bev_scale, mask),
                  render_error_bev(codes, grid, bev_scale)]
    titles = ["prediction", "ground truth", "errors"]
    for im, bev, title in zip(panels, bev_panels, titles):
        draw_title(im, f"{title} (3D)" + (f": {counts.describe()}" if title == "errors" else ""), size=14)
        draw_title(bev, f"{title} (BEV)", size=14)
    # Centre each BEV below its 3D view.
    cells = []
    for bev in bev_panels:
        cell = Image.new("RGB", (max(view_size[0], bev.width), bev.height), BACKGROUND)
        cell.paste(bev, ((cell.width - bev.width) // 2, 0))
        cells.append(cell)
    top = tile(panels, columns=3)
    bottom = tile(cells, columns=3)
    body = tile([top, bottom], columns=1, gap=8)
    present = np.concatenate([np.unique(np.asarray(pred)), np.unique(np.asarray(gt))])
    entries = legend_entries(present, grid) + [("", (255, 255, 255))] + error_legend()
    return add_legend_strip(body, entries)

"""Centre-head targets read off the Occ3D-panoptic instance ids of the batch (``voxel_instances``).

Upstream (FlashOCC@4084861 projects/mmdet3d_plugin/models/dense_heads/bev_centerpoint_head.py,
Centerness_Head.get_targets_single) draws them from the annotation boxes. Our batches carry the
panoptic instance volume instead of boxes, and each of its instances is the voxels of one box (or the
leftovers nearest to it; flashocc/data/panoptic.py), so an instance's voxels give the same target up
to the voxel size: the centre is the mean of its voxel centres (z: the gravity centre the height branch
regresses), the Gaussian radius comes from its x/y extent in cells (CenterNet ``gaussian_radius``,
min_overlap 0.1, at least 2 cells), the regression target is the sub-cell offset of the centre.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from flashocc.grid import OccGrid
from flashocc.models.panoptic.heads import DETECTION_CLASSES

MIN_OVERLAP = 0.1
MIN_RADIUS = 2


class CentreTargets(NamedTuple):
    heatmap: torch.Tensor   # (B, 10, Dy, Dx) Gaussian peaks in [0, 1]
    cells: torch.Tensor     # (M, 3) long: batch, row (y), column (x) of each object's centre cell
    reg: torch.Tensor       # (M, 2) sub-cell offsets (x, y)
    height: torch.Tensor    # (M,) centre z, metres


def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """CenterNet's radius (the smallest of its three overlap cases) for a box of height x width cells."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: torch.Tensor, row: int, col: int, radius: int) -> None:
    """Max-merge a Gaussian of sigma (2r + 1) / 6 centred on (row, col) into ``heatmap`` (H, W)."""
    h, w = heatmap.shape
    sigma = (2 * radius + 1) / 6
    r = torch.arange(-radius, radius + 1, dtype=heatmap.dtype, device=heatmap.device)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    g = torch.where(g < torch.finfo(g.dtype).eps * g.max(), torch.zeros_like(g), g)
    top, bottom = min(row, radius), min(h - row, radius + 1)
    left, right = min(col, radius), min(w - col, radius + 1)
    patch = heatmap[row - top:row + bottom, col - left:col + right]
    torch.maximum(patch, g[radius - top:radius + bottom, radius - left:radius + right], out=patch)


def centre_targets(instances: torch.Tensor, semantics: torch.Tensor, grid: OccGrid) -> CentreTargets:
    """instances / semantics (B, Dx, Dy, Dz) -> targets of every instance whose class is a detection class."""
    b, dx, dy, _ = instances.shape
    det_of = {grid.class_names.index(n): d for d, n in enumerate(DETECTION_CLASSES) if n in grid.class_names}
    heatmap = torch.zeros(b, len(DETECTION_CLASSES), dy, dx, device=instances.device)
    lower = torch.tensor(grid.lower, dtype=torch.float32, device=instances.device)
    size = torch.tensor(grid.voxel_size, dtype=torch.float32, device=instances.device)
    cells, reg, height = [], [], []
    for i in range(b):
        inst, sem = instances[i].long(), semantics[i].long()
        occupied = (inst > 0).nonzero()                                     # one pass over the grid
        seg_of = inst[occupied[:, 0], occupied[:, 1], occupied[:, 2]]
        seg_of, order = seg_of.sort(stable=True)
        occupied = occupied[order]
        counts = torch.unique_consecutive(seg_of, return_counts=True)[1].tolist()
        for where in occupied.split(counts):                                # (V, 3) x, y, z of one instance
            cls = int(torch.mode(sem[where[:, 0], where[:, 1], where[:, 2]]).values)
            if cls not in det_of:
                continue
            centre = lower + (where.float() + 0.5).mean(0) * size           # metres
            extent = (where[:, :2].amax(0) - where[:, :2].amin(0) + 1).float()
            radius = max(MIN_RADIUS, int(gaussian_radius(float(extent[1]), float(extent[0]))))
            # In cell units straight from the indices (exact; a round trip through metres is not).
            pos = (where[:, :2].float() + 0.5).mean(0)                       # (x, y)
            col, row = int(pos[0]), int(pos[1])
            if not (0 <= col < dx and 0 <= row < dy):
                continue
            draw_gaussian(heatmap[i, det_of[cls]], row, col, radius)
            cells.append((i, row, col))
            reg.append(pos - pos.floor())
            height.append(centre[2])
    device = instances.device
    return CentreTargets(
        heatmap,
        torch.tensor(cells, dtype=torch.long, device=device).reshape(-1, 3),
        torch.stack(reg) if reg else torch.zeros(0, 2, device=device),
        torch.stack(height) if height else torch.zeros(0, device=device),
    )


__all__ = ["CentreTargets", "centre_targets", "gaussian_radius", "draw_gaussian"]

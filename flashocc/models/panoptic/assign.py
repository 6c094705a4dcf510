"""Instance centres from the heatmap and the nearest-centre instance assignment, in plain torch.

Official behaviour: FlashOCC@4084861 projects/mmdet3d_plugin/models/dense_heads/bev_centerpoint_head.py,
Centerness_Head.get_centers (decoding), and projects/mmdet3d_plugin/models/detectors/bevdet_occ.py,
BEVDepthPano.simple_test with its ``nearest_assign`` CUDA op (assignment). The instance volume follows
the official ``pano_inst`` convention: stuff and free voxels carry their class id, thing voxels get
``num_classes + j`` for centre j (the RayPQ metric shifts every id by one).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from flashocc.grid import OccGrid
from flashocc.models.panoptic.heads import DETECTION_CLASSES

# Occ3D classes that RayPQ scores as things (each instance a segment); barrier and cone are stuff there.
THING_CLASSES: tuple[str, ...] = ("bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                                  "trailer", "truck")
# The released tables, written for the nuScenes-devkit order [car, truck, trailer, bus,
# construction_vehicle, bicycle, motorcycle, pedestrian, traffic_cone, barrier] but applied to labels in
# config order (bevdet_occ.py, detind2occind and occind2detind_cuda).
OFFICIAL_DET_TO_OCC: tuple[int, ...] = (4, 10, 9, 3, 5, 2, 6, 7, 8, 1)
OFFICIAL_OCC_TO_DET: tuple[int, ...] = (-1, -1, 5, 3, 0, 4, 6, 7, -1, 2, 1)
POST_CENTER_RANGE = (61.2, 10.0)  # |x|, |y| <= 61.2 m and |z| <= 10 m (bbox_coder post_center_range)


class Centres(NamedTuple):
    """Decoded centres of one sample: (K, 3) metres, (K,) scores, (K,) labels in config order."""

    xyz: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def decode_centres(heatmap: torch.Tensor, reg: torch.Tensor, height: torch.Tensor, grid: OccGrid,
                   max_centres: int = 500, threshold: float = 0.3) -> list[Centres]:
    """heatmap logits (B, 10, Dy, Dx), reg (B, 2, ·), height (B, 1, ·) -> centres per sample.

    sigmoid, 3x3 max-pool NMS, top-k over every class and cell, then the score threshold and the
    centre range; x = (col + reg_x)·cell + lower_x, y = (row + reg_y)·cell + lower_y, z = height.
    """
    b, k, h, w = heatmap.shape
    score = heatmap.float().sigmoid()
    score = score * (F.max_pool2d(score, 3, stride=1, padding=1) == score)
    top, index = score.reshape(b, -1).topk(min(max_centres, k * h * w), dim=1)
    out = []
    for i in range(b):
        labels, cell = index[i] // (h * w), index[i] % (h * w)
        row, col = cell // w, cell % w
        x = (col + reg[i, 0].reshape(-1)[cell].float()) * grid.voxel_size[0] + grid.lower[0]
        y = (row + reg[i, 1].reshape(-1)[cell].float()) * grid.voxel_size[1] + grid.lower[1]
        z = height[i, 0].reshape(-1)[cell].float()
        xyz = torch.stack([x, y, z], dim=1)
        r_xy, r_z = POST_CENTER_RANGE
        keep = (top[i] > threshold) & (xyz[:, :2].abs() <= r_xy).all(1) & (z.abs() <= r_z)
        out.append(Centres(xyz[keep], top[i][keep], labels[keep]))
    return out


def det_to_occ(grid: OccGrid, official: bool) -> list[int]:
    """Occupancy class of each detection label (config order); -1 for none."""
    if official:
        return list(OFFICIAL_DET_TO_OCC)
    return [grid.class_names.index(n) if n in grid.class_names else -1 for n in DETECTION_CLASSES]


def assign_instances(occ: torch.Tensor, centres: Centres, grid: OccGrid, official_mapping: bool = False,
                     radius: float = 0.0, chunk: int = 65536) -> torch.Tensor:
    """occ (Dx, Dy, Dz) class labels -> instance ids (Dx, Dy, Dz) int64 (module docstring).

    Distances are squared integer voxel distances with z included, to the centre's truncated voxel
    index (official). ``official_mapping`` reproduces the released class tables: a thing voxel is
    matched to the centres of the detection label its class maps to in the devkit order, and a voxel
    whose class some centre's label names but that has no matching centre (or whose lookup is -1)
    gets id 0. ``radius`` > 0 (voxels; ours) leaves thing voxels farther than that from every centre
    with their class id.
    """
    k = grid.num_classes
    ids = occ.long().clone()
    if centres.labels.numel() == 0:
        return ids
    # Official detail: centres are sorted by label before the ids are handed out.
    order = torch.sort(centres.labels, stable=True).indices
    labels, xyz = centres.labels[order], centres.xyz[order].float()
    lower = torch.tensor(grid.lower, dtype=torch.float32, device=xyz.device)
    size = torch.tensor(grid.voxel_size, dtype=torch.float32, device=xyz.device)
    cells = torch.trunc((xyz - lower) / size)                   # truncated toward zero, as the int() cast
    mapping = det_to_occ(grid, official_mapping)
    if official_mapping:
        keys = {mapping[int(d)] for d in labels.tolist()}
        things = {c: OFFICIAL_OCC_TO_DET[c] if c < len(OFFICIAL_OCC_TO_DET) else -1 for c in sorted(keys)}
    else:
        thing_ids = {grid.class_names.index(n) for n in THING_CLASSES if n in grid.class_names}
        things = {c: d for d, c in enumerate(mapping) if c in thing_ids}
    flat = occ.reshape(-1).long()
    out = ids.reshape(-1)
    for c, d in things.items():
        voxels = (flat == c).nonzero().squeeze(1)
        if voxels.numel() == 0:
            continue
        match = (labels == d).nonzero().squeeze(1) if d >= 0 else labels.new_zeros(0)
        if match.numel() == 0:
            if official_mapping:
                out[voxels] = 0
            continue
        target = cells[match]
        for start in range(0, voxels.numel(), chunk):
            part = voxels[start:start + chunk]
            pos = torch.stack(torch.unravel_index(part, occ.shape), dim=1).float()
            dist = torch.cdist(pos, target).square()
            best, j = dist.min(dim=1)
            new = k + match[j]
            if radius > 0:
                new = torch.where(best <= radius * radius, new, torch.full_like(new, c))
            out[part] = new
    return ids


__all__ = ["Centres", "decode_centres", "assign_instances", "det_to_occ", "THING_CLASSES",
           "OFFICIAL_DET_TO_OCC", "OFFICIAL_OCC_TO_DET"]

"""Image-space training targets read off the occupancy ground truth.

For every feature-cell ray of every camera: the depth and the class of the first non-free voxel it
meets. LiDAR answers depth only where a beam lands (a 32-beam sweep leaves most stride-8 cells of a
small image empty) and says nothing about classes; the voxel ground truth answers for every ray, so
a depth loss and an auxiliary per-pixel class loss can supervise the image side densely. Train-time
only and not part of the official recipe (it is off in every official preset).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from flashocc.geometry import create_frustum, frustum_to_ego, sensor_to_key_ego
from flashocc.grid import OccGrid

# Steps along each ray: half a voxel, so no voxel a ray crosses by more than a corner is skipped.
RAY_STEP = 0.2


def ray_sample_depths(start: float, stop: float, step: float = RAY_STEP) -> torch.Tensor:
    return torch.arange(start, stop, step, dtype=torch.float32)


@torch.no_grad()
def first_hits(voxel_semantics: torch.Tensor, points: torch.Tensor, sample_depths: torch.Tensor,
               grid: OccGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (metres, 0 = no hit) and label of the first non-free voxel along each ray.

    voxel_semantics (B, Dx, Dy, Dz); points (B, N, S, fH, fW, 3) ray samples in the same (BEV-augmented)
    ego frame at ``sample_depths`` (S,). Rays that leave the grid without a hit get ``free_label``
    (they see sky or something beyond the grid); rays whose first hit is an ignored voxel get
    ``ignore_label`` and no depth. Returns (B·N, fH, fW) float depth and long labels.
    """
    b, n, s, fh, fw, _ = points.shape
    dims = torch.tensor(grid.shape, device=points.device)
    lower = torch.tensor(grid.lower, dtype=points.dtype, device=points.device)
    size = torch.tensor(grid.voxel_size, dtype=points.dtype, device=points.device)
    idx = ((points - lower) / size).floor().long()
    inside = ((idx >= 0) & (idx < dims)).all(dim=-1)
    idx = torch.minimum(idx.clamp(min=0), dims - 1)
    batch = torch.arange(b, device=points.device).view(b, 1, 1, 1, 1)
    flat = ((batch * dims[0] + idx[..., 0]) * dims[1] + idx[..., 1]) * dims[2] + idx[..., 2]
    labels = voxel_semantics.reshape(-1).long()[flat]                       # (B, N, S, fH, fW)
    stops = inside & (labels != grid.free_label)
    hit = stops.any(dim=2)
    first = stops.to(torch.uint8).argmax(dim=2, keepdim=True)               # argmax returns the first maximum
    label = torch.where(hit, labels.gather(2, first).squeeze(2), torch.full_like(hit, grid.free_label, dtype=torch.long))
    depth = torch.where(hit, sample_depths.to(points.device)[first.squeeze(2)], torch.zeros((), device=points.device))
    depth = torch.where(label == grid.ignore_label, torch.zeros_like(depth), depth)
    return depth.reshape(b * n, fh, fw), label.reshape(b * n, fh, fw)


@torch.no_grad()
def ray_points(batch: Mapping[str, torch.Tensor], input_size: tuple[int, int], downsample: int,
               depths: torch.Tensor) -> torch.Tensor:
    """(B, N, S, fH, fW, 3) points at ``depths`` along every feature-cell ray, in the BEV-augmented
    key-ego frame: the same rays and frame as ``frustum_to_ego``."""
    # Each ray is a straight line in depth (the image augmentation acts on (u, v) only), so lift two
    # depths and extrapolate instead of lifting all S samples through the 3x3 products.
    two = create_frustum(torch.tensor([1.0, 2.0]), input_size, downsample).to(depths.device)
    s2k = sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])
    ends = frustum_to_ego(two, s2k, batch["intrinsics"].float(), batch["post_rots"].float(),
                          batch["post_trans"].float(), batch["bda"].float())          # (B, N, 2, fH, fW, 3)
    direction = ends[:, :, 1:2] - ends[:, :, 0:1]
    return (ends[:, :, 0:1] - direction) + depths.view(1, 1, -1, 1, 1, 1) * direction


@torch.no_grad()
def ray_targets(batch: Mapping[str, torch.Tensor], input_size: tuple[int, int], downsample: int,
                depth_range: tuple[float, float], grid: OccGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """First-hit depth and label for every feature cell of ``batch`` (current frame, single-frame layout)."""
    depths = ray_sample_depths(*depth_range).to(batch["voxel_semantics"].device)
    points = ray_points(batch, input_size, downsample, depths)
    return first_hits(batch["voxel_semantics"], points, depths, grid)

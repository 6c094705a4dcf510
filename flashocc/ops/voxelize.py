"""Hard voxelization (mmcv ``Voxelization`` semantics) and ``HardSimpleVFE``, in plain PyTorch.

Upstream: mmcv 1.x ``mmcv/ops/voxelize.py, Voxelization`` and its kernels
``mmcv/ops/csrc/pytorch/cpu/voxelization.cpp, hard_voxelize_forward_cpu_kernel`` /
``.../cuda/voxelization_cuda.cu, HardVoxelizeForwardCUDAKernelLauncher`` (deterministic mode), and
mmdet3d ``mmdet3d/models/voxel_encoders/voxel_encoder.py, HardSimpleVFE``; EFFOcc@13aeb78 uses them with
voxel 0.05 x 0.05 x 0.16 m, 10 points per voxel and 90,000 / 120,000 voxels (train / test).

Semantics kept for parity:
* a point's cell is ``floor((p - min) / size)`` in the points' dtype; it is kept iff 0 <= cell < grid on
  every axis, with ``grid = round((max - min) / size)``;
* voxels are numbered in the order of the first point that hits them, so ``max_voxels`` drops the voxels
  first reached by the last points (mmdet3d concatenates the keyframe first, then the sweeps);
* a voxel keeps its first ``max_points`` points in input order; the rest are dropped.

Vectorised (one stable sort, no loop over points), so the same code runs on CPU and CUDA and gives the
same result on both.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flashocc.errors import ConfigError, DataError

__all__ = ["HardSimpleVFE", "Voxelization", "grid_shape", "hard_voxelize"]


def _axis_tensor(values: Sequence[float], name: str, n: int, like: torch.Tensor) -> torch.Tensor:
    if len(values) != n:
        raise ConfigError(f"{name} must have {n} values (x, y, z{', x, y, z' if n == 6 else ''}); got {list(values)}")
    return torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)


def grid_shape(voxel_size: Sequence[float], point_range: Sequence[float]) -> tuple[int, int, int]:
    """(nx, ny, nz) cells of the grid, ``round((max - min) / size)`` in float32 like mmcv's kernels."""
    size = torch.tensor([float(v) for v in voxel_size], dtype=torch.float32)
    rng = torch.tensor([float(v) for v in point_range], dtype=torch.float32)
    if size.numel() != 3 or rng.numel() != 6:
        raise ConfigError(f"voxel_size must have 3 values and point_range 6; got {list(voxel_size)}, {list(point_range)}")
    if (size <= 0).any():
        raise ConfigError(f"voxel_size must be positive; got {list(voxel_size)}")
    grid = torch.round((rng[3:] - rng[:3]) / size).long()
    if (grid <= 0).any():
        raise ConfigError(f"point_range must have max > min on every axis; got {list(point_range)}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def hard_voxelize(
    points: torch.Tensor,
    voxel_size: Sequence[float],
    point_range: Sequence[float],
    max_points: int,
    max_voxels: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group points (N, C) (x, y, z first, metres) into at most ``max_voxels`` voxels of ``max_points``.

    Returns ``voxels`` (M, max_points, C) zero-padded, ``coords`` (M, 3) int32 as (z, y, x) and ``counts``
    (M,) int32, voxels ordered by first hit.
    """
    if points.dim() != 2 or points.shape[1] < 3:
        raise DataError(f"points must be (N, C >= 3) with x, y, z first; got shape {tuple(points.shape)}")
    if not points.is_floating_point():
        raise DataError(f"points must be a floating-point tensor; got {points.dtype}")
    if max_points < 1 or max_voxels < 1:
        raise ConfigError(f"max_points and max_voxels must be >= 1; got {max_points}, {max_voxels}")
    nx, ny, nz = grid_shape(voxel_size, point_range)
    device, n, c = points.device, points.shape[0], points.shape[1]
    size = _axis_tensor(voxel_size, "voxel_size", 3, points)
    lower = _axis_tensor(point_range, "point_range", 6, points)[:3]

    cell = torch.floor((points[:, :3] - lower) / size)  # (N, 3) x, y, z, still float (NaN stays out)
    upper = torch.tensor([nx, ny, nz], dtype=cell.dtype, device=device)
    inside = ((cell >= 0) & (cell < upper)).all(1)
    point_idx = torch.nonzero(inside).squeeze(1)  # ascending: input order of the kept points
    cell = torch.where(inside[:, None], cell, 0).long()  # outside / NaN rows are zeroed, then dropped
    key = ((cell[:, 2] * ny + cell[:, 1]) * nx + cell[:, 0]).index_select(0, point_idx)  # z-major like coords

    # A stable sort keeps input order inside each voxel, so a run's first row is the voxel's first hit
    # and a row's position in its run is its slot.
    key_sorted, order = torch.sort(key, stable=True)
    point_idx = point_idx[order]
    is_head = torch.ones_like(key_sorted, dtype=torch.bool)
    is_head[1:] = key_sorted[1:] != key_sorted[:-1]
    run = torch.cumsum(is_head, 0) - 1  # (P,) run id per sorted point
    heads = torch.nonzero(is_head).squeeze(1)  # (U,) start of each run
    slot = torch.arange(key_sorted.numel(), device=device) - heads[run]
    # Number the voxels by first hit (the head's input index): rank of each run.
    rank = torch.empty_like(heads)
    rank[torch.argsort(point_idx[heads])] = torch.arange(heads.numel(), device=device)
    voxel_id = rank[run]

    m = min(heads.numel(), max_voxels)
    keep = torch.nonzero((voxel_id < m) & (slot < max_points)).squeeze(1)
    voxels = points.new_zeros(m * max_points, c)
    # Each (voxel, slot) is written once: index_copy_ has no collisions, so CUDA gives the same result.
    voxels.index_copy_(0, voxel_id[keep] * max_points + slot[keep], points.index_select(0, point_idx[keep]))
    voxels = voxels.view(m, max_points, c)
    run_length = torch.diff(heads, append=heads.new_tensor([key_sorted.numel()]))
    first = rank < m  # runs that became voxels
    counts = torch.empty(m, dtype=torch.int64, device=device)
    counts[rank[first]] = run_length[first].clamp(max=max_points)
    head_key = torch.empty(m, dtype=torch.int64, device=device)
    head_key[rank[first]] = key_sorted[heads[first]]
    coords = torch.stack([head_key // (ny * nx), (head_key // nx) % ny, head_key % nx], 1)  # (M, 3) z, y, x
    return voxels, coords.int(), counts.int()


class Voxelization(nn.Module):
    """mmcv ``Voxelization`` over a batch: ``max_voxels`` is (train, test), picked by ``self.training``.

    ``forward(points_list)`` voxelizes each sample and returns ``voxels`` (M, max_points, C), ``coords``
    (M, 4) int32 as (batch, z, y, x) and ``counts`` (M,) int32, like mmdet3d's ``Base3DDetector.voxelize``.
    """

    def __init__(self, voxel_size: Sequence[float], point_range: Sequence[float], max_points: int = 10,
                 max_voxels: tuple[int, int] = (90000, 120000)) -> None:
        super().__init__()
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_range = tuple(float(v) for v in point_range)
        self.max_points = int(max_points)
        self.max_voxels = (int(max_voxels[0]), int(max_voxels[1]))
        nx, ny, nz = grid_shape(self.voxel_size, self.point_range)
        self.grid_size = (nx, ny, nz)

    def forward(self, points_list: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cap = self.max_voxels[0] if self.training else self.max_voxels[1]
        voxels, coords, counts = [], [], []
        for b, pts in enumerate(points_list):
            v, co, n = hard_voxelize(pts, self.voxel_size, self.point_range, self.max_points, cap)
            voxels.append(v)
            coords.append(torch.nn.functional.pad(co, (1, 0), value=b))  # (M, 4) batch, z, y, x
            counts.append(n)
        return torch.cat(voxels), torch.cat(coords), torch.cat(counts)

    def extra_repr(self) -> str:
        return (f"voxel_size={self.voxel_size}, point_range={self.point_range}, "
                f"max_points={self.max_points}, max_voxels={self.max_voxels}")


class HardSimpleVFE(nn.Module):
    """Mean of the first ``num_features`` features over each voxel's real points (mmdet3d ``HardSimpleVFE``).

    The padded rows are zeros, so the mean is the sum over all rows divided by the count, as upstream.
    """

    def __init__(self, num_features: int = 4) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() != 3 or features.shape[2] < self.num_features:
            raise DataError(f"HardSimpleVFE expects voxels (M, max_points, C >= {self.num_features}); "
                            f"got shape {tuple(features.shape)}")
        points_mean = features[:, :, : self.num_features].sum(dim=1)
        return (points_mean / num_points.type_as(features).view(-1, 1)).contiguous()  # (M, num_features)

"""Occ3D-style visibility masks by depth testing every voxel against the sensors' first hits.

A ray observes the voxels it crosses up to and including the first occupied one (Occ3D@6e8563a
README.md; docs/official-behaviour.md#occ3d-labels). Rather than marching rays, we ask per voxel whether some ray reaches
it: a voxel is observed when a probe point of it (its point nearest to the sensor, or its centre)
lies no farther than the first hit along the ray through that point. That is tested for all voxels
at once against each camera's per-pixel hit distance (``mask_camera``, the union over the six
cameras) and against the LiDAR range image (``mask_lidar``). A voxel between two LiDAR beams takes
the nearer beam: the one sweep stands in for Occ3D's multi-sweep accumulation, which leaves no gaps
between beams. Unlike Occ3D we do not intersect ``mask_camera`` with ``mask_lidar``: a single sweep
misses the ground within ~4 m of the car that accumulated sweeps cover.
"""
from __future__ import annotations

import numpy as np

from flashocc.grid import OccGrid

_EPS = 0.02  # metres of slack for float32 hit distances


def _probe_points(grid: OccGrid, origin: np.ndarray, nearest: bool) -> list[np.ndarray]:
    """Per axis, the coordinate of each voxel slab's centre, or of its point nearest to ``origin``."""
    out = []
    for a, n in enumerate(grid.shape):
        lo = grid.lower[a] + np.arange(n) * grid.voxel_size[a]
        out.append(np.clip(origin[a], lo, lo + grid.voxel_size[a]) if nearest else lo + grid.voxel_size[a] / 2)
    return out


def _to_sensor(grid: OccGrid, ego2sensor: np.ndarray, nearest: bool,
               columns: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probe points in the sensor frame (..., Dz, 3) and their distances (..., Dz), for all voxels
    (Dx, Dy, Dz) or for the given (i, j) columns (K, Dz)."""
    origin = np.linalg.inv(ego2sensor)[:3, 3]
    nx, ny, nz = _probe_points(grid, origin, nearest)
    if columns is None:
        px, py = nx[:, None], ny[None, :]
    else:
        px, py = nx[columns[0]], ny[columns[1]]
    rot, t = ego2sensor[:3, :3], ego2sensor[:3, 3]
    # Separable transform: (x, y) part per column, z part per level.
    xy = (rot[:, 0] * px[..., None] + rot[:, 1] * py[..., None]).astype(np.float32)
    zt = (rot[:, 2][None, :] * nz[:, None] + t[None, :]).astype(np.float32)
    pts = xy[..., None, :] + zt
    dxy = ((px - origin[0]) ** 2 + (py - origin[1]) ** 2).astype(np.float32)
    dist = np.sqrt(dxy[..., None] + ((nz - origin[2]) ** 2).astype(np.float32))
    return pts, dist


def _columns_in_view(grid: OccGrid, ego2cam: np.ndarray, intrinsics: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """(i, j) of the voxel columns inside the camera's horizontal field of view, with a margin.

    The nuScenes cameras are level to within a degree or two, so a wedge in the ego x-y plane
    holds everything they see; the 1 m margin covers voxel size and tilt.
    """
    cx = grid.lower[0] + (np.arange(grid.shape[0]) + 0.5) * grid.voxel_size[0]
    cy = grid.lower[1] + (np.arange(grid.shape[1]) + 0.5) * grid.voxel_size[1]
    rot, t = ego2cam[:3, :3], ego2cam[:3, 3]
    x_cam = rot[0, 0] * cx[:, None] + rot[0, 1] * cy[None, :] + t[0]
    z_cam = rot[2, 0] * cx[:, None] + rot[2, 1] * cy[None, :] + t[2]
    half_fov = max(intrinsics[0, 2], width - intrinsics[0, 2]) / intrinsics[0, 0]
    return np.nonzero((z_cam > -1.0) & (np.abs(x_cam) <= half_fov * np.maximum(z_cam, 0.0) + 1.0))


def camera_visibility(grid: OccGrid, ego2cam: np.ndarray, intrinsics: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(Dx, Dy, Dz) bool: voxels this camera sees, given its (H, W) hit distance map (inf = sky).

    Two probes per voxel: its point nearest to the camera (sees the voxel holding the first hit, whose
    centre may lie behind the surface) and its centre (sees a voxel whose nearest corner hides behind
    the silhouette of a closer object, or lies beside the camera).
    """
    out = np.zeros(grid.shape, bool)
    for nearest in (True, False):
        out |= _camera_probe(grid, ego2cam, intrinsics, depth, nearest)
    return out


def _camera_probe(grid: OccGrid, ego2cam: np.ndarray, intrinsics: np.ndarray, depth: np.ndarray,
                  nearest: bool) -> np.ndarray:
    height, width = depth.shape
    columns = _columns_in_view(grid, ego2cam, intrinsics, width)
    pts, dist = _to_sensor(grid, ego2cam, nearest, columns)          # (K, Dz, 3), (K, Dz)
    z = pts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_z = 1.0 / z
        u = intrinsics[0, 0] * pts[..., 0] * inv_z + intrinsics[0, 2]
        v = intrinsics[1, 1] * pts[..., 1] * inv_z + intrinsics[1, 2]
    # A voxel whose probe falls just outside the image still shows at the border: pad by its size.
    pad = intrinsics[0, 0] * grid.voxel_size[0] * inv_z
    in_view = (z > 1e-3) & (np.abs(u - (width - 1) / 2) < width / 2 + pad)
    in_view &= np.abs(v - (height - 1) / 2) < height / 2 + pad
    k, level = np.nonzero(in_view)
    col = np.clip(np.rint(u[k, level]), 0, width - 1).astype(np.int64)
    row = np.clip(np.rint(v[k, level]), 0, height - 1).astype(np.int64)
    out = np.zeros(grid.shape, bool)
    out[columns[0][k], columns[1][k], level] = dist[k, level] <= depth[row, col] + _EPS
    return out


def lidar_visibility(grid: OccGrid, ego2lidar: np.ndarray, pitches: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """(Dx, Dy, Dz) bool: voxels the sweep observes, given its (rings, n_azimuth) range image."""
    n_rings, n_az = ranges.shape
    out = np.zeros(grid.shape, bool)
    for nearest in (True, False):
        pts, dist = _to_sensor(grid, ego2lidar, nearest)
        az = np.arctan2(pts[..., 1], pts[..., 0])
        el = np.arctan2(pts[..., 2], np.hypot(pts[..., 0], pts[..., 1]))
        step = (pitches[-1] - pitches[0]) / (n_rings - 1)
        ring = np.rint((el - pitches[0]) / step)
        idx = np.nonzero((ring >= 0) & (ring <= n_rings - 1))
        col = np.floor((az[idx] + np.pi) / (2 * np.pi / n_az)).astype(np.int64) % n_az
        out[idx] |= dist[idx] <= ranges[ring[idx].astype(np.int64), col] + _EPS
    return out

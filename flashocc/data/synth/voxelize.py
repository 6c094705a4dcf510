"""Occ3D semantics of the synthetic world in one frame's ego frame.

A voxel takes a primitive's class when it overlaps the primitive (its centre lies within half a
voxel of the shape), so every surface a sensor can hit falls into a labelled voxel. The ground
labels the voxels its surface (or the sidewalk slab) passes through; objects overwrite the ground.
Solid objects are labelled through their interior: the camera mask hides the interior anyway.
"""
from __future__ import annotations

import numpy as np

from flashocc.data.synth.world import BOX, World
from flashocc.grid import OccGrid


def voxelize(world: World, ego2global: np.ndarray, grid: OccGrid,
             with_objects: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(Dx, Dy, Dz) uint8 labels, indexed [x, y, z] in the ego frame of ``ego2global``; free elsewhere.

    ``with_objects`` also returns the (Dx, Dy, Dz) int64 object index (``Primitives.object_ids``) of the
    primitive that labelled each voxel, -1 for the ground and free space.
    """
    dz = grid.shape[2]
    size = np.asarray(grid.voxel_size)
    lower = np.asarray(grid.lower)
    sem = np.full(grid.shape, grid.free_label, np.uint8)
    centers = [lower[a] + (np.arange(n) + 0.5) * size[a] for a, n in enumerate(grid.shape)]

    # Ground: class and top surface per column (ego z equals global z: the ego pose is level).
    gx, gy = np.meshgrid(centers[0], centers[1], indexing="ij")
    wx = ego2global[0, 0] * gx + ego2global[0, 1] * gy + ego2global[0, 3]
    wy = ego2global[1, 0] * gx + ego2global[1, 1] * gy + ego2global[1, 3]
    cls, top, _ = world.ground_class(wx, wy)
    bottom = np.floor((world.ground_z - lower[2]) / size[2])
    top_idx = np.floor((top - lower[2]) / size[2] - 1e-9)
    k = np.arange(dz)[None, None, :]
    in_ground = (k >= bottom) & (k <= top_idx[..., None])
    sem = np.where(in_ground, cls[..., None], sem).astype(np.uint8)

    # Primitives, in list order (later ones win where they overlap).
    prims = world.primitives
    objects = np.full(grid.shape, -1, np.int64) if with_objects else None
    object_ids = prims.object_ids()
    yaw_ego = np.arctan2(ego2global[1, 0], ego2global[0, 0])
    g2e = np.linalg.inv(ego2global)
    ctr = prims.center @ g2e[:3, :3].T + g2e[:3, 3]
    reach = np.linalg.norm(prims.half, axis=1) + size[0]
    inside = np.all((ctr + reach[:, None] > lower) & (ctr - reach[:, None] < np.asarray(grid.upper)), axis=1)
    margin = size / 2
    for i in np.nonzero(inside)[0]:
        lo = np.floor((ctr[i] - reach[i] - lower) / size).astype(np.int64).clip(0, np.asarray(grid.shape))
        hi = np.ceil((ctr[i] + reach[i] - lower) / size).astype(np.int64).clip(0, np.asarray(grid.shape))
        if np.any(hi <= lo):
            continue
        xs, ys, zs = (centers[a][lo[a]:hi[a]] - ctr[i, a] for a in range(3))
        yaw = prims.yaw[i] - yaw_ego
        c, s = np.cos(yaw), np.sin(yaw)
        lx = c * xs[:, None] + s * ys[None, :]           # (nx, ny) local coordinates of the centres
        ly = -s * xs[:, None] + c * ys[None, :]
        h = prims.half[i]
        if prims.kind[i] == BOX:
            # Overlap of the voxel and the box: the centre within the box grown by half a voxel.
            col = (np.abs(lx) <= h[0] + margin[0]) & (np.abs(ly) <= h[1] + margin[1])
            occ = col[..., None] & (np.abs(zs) <= h[2] + margin[2])[None, None, :]
        else:
            r = h + margin
            occ = ((lx / r[0]) ** 2 + (ly / r[1]) ** 2)[..., None] + ((zs / r[2]) ** 2)[None, None, :] <= 1.0
        block = sem[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        block[occ] = prims.label[i]
        if objects is not None:
            objects[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][occ] = object_ids[i]
    return (sem, objects) if objects is not None else sem

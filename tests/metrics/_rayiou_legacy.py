"""The RayIoU path as it was before the fast kernels (flashocc at commit 8b78ef1): its numba kernel,
its numpy ray set-up and its counting, copied verbatim, so tests can check that the current path
gives bit-identical scores. Test-only; needs numba."""
from __future__ import annotations

import numba
import numpy as np

from flashocc.grid import OccGrid

MAX_STEP = 1000
DBL_MAX = float(np.finfo(np.float64).max)


def to_voxel_units(origins: np.ndarray, directions: np.ndarray, grid: OccGrid) -> tuple[np.ndarray, np.ndarray]:
    lower = np.asarray(grid.lower, dtype=np.float32).astype(np.float64)
    size = np.asarray(grid.voxel_size, dtype=np.float32).astype(np.float64)
    o = np.asarray(origins, dtype=np.float64)
    o_vox = ((o - lower) / size).astype(np.float32)
    ends = directions.astype(np.float32).astype(np.float64)[None, :, :] + o[:, None, :]
    e_vox = ((ends - lower) / size).astype(np.float32)
    return o_vox, e_vox


def legacy_totals(pred: np.ndarray, gt: np.ndarray, origins: np.ndarray, directions: np.ndarray, grid: OccGrid,
                  thresholds=(1.0, 2.0, 4.0)) -> dict[str, np.ndarray]:
    """RayIoU totals (gt_count, pred_count, tp) of one sample, computed the old way."""
    o_vox, e_vox = to_voxel_units(origins, directions, grid)
    codes = np.zeros(gt.shape, dtype=np.uint8)
    for v, vol in enumerate([gt, pred]):
        codes |= (vol != grid.free_label).astype(np.uint8) << np.uint8(v)
    k, r = e_vox.shape[:2]
    index = np.empty((2, k, r), dtype=np.int64)
    dist = np.empty((2, k, r), dtype=np.float64)
    sx, sy, sz = codes.shape
    cast_kernel(codes.reshape(-1), sx, sy, sz, 2, o_vox, np.ascontiguousarray(e_vox), index, dist)
    index = index.reshape(2, -1)
    dist = dist.reshape(2, -1).astype(np.float32) * np.float32(grid.voxel_size[0])
    gt_label = gt.reshape(-1)[index[0]]
    pred_label = pred.reshape(-1)[index[1]]
    keep = gt_label != grid.free_label
    gt_label, pred_label = gt_label[keep].astype(np.int64), pred_label[keep].astype(np.int64)
    gt_dist, pred_dist = dist[0][keep], dist[1][keep]
    c = grid.num_classes
    same = gt_label == pred_label
    l1 = np.abs(pred_dist - gt_dist)
    return {"gt_count": np.bincount(gt_label, minlength=c), "pred_count": np.bincount(pred_label, minlength=c),
            "tp": np.stack([np.bincount(gt_label[same & (l1 < t)], minlength=c) for t in thresholds])}


@numba.njit(parallel=True, nogil=True, cache=True)
def cast_kernel(codes, sx, sy, sz, nvol, origins, endpoints, out_index, out_dist):
    """The per-ray DDA loop, compiled on first use and cached by numba.

    Arguments: codes (X*Y*Z,) uint8 occupancy bitmask, grid sizes, number of volumes V,
    origins (K, 3) float32 and end points (K, R, 3) float32 in voxel units, outputs index (V, K, R)
    int64 and dist (V, K, R) float64. Semantics: FlashOCC@4084861 lib/dvr/dvr.cu, render_forward
    (docs/official-behaviour.md#rayiou-rays-and-traversal).
    """
    k_count = endpoints.shape[0]
    r_count = endpoints.shape[1]
    full = (1 << nvol) - 1
    for n in numba.prange(k_count * r_count):
        k = n // r_count
        r = n - k * r_count
        xo = np.float64(origins[k, 0])
        yo = np.float64(origins[k, 1])
        zo = np.float64(origins[k, 2])
        rx = np.float64(endpoints[k, r, 0]) - xo
        ry = np.float64(endpoints[k, r, 1]) - yo
        rz = np.float64(endpoints[k, r, 2]) - zo
        norm = np.sqrt(rx * rx + ry * ry + rz * rz)
        dx = rx / norm
        dy = ry / norm
        dz = rz / norm
        vx = int(xo)                     # C int(): truncation toward zero
        vy = int(yo)
        vz = int(zo)
        step_x = 1 if dx >= 0 else -1
        step_y = 1 if dy >= 0 else -1
        step_z = 1 if dz >= 0 else -1
        t_max_x = (vx + (1 if step_x > 0 else 0) - xo) / dx if dx != 0 else DBL_MAX
        t_max_y = (vy + (1 if step_y > 0 else 0) - yo) / dy if dy != 0 else DBL_MAX
        t_max_z = (vz + (1 if step_z > 0 else 0) - zo) / dz if dz != 0 else DBL_MAX
        t_delta_x = step_x / dx if dx != 0 else DBL_MAX
        t_delta_y = step_y / dy if dy != 0 else DBL_MAX
        t_delta_z = step_z / dz if dz != 0 else DBL_MAX

        found = 0
        was_inside = False
        last_index = 0
        last_dist = -1.0
        step = 0
        while True:
            inside = 0 <= vx < sx and 0 <= vy < sy and 0 <= vz < sz
            flat = 0
            if inside:
                was_inside = True
                flat = (vx * sy + vy) * sz + vz
            elif was_inside:
                break
            # Ties: X only when strictly smallest, Y over X, Z over both.
            if t_max_x < t_max_y:
                if t_max_x < t_max_z:
                    exit_d = t_max_x
                    vx += step_x
                    t_max_x += t_delta_x
                else:
                    exit_d = t_max_z
                    vz += step_z
                    t_max_z += t_delta_z
            else:
                if t_max_y < t_max_z:
                    exit_d = t_max_y
                    vy += step_y
                    t_max_y += t_delta_y
                else:
                    exit_d = t_max_z
                    vz += step_z
                    t_max_z += t_delta_z
            if inside:
                new = codes[flat] & ~found
                if new != 0:
                    for v in range(nvol):
                        if (new >> v) & 1:
                            out_index[v, k, r] = flat
                            out_dist[v, k, r] = exit_d
                    found |= new
                    if found == full:
                        break
                last_index = flat
                last_dist = exit_d
            step += 1
            if step > MAX_STEP:
                break
        for v in range(nvol):
            if not (found >> v) & 1:
                out_index[v, k, r] = last_index
                out_dist[v, k, r] = last_dist

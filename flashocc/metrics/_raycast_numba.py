"""The numba ray-casting kernels (imported only when numba is installed; see ``raycast.py``).

Semantics: FlashOCC@4084861 lib/dvr/dvr.cu, render_forward in "test" mode
(docs/official-behaviour.md#rayiou-rays-and-traversal). Every kernel walks rays with ``_walk``, so
the traversal exists once; the kernels differ only in how they get each ray's two points.

The kernels are serial over a range of rays and release the GIL: ``raycast.py`` runs ranges in a
thread pool. numba's ``prange`` (OpenMP layer) was measured to cost more: its idle worker spins after
every parallel region, about 11 ms of CPU per sample in ``flashocc evaluate`` (docs/benchmarks.md#metrics).
"""
from __future__ import annotations

import numba
import numpy as np

from flashocc.metrics._raycast_limits import DBL_MAX, MAX_STEP   # compile-time constants for numba


@numba.njit(nogil=True, cache=True)
def _walk(codes, sx, sy, sz, full, xo, yo, zo, xe, ye, ze, out_index, out_dist, col):
    """One ray from (xo, yo, zo) towards (xe, ye, ze), voxel units, through the bitmask ``codes``:
    writes column ``col`` of out_index / out_dist (V, N) for every volume bit in ``full``.

    The same walk as the official loop, arranged to be cheap: the ray first walks outside the grid
    until it enters (origins inside the grid skip this), then inside it keeps the flat voxel index
    and the steps left to each face instead of re-testing all bounds, and only the stepping axis
    changes. The official loop's ``step > MAX_STEP`` stop becomes a step budget.
    """
    rx = xe - xo
    ry = ye - yo
    rz = ze - zo
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
    tx = (vx + (1 if step_x > 0 else 0) - xo) / dx if dx != 0 else DBL_MAX
    ty = (vy + (1 if step_y > 0 else 0) - yo) / dy if dy != 0 else DBL_MAX
    tz = (vz + (1 if step_z > 0 else 0) - zo) / dz if dz != 0 else DBL_MAX
    ddx = step_x / dx if dx != 0 else DBL_MAX
    ddy = step_y / dy if dy != 0 else DBL_MAX
    ddz = step_z / dz if dz != 0 else DBL_MAX

    missing = full                   # volume bits not hit yet
    last_index = 0                   # never inside: voxel 0, distance -1
    last_dist = -1.0
    step = 0
    inside = 0 <= vx < sx and 0 <= vy < sy and 0 <= vz < sz
    while not inside and step <= MAX_STEP:
        # Ties: X only when strictly smallest, Y over X, Z over both (as everywhere below).
        if tx < ty:
            if tx < tz:
                vx += step_x
                tx += ddx
            else:
                vz += step_z
                tz += ddz
        else:
            if ty < tz:
                vy += step_y
                ty += ddy
            else:
                vz += step_z
                tz += ddz
        step += 1
        inside = 0 <= vx < sx and 0 <= vy < sy and 0 <= vz < sz
    if inside and step <= MAX_STEP:
        fx = step_x * sy * sz
        fy = step_y * sz
        fz = step_z
        left_x = sx - 1 - vx if step_x > 0 else vx       # steps along x before the ray leaves the grid
        left_y = sy - 1 - vy if step_y > 0 else vy
        left_z = sz - 1 - vz if step_z > 0 else vz
        budget = MAX_STEP - step                         # voxels the official loop still visits, minus one
        flat = (vx * sy + vy) * sz + vz
        while True:
            here = flat
            new = codes[np.uint64(here)] & missing       # unsigned index: no negative-index wraparound
            if tx < ty:
                if tx < tz:
                    exit_d = tx
                    tx += ddx
                    flat += fx
                    left_x -= 1
                else:
                    exit_d = tz
                    tz += ddz
                    flat += fz
                    left_z -= 1
            else:
                if ty < tz:
                    exit_d = ty
                    ty += ddy
                    flat += fy
                    left_y -= 1
                else:
                    exit_d = tz
                    tz += ddz
                    flat += fz
                    left_z -= 1
            if new != 0:
                v = 0
                while new >> v:
                    if (new >> v) & 1:
                        out_index[v, col] = here
                        out_dist[v, col] = exit_d
                    v += 1
                missing &= ~new
                if missing == 0:         # every volume hit: nothing left to learn
                    break
            last_index = here
            last_dist = exit_d
            budget -= 1
            if (left_x | left_y | left_z | budget) < 0:
                break
    # Volumes not hit take the last in-grid voxel and its exit distance.
    v = 0
    while missing >> v:
        if (missing >> v) & 1:
            out_index[v, col] = last_index
            out_dist[v, col] = last_dist
        v += 1


@numba.njit(nogil=True, cache=True)
def cast_kernel(codes, sx, sy, sz, nvol, origins, endpoints, start, stop, out_index, out_dist):
    """Rays ``start:stop`` (flat ids k * R + r) given by voxel-unit points: codes (X*Y*Z,) uint8
    occupancy bitmask, grid sizes, number of volumes V, origins (K, 3) float32 and end points (K, R, 3)
    float32; outputs index (V, K * R) int64 and dist (V, K * R) float64."""
    r_count = endpoints.shape[1]
    full = (1 << nvol) - 1
    for n in range(start, stop):
        k = n // r_count
        r = n - k * r_count
        _walk(codes, sx, sy, sz, full, np.float64(origins[k, 0]), np.float64(origins[k, 1]),
              np.float64(origins[k, 2]), np.float64(endpoints[k, r, 0]), np.float64(endpoints[k, r, 1]),
              np.float64(endpoints[k, r, 2]), out_index, out_dist, n)


@numba.njit(nogil=True, cache=True)
def cast_metric_kernel(codes, sx, sy, sz, nvol, origins, directions, lower, size, rays, start, stop,
                       out_index, out_dist):
    """Rays given in metres: origins (K, 3) float64 and unit directions (R, 3) float32 in the ego frame,
    the grid's ``lower`` corner and voxel ``size`` (3,) float64; ``rays`` (M,) int64 are the rays to
    cast as flat ids k * R + r, of which this call casts ``rays[start:stop]``. Outputs index (V, M)
    int64 and dist (V, M) float64.

    The voxel-unit points are rounded as ``raycast.to_voxel_units`` rounds them (same float64
    operations, then float32), so both routes give identical rays.
    """
    r_count = directions.shape[0]
    full = (1 << nvol) - 1
    for j in range(start, stop):
        n = rays[j]
        k = n // r_count
        r = n - k * r_count
        ox = origins[k, 0]
        oy = origins[k, 1]
        oz = origins[k, 2]
        xo = np.float64(np.float32((ox - lower[0]) / size[0]))
        yo = np.float64(np.float32((oy - lower[1]) / size[1]))
        zo = np.float64(np.float32((oz - lower[2]) / size[2]))
        xe = np.float64(np.float32((np.float64(directions[r, 0]) + ox - lower[0]) / size[0]))
        ye = np.float64(np.float32((np.float64(directions[r, 1]) + oy - lower[1]) / size[1]))
        ze = np.float64(np.float32((np.float64(directions[r, 2]) + oz - lower[2]) / size[2]))
        _walk(codes, sx, sy, sz, full, xo, yo, zo, xe, ye, ze, out_index, out_dist, j)


# ---- RayIoU's per-sample bookkeeping around the cast (the numpy code in rayiou.py does the same) ----
@numba.njit(nogil=True, cache=True)
def pack_kernel(first, second, free, out):
    """Occupancy bitmask of one or two flat label volumes (``second`` empty for one)."""
    if second.size == 0:
        for i in range(first.size):
            out[i] = first[i] != free
    else:
        for i in range(first.size):
            out[i] = (first[i] != free) | ((second[i] != free) << 1)


@numba.njit(nogil=True, cache=True)
def scored_rays(gt, index, dist, voxel, free):
    """GT side of a cast: which rays hit an occupied voxel, their class and float32 distance in metres
    (the float64 voxel distance rounded to float32, then scaled in float32, as the official code)."""
    n = index.size
    hit = np.empty(n, dtype=np.bool_)
    m = 0
    for j in range(n):
        h = gt[index[j]] != free
        hit[j] = h
        m += h
    label = np.empty(m, dtype=np.uint8)
    metres = np.empty(m, dtype=np.float32)
    i = 0
    for j in range(n):
        if hit[j]:
            label[i] = gt[index[j]]
            metres[i] = np.float32(dist[j]) * voxel
            i += 1
    return hit, label, metres


@numba.njit(nogil=True, cache=True)
def add_counts(gt_label, gt_metres, pred, pred_index, pred_dist, hit, voxel, thresholds, gt_count, pred_count, tp):
    """Add one sample's rays to RayIoU's totals. ``pred_index`` / ``pred_dist`` (float64 voxel units)
    cover every ray when ``hit`` (N,) is given, else only the scored rays (``hit`` empty)."""
    i = 0
    for j in range(pred_index.size):
        if hit.size and not hit[j]:
            continue
        g = gt_label[i]
        p = pred[pred_index[j]]
        gt_count[g] += 1
        pred_count[p] += 1
        if g == p:
            l1 = abs(np.float32(pred_dist[j]) * voxel - gt_metres[i])
            for k in range(thresholds.size):
                if l1 < thresholds[k]:       # float32 < float32, as numpy compares float32 with a float
                    tp[k, g] += 1
        i += 1

"""A slow, literal per-ray transcription of the official traversal (FlashOCC@4084861 lib/dvr/dvr.cu,
render_forward; docs/official-behaviour.md#rayiou-rays-and-traversal), for tests."""
from __future__ import annotations

import math

import numpy as np

MAX_STEP = 1000


def reference_cast(occupied: np.ndarray, origin, endpoint) -> tuple[tuple[int, int, int], float]:
    """One ray through a bool (X, Y, Z) grid: returns (voxel, exit distance) in voxel units."""
    sx, sy, sz = occupied.shape
    xo, yo, zo = (float(np.float32(c)) for c in origin)
    xe, ye, ze = (float(np.float32(c)) for c in endpoint)
    rx, ry, rz = xe - xo, ye - yo, ze - zo
    norm = math.sqrt(rx * rx + ry * ry + rz * rz)
    d = (rx / norm, ry / norm, rz / norm)
    v = [int(xo), int(yo), int(zo)]
    o = (xo, yo, zo)
    step = [1 if c >= 0 else -1 for c in d]
    t_max = [((v[a] + (1 if step[a] > 0 else 0)) - o[a]) / d[a] if d[a] != 0 else float("inf") for a in range(3)]
    t_delta = [step[a] / d[a] if d[a] != 0 else float("inf") for a in range(3)]
    path: list[tuple[tuple[int, int, int], float]] = []
    was_inside = False
    for _ in range(MAX_STEP + 1):
        inside = 0 <= v[0] < sx and 0 <= v[1] < sy and 0 <= v[2] < sz
        if inside:
            was_inside = True
        elif was_inside:
            break
        if t_max[0] < t_max[1]:
            axis = 0 if t_max[0] < t_max[2] else 2
        else:
            axis = 1 if t_max[1] < t_max[2] else 2
        exit_d = t_max[axis]
        if inside:
            path.append(((v[0], v[1], v[2]), exit_d))
        v[axis] += step[axis]
        t_max[axis] += t_delta[axis]
    if not path:
        return (0, 0, 0), -1.0
    for voxel, dist in path:
        if occupied[voxel]:
            return voxel, dist
    return path[-1]

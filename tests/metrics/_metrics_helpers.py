"""Shared constants and volume edits for the metrics tests (imported by name: keep the name unique)."""
import importlib.util

import numpy as np
import pytest

HAS_NUMBA = importlib.util.find_spec("numba") is not None
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed (pip install numba)")
needs_scipy = pytest.mark.skipif(not HAS_SCIPY, reason="scipy not installed (pip install scipy)")

LIDAR_ORIGIN = np.array([[0.9858, 0.0, 1.8402]])       # the official code comment's lidar mount
EIGHT_ORIGINS = np.array([[0.9858, 0.0, 1.8402]] + [[x, 0.3 * x, 1.84] for x in (-30, -20, -10, 5, 15, 25, 35)])


def shifted(volume: np.ndarray, axis: int) -> np.ndarray:
    """Shift labels by +1 voxel along ``axis``, filling the vacated slice with free (17)."""
    out = np.full_like(volume, 17)
    dst = [slice(None)] * 3
    src = [slice(None)] * 3
    dst[axis], src[axis] = slice(1, None), slice(None, -1)
    out[tuple(dst)] = volume[tuple(src)]
    return out


def relabelled(volume: np.ndarray) -> np.ndarray:
    """others (0) -> car (4)."""
    return np.where(volume == 0, 4, volume).astype(np.uint8)

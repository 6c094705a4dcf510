"""The occupancy grid: one spec object for ranges, voxel size, classes and colours.

Every module that needs 200 / 16 / 0.4 / 18 takes an ``OccGrid`` instead of repeating literals.
Volumes are indexed ``[x, y, z]`` in the ego frame (x forward, y left, z up), metres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OCC3D_CLASS_NAMES: tuple[str, ...] = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
)

# RGB colours of the official Open3D visualiser (FlashOCC@4084861 tools/analysis_tools/vis_occ.py,
# colormap_to_colors); free is never drawn, we keep white.
OCC3D_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (112, 128, 144), (220, 20, 60), (255, 127, 80), (255, 158, 0), (233, 150, 70),
    (255, 61, 99), (0, 0, 230), (47, 79, 79), (255, 140, 0), (255, 99, 71), (0, 207, 191),
    (175, 0, 75), (75, 0, 75), (112, 180, 60), (222, 184, 135), (0, 175, 0), (255, 255, 255),
)

# Voxel counts per class over Occ3D-nuScenes train, hard-coded in the official head for
# class_balance=True (FlashOCC@4084861 projects/mmdet3d_plugin/models/dense_heads/bev_occ_head.py,
# nusc_class_frequencies, read by BEVOCCHead2D.__init__).
OCC3D_CLASS_FREQUENCIES: tuple[int, ...] = (
    944004, 1897170, 152386, 2391677, 16957802, 724139, 189027, 2074468, 413451, 2384460,
    5916653, 175883646, 4275424, 51393615, 61411620, 105975596, 116424404, 1892500630,
)


@dataclass(frozen=True)
class OccGrid:
    """A regular voxel grid in the ego frame.

    ``lower``/``upper`` are the metric bounds (x, y, z) in metres, ``voxel_size`` the cell edge per
    axis. Labels are ``0 .. num_classes-1`` with ``free_label`` the empty class and
    ``ignore_label`` never scored.
    """

    lower: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    upper: tuple[float, float, float] = (40.0, 40.0, 5.4)
    voxel_size: tuple[float, float, float] = (0.4, 0.4, 0.4)
    class_names: tuple[str, ...] = OCC3D_CLASS_NAMES
    colors: tuple[tuple[int, int, int], ...] = OCC3D_COLORS
    free_label: int = 17
    ignore_label: int = 255

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Dx, Dy, Dz): 200, 200, 16 for Occ3D-nuScenes."""
        return tuple(int(round((hi - lo) / s)) for lo, hi, s in zip(self.lower, self.upper, self.voxel_size))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def semantic_classes(self) -> range:
        """Labels that are scored by mIoU (all but free)."""
        return range(self.free_label)

    def voxel_centers(self) -> np.ndarray:
        """(Dx, Dy, Dz, 3) float64 metric centres of every voxel."""
        axes = [lo + (np.arange(n) + 0.5) * s for lo, n, s in zip(self.lower, self.shape, self.voxel_size)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    def points_to_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metric points (..., 3) -> integer voxel indices (..., 3) by floor, and an in-grid mask."""
        idx = np.floor((np.asarray(points, dtype=np.float64) - np.asarray(self.lower)) / np.asarray(self.voxel_size))
        idx = idx.astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=-1)
        return idx, inside


OCC3D_NUSCENES = OccGrid()

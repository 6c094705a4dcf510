"""The nuScenes sensor rig: six cameras and LIDAR_TOP, with the public calibration of one real car.

The numbers are the calibration of the nuScenes v1.0-mini keyframe in ``../shared/fixtures/nuscenes_sample``
(scene-0061); ``tests/data/test_synth_rig.py`` checks that they equal the fixture. Intrinsics are for
the official 1600x900 images; ``nuscenes_rig(image_size)`` scales them to the rendered size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashocc.geometry import NUSCENES_CAMERAS

NUSCENES_IMAGE_SIZE: tuple[int, int] = (1600, 900)  # (W, H) of the official JPEGs

# name: ((fx, fy, cx, cy) at 1600x900, top three rows of cam2ego, camera time - LiDAR time in µs)
_CAMERAS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], int]] = {
    "CAM_FRONT_LEFT": (
        (1272.5979470598488, 1272.5979470598488, 826.6154927353808, 479.75165386361925),
        ((0.8207583427429199, -0.00034143668017350137, 0.5712754130363464, 1.5238779783248901),
         (-0.5712715983390808, 0.0032195018138736486, 0.8207547664642334, 0.4946313500404358),
         (-0.002119458047673106, -0.9999947547912598, 0.0024473799858242273, 1.5093282461166382)),
        -43107,
    ),
    "CAM_FRONT": (
        (1266.417203046554, 1266.417203046554, 816.2670197447984, 491.50706579294757),
        ((0.005684778559952974, -0.005636667832732201, 0.9999679327011108, 1.7007912397384644),
         (-0.9999834895133972, -0.0008371152798645198, 0.0056801484897732735, 0.01594563201069832),
         (0.000805071322247386, -0.9999837875366211, -0.005641333758831024, 1.5109575986862183)),
        -35491,
    ),
    "CAM_FRONT_RIGHT": (
        (1260.8474446004698, 1260.8474446004698, 807.968244525554, 495.3344268742088),
        ((-0.8329295516014099, -9.94603760773316e-06, 0.5533789992332458, 1.5508477687835693),
         (-0.55330491065979, 0.016378816217184067, -0.8328177332878113, -0.4934048056602478),
         (-0.009055409580469131, -0.9998658299446106, -0.013647902756929398, 1.4957480430603027)),
        -27612,
    ),
    "CAM_BACK_LEFT": (
        (1256.7414812095406, 1256.7414812095406, 792.1125740759628, 492.7757465151356),
        ((0.9477603435516357, 0.008665721863508224, -0.31886550784111023, 1.0356910228729248),
         (0.31896114349365234, -0.01397630013525486, 0.947664737701416, 0.4847950339317322),
         (0.0037556388415396214, -0.9998647570610046, -0.016010211780667305, 1.5909701585769653)),
        -528,
    ),
    "CAM_BACK": (
        (809.2209905677063, 809.2209905677063, 829.2196003259838, 481.77842384512485),
        ((0.002421709941700101, -0.016753608360886574, -0.99985671043396, 0.02832603082060814),
         (0.9999890923500061, -0.0039591072127223015, 0.0024883693549782038, 0.0034513676073402166),
         (-0.004000229295343161, -0.9998518228530884, 0.016743836924433708, 1.5791034698486328)),
        -10426,
    ),
    "CAM_BACK_RIGHT": (
        (1259.5137405846733, 1259.5137405846733, 807.2529053838625, 501.19579884916527),
        ((-0.9347755312919617, 0.015875838696956635, -0.35488399863243103, 1.0148781538009644),
         (0.35507455468177795, 0.011370494961738586, -0.9347688555717468, -0.4805682301521301),
         (-0.010805031284689903, -0.9998093247413635, -0.01626596786081791, 1.562395453453064)),
        -20058,
    ),
}

# LIDAR_TOP -> ego (the nuScenes LiDAR frame is x right, y forward, z up; values from the fixture above).
_LIDAR2EGO: tuple[tuple[float, ...], ...] = (
    (0.0020332718268036842, 0.9997040629386902, 0.024241721257567406, 0.9437130093574524),
    (-0.9999805092811584, 0.0021756570786237717, -0.00584863917902112, 0.0),
    (-0.005899650044739246, -0.02422935888171196, 0.9996890425682068, 1.8402299880981445),
)

# Velodyne HDL-32E: 32 beams evenly spread over [-30.67, +10.67] degrees of pitch.
LIDAR_PITCH_RANGE_DEG: tuple[float, float] = (-30.67, 10.67)
LIDAR_BEAMS = 32


def _rows_to_matrix(rows: tuple[tuple[float, ...], ...]) -> np.ndarray:
    out = np.eye(4)
    out[:3] = np.asarray(rows, dtype=np.float64)
    return out


@dataclass(frozen=True)
class Camera:
    name: str
    intrinsics: np.ndarray   # (3, 3) for the rendered image size
    cam2ego: np.ndarray      # (4, 4) OpenCV camera (x right, y down, z forward) -> ego
    time_offset_us: int      # exposure time minus the LiDAR keyframe time


@dataclass(frozen=True)
class Rig:
    image_size: tuple[int, int]          # (W, H) of the rendered images
    cameras: tuple[Camera, ...]          # NUSCENES_CAMERAS order
    lidar2ego: np.ndarray                # (4, 4)

    def lidar_pitches(self) -> np.ndarray:
        """(32,) beam pitch angles in radians, lowest beam (ring 0) first."""
        lo, hi = LIDAR_PITCH_RANGE_DEG
        return np.deg2rad(np.linspace(lo, hi, LIDAR_BEAMS))


def nuscenes_rig(image_size: tuple[int, int] = (704, 396)) -> Rig:
    """The real nuScenes rig with intrinsics scaled from 1600x900 to ``image_size`` (W, H)."""
    width, height = image_size
    if width < 8 or height < 8:
        raise ValueError(f"image size must be at least 8x8 pixels, got {width}x{height}")
    sx, sy = width / NUSCENES_IMAGE_SIZE[0], height / NUSCENES_IMAGE_SIZE[1]
    cams = []
    for name in NUSCENES_CAMERAS:
        (fx, fy, cx, cy), rows, offset = _CAMERAS[name]
        k = np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])
        cams.append(Camera(name, k, _rows_to_matrix(rows), offset))
    return Rig((int(width), int(height)), tuple(cams), _rows_to_matrix(_LIDAR2EGO))

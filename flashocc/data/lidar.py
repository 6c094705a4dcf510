"""LiDAR inputs of the LiDAR-only and fusion models: multi-sweep point clouds and per-camera depth images.

Points follow mmdet3d 1.0 ``LoadPointsFromMultiSweeps`` as EFFOcc configures it (synsin0/EFFOcc@13aeb78
mmdet3d/datasets/pipelines/loading.py, LoadPointsFromMultiSweeps; configs/effocc_fusion_r18_data_scales/
flashocc_fusion_r18_base_100%_seqs.py: ``sweeps_num=9, pad_empty_sweeps=True, remove_close=True``), then go
into the LiDAR keyframe's ego frame (the frame of the Occ3D grid) and through the sample's BEV flips.
Depth images follow EFFOcc's ``PointToMultiViewDepthFusion``. Where flashocc differs from upstream, and
why: docs/official-behaviour.md#lidar-points-and-sweeps.

Point features: (x, y, z, intensity, Δt). Intensity is kept raw (0..255 on nuScenes), as upstream;
Δt is the keyframe time minus the sweep time in seconds (0 for the keyframe and for padded copies).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc.data import transforms as T
from flashocc.data.infos import SampleInfo

POINT_FEATURES = 5        # x, y, z, intensity, Δt (the files hold x, y, z, intensity, ring)
TIME_FEATURE = 4


@dataclass(frozen=True)
class SweepSettings:
    """The ``DataConfig`` fields that shape a multi-sweep cloud."""

    sweeps: int = 10                   # info sweeps considered, newest first (the infos' max_sweeps)
    sweeps_used: int = 9               # sweeps concatenated after the keyframe (upstream sweeps_num)
    min_distance: float = 1.0          # |x| and |y| below this (m, sweep LiDAR frame) drop a sweep point
    pad_empty_sweeps: bool = True


def select_sweeps(available: int, used: int, rng: np.random.Generator | None) -> np.ndarray:
    """Indices into the newest-first sweep list.

    All of them (newest first) when there are at most ``used``; otherwise ``used`` drawn without
    replacement, in random order, when ``rng`` is given (training), else the newest ``used``.
    Official bug (EFFOcc flashocc_fusion_r18_base_100%_seqs.py, test_pipeline): the test pipeline's
    LoadPointsFromMultiSweeps leaves ``test_mode`` at its default False, so upstream evaluation also
    draws 9 of the 10 sweeps at random; flashocc's evaluation takes the newest, deterministically.
    """
    if available <= used:
        return np.arange(available)
    if rng is None:
        return np.arange(used)
    return rng.choice(available, used, replace=False)


def remove_close(points: np.ndarray, radius: float) -> np.ndarray:
    """Drop points with |x| < radius and |y| < radius (a square, as ``_remove_close``: the ego's roof)."""
    close = (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)
    return points[~close]


def multi_sweep_points(sample: SampleInfo, settings: SweepSettings, resolve: Callable[[str, str], Path],
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """(M, 5) float32 (x, y, z, intensity, Δt) in the keyframe LiDAR frame: keyframe first, then sweeps.

    ``resolve(relative_path, what)`` finds a file under the data root (``dataset.resolve_data_path``)
    and raises ``MissingFileError`` naming the sample and the file. Close points are removed from the
    sweeps only, in each sweep's own LiDAR frame, before it is moved (upstream order).
    """
    key = T.load_points(resolve(sample.lidar_path, "LiDAR keyframe"), sample.token)
    key[:, TIME_FEATURE] = 0.0                 # the ring index is replaced by the time lag
    parts = [key]
    sweeps = sample.sweeps[:settings.sweeps]
    if not sweeps and settings.pad_empty_sweeps:
        # Official quirk (LoadPointsFromMultiSweeps, pad_empty_sweeps): with no sweeps in the infos (FlashOcc's
        # own max_sweeps=0 files) the keyframe is appended sweeps_num more times, each copy without its close
        # points and with Δt = 0, so the 10-point voxel cap weights the voxel means unevenly. Kept for parity.
        parts += [remove_close(key, settings.min_distance)] * settings.sweeps_used
    for i in select_sweeps(len(sweeps), settings.sweeps_used, rng):
        sweep = sweeps[int(i)]
        path = resolve(sweep.data_path, f"LiDAR sweep {int(i)} (timestamp {sweep.timestamp})")
        pts = remove_close(T.load_points(path, sample.token), settings.min_distance)
        rot, tran = sweep.sensor2lidar[:3, :3], sweep.sensor2lidar[:3, 3]
        # Upstream rounds to float32 after the rotation and again after the translation; so do we.
        pts[:, :3] = pts[:, :3] @ rot.T
        pts[:, :3] += tran
        pts[:, TIME_FEATURE] = sample.timestamp / 1e6 - sweep.timestamp / 1e6   # upstream's float64 seconds
        parts.append(pts)
    return np.concatenate(parts).astype(np.float32, copy=False)


def to_grid_frame(points: np.ndarray, lidar2ego: np.ndarray, bda: np.ndarray) -> np.ndarray:
    """Points (M, C) from the keyframe LiDAR frame into the ego frame of the Occ3D grid, then through the
    3x3 BEV augmentation ``bda`` (the flips applied to the labels), float32; other features unchanged.

    EFFOcc's ToEgo goes to the ego frame at CAM_FRONT's exposure instead and its BEVAug matrix is 4x4
    with a translation; ours is the labels' frame and a 3x3 bda, since flips need no translation
    (docs/official-behaviour.md#lidar-points-and-sweeps).
    """
    m = np.asarray(bda, np.float64) @ np.asarray(lidar2ego, np.float64)[:3]     # (3, 4)
    out = points.copy()
    out[:, :3] = points[:, :3].astype(np.float64) @ m[:, :3].T + m[:, 3]
    return out


def lidar_depth_images(points: np.ndarray, sample: SampleInfo, cameras: tuple[str, ...], post_rots: list,
                       post_trans: list, image_hw: tuple[int, int], depth_range: tuple[float, float]) -> np.ndarray:
    """(N, H, W) float32 metres at input resolution, 0 = no point (EFFOcc PointToMultiViewDepthFusion,
    downsample 1): ``points`` in the keyframe LiDAR frame, through each camera's own ego pose and
    intrinsics and its image augmentation, rounded to the nearest pixel, 1 <= d < 45 m by default.

    Per pixel we keep the nearest point. Upstream sorts by the float32 key pixel + depth / 100 with an
    unstable argsort, so of two points in one pixel whose depths differ by less than the key's float32
    spacing (up to 1.6 m in the lower rows of a 256x704 image) either may win
    (docs/official-behaviour.md#lidar-points-and-sweeps).
    """
    maps = []
    for name, rot, tran in zip(cameras, post_rots, post_trans):
        cam = sample.cams[name]
        lidar2cam = T.lidar_to_camera(sample.lidar2ego, sample.ego2global, cam.sensor2ego, cam.ego2global)
        maps.append(T.lidar_depth_map(points, lidar2cam, cam.intrinsics, rot, tran, image_hw, depth_range))
    return np.stack(maps)

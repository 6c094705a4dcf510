"""RayIoU query-ray origins from the scene's keyframe poses ("temporal casting"; SparseOcc@af4d9df
loaders/ego_pose_dataset.py, EgoPoseDataset.__getitem__; docs/official-behaviour.md#rayiou-origins).

For a reference keyframe r, every keyframe f of the same scene contributes its LiDAR position
expressed in r's ego frame: ``lidar2ego_r @ inv(ego2global_r @ lidar2ego_r) @ (ego2global_f @
lidar2ego_f) @ [0, 0, 0, 1]``. Origins with |x| or |y| >= 39 m are dropped, and at most 8 are kept
at indices ``round(linspace(0, n - 1, 8))`` of the time-ordered list (past and future frames).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from flashocc.data.infos import SampleInfo

MAX_ORIGINS = 8
MAX_ABS_XY = 39.0   # metres, strict


def scene_ray_origins(samples: Sequence[SampleInfo], max_origins: int = MAX_ORIGINS,
                      max_abs_xy: float = MAX_ABS_XY) -> dict[str, np.ndarray]:
    """Origins for every keyframe of ONE scene, given in time order: {token: (K, 3) float64, metres, ego}.

    Pure function of the poses: ``lidar2ego`` and ``ego2global`` (LiDAR-time ego pose) of each record.
    """
    lidar2global = [_pose(s.ego2global, s.token, "ego2global") @ _pose(s.lidar2ego, s.token, "lidar2ego")
                    for s in samples]
    out: dict[str, np.ndarray] = {}
    for r, ref in enumerate(samples):
        ref_lidar_from_global = np.linalg.inv(lidar2global[r])
        kept = []
        for f in range(len(samples)):
            if f == r:
                in_ref_lidar = np.zeros(3, dtype=np.float32)
            else:
                # Official quirk (SparseOcc EgoPoseDataset.__getitem__): the position in the
                # reference LiDAR frame is rounded to float32 before going to the ego frame.
                in_ref_lidar = (ref_lidar_from_global @ lidar2global[f])[:3, 3].astype(np.float32)
            origin = np.asarray(ref.lidar2ego, dtype=np.float64)[:3] @ np.append(in_ref_lidar.astype(np.float64), 1.0)
            if abs(origin[0]) < max_abs_xy and abs(origin[1]) < max_abs_xy:
                kept.append(origin)
        if len(kept) > max_origins:
            # np.round is half-to-even like the official code; exact .5 ties cannot occur for n > 8.
            kept = [kept[i] for i in np.round(np.linspace(0, len(kept) - 1, max_origins)).astype(np.int64)]
        out[ref.token] = np.stack(kept) if kept else np.zeros((0, 3), dtype=np.float64)
    return out


def ray_origins_from_infos(samples: Iterable[SampleInfo], max_origins: int = MAX_ORIGINS,
                           max_abs_xy: float = MAX_ABS_XY) -> dict[str, np.ndarray]:
    """Origins for every sample of an info list: groups by ``scene_token`` (else ``scene_name``, as the
    official code falls back to the scene parsed from ``occ_path``), sorts by timestamp.

    Only keyframes present in ``samples`` are used, as in the official evaluation, so pass the
    whole evaluated split, not a subset of a scene.
    """
    scenes: dict[str, list[SampleInfo]] = defaultdict(list)
    for s in samples:
        scene = s.scene_token or s.scene_name
        if not scene:
            raise ValueError(f"sample {s.token}: empty scene_token and scene_name; RayIoU origins group "
                             f"keyframes by scene")
        scenes[scene].append(s)
    out: dict[str, np.ndarray] = {}
    for frames in scenes.values():
        frames.sort(key=lambda s: s.timestamp)
        out.update(scene_ray_origins(frames, max_origins, max_abs_xy))
    return out


def _pose(matrix: np.ndarray, token: str, name: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ValueError(f"sample {token}: {name} must be a finite (4, 4) matrix, got shape {m.shape}")
    return m

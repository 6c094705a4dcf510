"""A geometrically valid SparseOcc batch of random images on a nuScenes-like rig, for tests, FLOP counting
and benchmarks (never for training): T frames of N cameras, the ego driving forward ``step_m`` per frame.
"""
from __future__ import annotations

import math

import torch

from flashocc.models.sparseocc.config import SparseOccConfig


def rig_lidar2img(cfg: SparseOccConfig, step_m: float = 2.0) -> torch.Tensor:
    """(T·N, 4, 4) ego frame of the current frame -> pixels of each camera of each frame: six cameras
    60° apart at 1.6 m, a 1260 px focal length at 1600 px width scaled to the input width; frame t was
    taken ``t·step_m`` metres behind the current pose (static world)."""
    h, w = cfg.input_size
    scale = w / 1600
    k = torch.eye(4)
    k[0, 0] = k[1, 1] = 1260.0 * scale
    k[0, 2], k[1, 2] = 800.0 * scale, h / 2
    mats = []
    for t in range(cfg.num_frames):
        for n in range(cfg.num_views):
            yaw = 2 * math.pi * n / cfg.num_views
            fwd = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
            right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
            down = torch.tensor([0.0, 0.0, -1.0])
            cam2ego = torch.eye(4)
            cam2ego[:3, :3] = torch.stack([right, down, fwd], dim=1)
            cam2ego[:3, 3] = torch.tensor([1.0 - t * step_m, 0.0, 1.6])
            mats.append(k @ torch.linalg.inv(cam2ego))
    return torch.stack(mats)


def example_batch(cfg: SparseOccConfig, batch_size: int = 1, seed: int = 0, targets: bool = False) -> dict:
    """Random BGR 0..255 images and the rig's ``lidar2img``; with ``targets`` a GT of a ground plane,
    a few boxes of thing classes (instance ids from 1) and some 255 voxels."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.input_size
    m = cfg.num_frames * cfg.num_views
    batch = {"img": torch.rand(batch_size, m, 3, h, w, generator=g) * 255,
             "lidar2img": rig_lidar2img(cfg)[None].repeat(batch_size, 1, 1, 1)}
    if not targets:
        return batch
    dx, dy, dz = cfg.grid.shape
    sem = torch.full((batch_size, dx, dy, dz), cfg.grid.free_label, dtype=torch.uint8)
    inst = torch.zeros((batch_size, dx, dy, dz), dtype=torch.uint8)
    sem[:, :, :, 2] = 11  # driveable surface
    sem[:, : dx // 4, :, 2:5] = 15  # a wall of man-made along one side
    for i in range(4):
        x, y = [int(v) for v in torch.randint(10, min(dx, dy) - 10, (2,), generator=g)]
        sem[:, x:x + 6, y:y + 3, 3:5] = 4 if i % 2 == 0 else 7  # cars and pedestrians
        inst[:, x:x + 6, y:y + 3, 3:5] = i + 1
    sem[:, -3:, -3:, :] = cfg.grid.ignore_label
    batch.update(voxel_semantics=sem, voxel_instances=inst)
    return batch


__all__ = ["example_batch", "rig_lidar2img"]

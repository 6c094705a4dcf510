"""The batch dict shared by the data pipeline, the model, export and the runtimes.

Inputs (official semantics: FlashOCC@4084861 projects/mmdet3d_plugin/datasets/pipelines/loading.py,
PrepareImageInputs.get_inputs and LoadAnnotationsBEVDepth; docs/official-behaviour.md):
  img         (B, N, 3, H, W) float32, normalised, **BGR** channel order (official quirk,
              docs/official-behaviour.md#bgr-normalisation)
  sensor2ego  (B, N, 4, 4)    camera -> its own ego frame
  ego2global  (B, N, 4, 4)    each camera's own ego pose at its timestamp
  intrinsics  (B, N, 3, 3)
  post_rots   (B, N, 3, 3)    image augmentation (original -> augmented pixels)
  post_trans  (B, N, 3)
  bda         (B, 3, 3)       BEV augmentation applied in the key-ego frame
LiDAR inputs (LiDAR-only and fusion models; flashocc.data.lidar):
  points      list of B (Nᵢ, 5) float32 tensors (x, y, z, intensity, Δt s): keyframe + sweeps in the
              frame of the occupancy grid (LiDAR keyframe ego, then the bda flips); a list, not a
              tensor, because Nᵢ differs per sample
  lidar_depth (B, N, H, W)    metres at input resolution, 0 = no point (keyframe + sweeps per camera)
Targets (train mode): voxel_semantics (B, Dx, Dy, Dz) uint8/long, mask_camera (B, Dx, Dy, Dz),
optional mask_lidar and gt_depth (B, N, H, W) metres (0 = no LiDAR point); panoptic models also
voxel_instances (B, Dx, Dy, Dz) uint8 segment ids, 0 = free (Occ3D-panoptic ``instances``).
Learning from part of the labels (docs/few-labels.md): labeled (B,) bool, False for a sample of an
unlabelled scene (its targets reach no supervised loss); a distillation teacher's outputs teacher_bev
(B, C, Dy, Dx) and teacher_logits (B, Dx, Dy, Dz, K), added by the trainer.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

INPUT_KEYS: tuple[str, ...] = ("img", "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda")
TARGET_KEYS: tuple[str, ...] = ("voxel_semantics", "mask_camera")
OPTIONAL_KEYS: tuple[str, ...] = ("mask_lidar", "gt_depth", "points", "lidar_depth", "voxel_instances")
LIST_KEYS: tuple[str, ...] = ("points",)  # one tensor per sample, kept as a list by collate_batch

_TRAILING_SHAPES = {
    "sensor2ego": (4, 4), "ego2global": (4, 4), "intrinsics": (3, 3), "post_rots": (3, 3), "post_trans": (3,),
}


def check_inputs(batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Validate the input keys and shapes once on entry; returns (B, N)."""
    missing = [k for k in INPUT_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch is missing {missing}; expected keys {list(INPUT_KEYS)}")
    img = batch["img"]
    if img.dim() != 5 or img.shape[2] != 3:
        raise ValueError(f"batch['img'] must be (B, N, 3, H, W), got {tuple(img.shape)}")
    b, n = img.shape[:2]
    for key, trailing in _TRAILING_SHAPES.items():
        want = (b, n, *trailing)
        if tuple(batch[key].shape) != want:
            raise ValueError(f"batch['{key}'] must be {want} to match img {tuple(img.shape)}, got {tuple(batch[key].shape)}")
    if tuple(batch["bda"].shape) != (b, 3, 3):
        raise ValueError(f"batch['bda'] must be ({b}, 3, 3), got {tuple(batch['bda'].shape)}")
    return b, n


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor, and every tensor of a list key (``points``), on ``device`` (strings such as
    ``tokens`` stay as they are)."""
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, list) and v and all(isinstance(x, torch.Tensor) for x in v):
            return [x.to(device, non_blocking=True) for x in v]
        return v
    return {k: move(v) for k, v in batch.items()}

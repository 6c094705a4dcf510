"""``EFFOcc``: the fusion model (``FlashFusionOCC``) and, without a camera branch, ``FlashLiDAROCC``.

EFFOcc@9544ca0 mmdet3d/models/detectors/flash_lidarocc.py: FlashFusionOCC.extract_bev_feat_occ runs
image encoder -> LiDAR-assisted lift-splat (64-ch camera BEV), voxelize -> VFE -> SparseEncoder
(256-ch LiDAR BEV), ``occ_fuser`` (camera first), then ``pts_backbone`` (SECOND) and ``pts_neck``
(SECONDFPN) on the fused map and ``occ_head``; FlashLiDAROCC feeds the sparse encoder's BEV straight into
SECOND. The child names are the official state-dict prefixes, so EFFOcc checkpoints load strictly
(sparse-conv weights converted from either spconv layout by ``convert_official_state_dict``).
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from flashocc.batch import check_inputs
from flashocc.device import autocast_enabled
from flashocc.errors import CheckpointMismatchError, DataError
from flashocc.models.criterion import OccOutputs, OccupancyCriterion
from flashocc.models.view_transformer import Lifted
from flashocc.ops.bev_pool import BevPoolIndices
from flashocc.ops.sparse_conv import SubMConv3d, SparseConv3d, sparse_weight_from_spconv1, sparse_weight_from_spconv2


class EFFOcc(nn.Module):
    """[Images +] points -> occupancy logits (B, Dx, Dy, Dz, K) indexed [x, y, z, class].

    ``forward(batch)``: eval mode returns logits, train mode the criterion's losses. Batch keys: ``points``
    (list of (Nᵢ, 5)), and for the fusion model the camera inputs and ``lidar_depth`` (when the depth net
    is LiDAR-assisted). Stages (timed by ``flashocc bench``): ``voxelize`` -> ``encode_points``;
    ``encode_images`` -> ``lift_to_bev``; ``fuse``; ``bev_encoder``; ``occ_head``.
    """

    def __init__(self, *, pts_middle_encoder: nn.Module, pts_backbone: nn.Module, pts_neck: nn.Module,
                 occ_head: nn.Module, criterion: OccupancyCriterion, pts_voxel_layer: nn.Module | None = None,
                 pts_voxel_encoder: nn.Module | None = None, img_backbone: nn.Module | None = None,
                 img_neck: nn.Module | None = None, img_view_transformer: nn.Module | None = None,
                 occ_fuser: nn.Module | None = None, semantic_head: nn.Module | None = None) -> None:
        super().__init__()
        camera = [img_backbone, img_neck, img_view_transformer, occ_fuser]
        if any(m is None for m in camera) and any(m is not None for m in camera):
            raise ValueError("give all of img_backbone, img_neck, img_view_transformer and occ_fuser, or none")
        if (pts_voxel_layer is None) != (pts_voxel_encoder is None):
            raise ValueError("give both pts_voxel_layer and pts_voxel_encoder (hard voxels), or neither (dense encoder)")
        if (semantic_head is None) != (criterion.semantic_loss_weight == 0):
            raise ValueError("give a semantic_head exactly when the criterion has semantic_loss_weight > 0")
        self.img_backbone, self.img_neck, self.img_view_transformer = img_backbone, img_neck, img_view_transformer
        self.pts_voxel_layer, self.pts_voxel_encoder = pts_voxel_layer, pts_voxel_encoder
        self.pts_middle_encoder = pts_middle_encoder
        self.occ_fuser = occ_fuser
        self.pts_backbone, self.pts_neck = pts_backbone, pts_neck
        self.occ_head = occ_head
        self.semantic_head = semantic_head
        self.criterion = criterion

    @property
    def has_camera(self) -> bool:
        return self.img_backbone is not None

    # ---- LiDAR stages -------------------------------------------------------------------------------
    @staticmethod
    def points_of(batch: Mapping[str, Any]) -> list[torch.Tensor]:
        points = batch.get("points")
        if not isinstance(points, (list, tuple)) or not points or not all(isinstance(p, torch.Tensor) for p in points):
            raise DataError("EFFOcc models need batch['points']: a list of (Nᵢ, 5) float32 tensors per sample "
                            "(DataConfig load_points=True)")
        return list(points)

    def voxelize(self, batch: Mapping[str, Any]) -> Any:
        """Hard voxels (voxels, coords (M, 4) b/z/y/x, counts) for the sparse encoder; the points themselves
        for a dense encoder."""
        points = self.points_of(batch)
        if self.pts_voxel_layer is None:
            return points
        with torch.no_grad():
            return self.pts_voxel_layer([p.float() for p in points])

    def encode_points(self, voxelized: Any, batch_size: int) -> torch.Tensor:
        """-> LiDAR BEV (B, C, Dy, Dx)."""
        if self.pts_voxel_layer is None:
            return self.pts_middle_encoder(voxelized)
        voxels, coords, counts = voxelized
        features = self.pts_voxel_encoder(voxels, counts, coords)
        return self.pts_middle_encoder(features, coords, batch_size)

    # ---- camera stages ------------------------------------------------------------------------------
    def encode_images(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        img = batch["img"]
        b, n, c, h, w = img.shape
        x = self.img_neck(self.img_backbone(img.reshape(b * n, c, h, w)))
        return x.view(b, n, *x.shape[1:])

    def lift_to_bev(self, encoded: torch.Tensor, batch: Mapping[str, torch.Tensor],
                    indices: BevPoolIndices | None = None) -> Lifted:
        return self.img_view_transformer(encoded, batch, indices)

    # ---- after the encoders -------------------------------------------------------------------------
    def fuse_bev(self, img_bev: torch.Tensor | None, pts_bev: torch.Tensor) -> torch.Tensor:
        return pts_bev if self.occ_fuser is None else self.occ_fuser(img_bev, pts_bev)

    def bev_encoder(self, bev: torch.Tensor) -> torch.Tensor:
        # As FlashOcc's BEV encoder: fp32 under AMP (the official BEVDet.bev_encoder is @force_fp32).
        device_type = bev.device.type
        guard = torch.autocast(device_type, enabled=False) if autocast_enabled(device_type) else nullcontext()
        with guard:
            return self.pts_neck(self.pts_backbone(bev.float()))

    def forward_outputs(self, batch: Mapping[str, Any], indices: BevPoolIndices | None = None) -> OccOutputs:
        points = self.points_of(batch)
        lifted = None
        if self.has_camera:
            check_inputs(batch)
            lifted = self.lift_to_bev(self.encode_images(batch), batch, indices)
        pts_bev = self.encode_points(self.voxelize(batch), len(points))
        bev = self.fuse_bev(None if lifted is None else lifted.bev, pts_bev)
        feature = self.bev_encoder(bev)   # the fused BEV feature a distillation student is taught (engine/distill.py)
        logits = self.occ_head(feature)
        semantic = None
        if self.semantic_head is not None and self.training:
            semantic = self.semantic_head(lifted.context)
        depth = None if lifted is None else lifted.depth
        context = None if lifted is None else lifted.context
        return OccOutputs(logits, depth, context, semantic, batch, feature)

    def forward(self, batch: Mapping[str, Any], indices: BevPoolIndices | None = None):
        if not self.training:
            return self.forward_outputs(batch, indices).logits
        self.criterion.check_targets(batch)
        return self.criterion(self.forward_outputs(batch, indices), batch)

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any], indices: BevPoolIndices | None = None) -> torch.Tensor:
        """Class labels (B, Dx, Dy, Dz) uint8; call ``model.eval()`` first."""
        return self.forward_outputs(batch, indices).logits.argmax(dim=-1).to(torch.uint8)

    # ---- official checkpoints -----------------------------------------------------------------------
    def convert_official_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with sparse-conv weights in our (C_out, C_in, kD, kH, kW) layout.

        EFFOcc checkpoints hold them as spconv 2.x (C_out, kD, kH, kW, C_in) or as mmcv / spconv 1.x
        (kD, kH, kW, C_in, C_out); the layout is told apart by shape (EFFOcc patches
        ``_load_from_state_dict`` for the same permutation). Other keys pass through unchanged.
        """
        out = dict(state)
        for name, module in self.named_modules():
            if not isinstance(module, (SubMConv3d, SparseConv3d)):
                continue
            key = f"{name}.weight"
            if key not in out:
                continue
            w = out[key]
            own = tuple(module.weight.shape)
            if tuple(w.shape) == own or w.dim() != 5:
                continue
            c_out, c_in, kd, kh, kw = own
            candidates = []
            if tuple(w.shape) == (c_out, kd, kh, kw, c_in):
                candidates.append(sparse_weight_from_spconv2)
            if tuple(w.shape) == (kd, kh, kw, c_in, c_out):
                candidates.append(sparse_weight_from_spconv1)
            if len(candidates) == 1:
                out[key] = candidates[0](w)
            elif len(candidates) > 1:
                raise CheckpointMismatchError(f"{key}: shape {tuple(w.shape)} fits both spconv layouts; convert it "
                                              f"to (C_out, C_in, kD, kH, kW) = {own} first")
        return out


__all__ = ["EFFOcc"]

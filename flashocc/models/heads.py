"""Occupancy heads: the channel-to-height head (FlashOcc) and the 3D-conv head (BEVDetOcc baseline)."""
from __future__ import annotations

import torch
from torch import nn

from flashocc.models.layers import ConvModule


class BEVOCCHead2D(nn.Module):
    """Channel-to-height head: BEV map (B, C, Dy, Dx) -> logits (B, Dx, Dy, Dz, num_classes).

    conv3x3 (+bias) + ReLU, then per BEV cell Linear -> Softplus -> Linear to Dz·num_classes channels,
    split height-major: channel = z·num_classes + class (FlashOCC@4084861
    projects/mmdet3d_plugin/models/dense_heads/bev_occ_head.py, BEVOCCHead2D.forward;
    docs/official-behaviour.md, "Channel-to-height order"). The permute
    (0, 3, 2, 1) turns the [y, x] map into [x, y] so logits are indexed like Occ3D [x, y, z].
    """

    def __init__(self, in_dim: int = 256, out_dim: int = 256, num_z: int = 16, num_classes: int = 18) -> None:
        super().__init__()
        self.num_z, self.num_classes = num_z, num_classes
        # Official detail (BEVOCCHead2D.__init__): mmcv ConvModule's default ReLU follows final_conv.
        self.final_conv = ConvModule(nn.Conv2d(in_dim, out_dim, 3, padding=1), relu=True)
        self.predicter = nn.Sequential(
            nn.Linear(out_dim, out_dim * 2), nn.Softplus(), nn.Linear(out_dim * 2, num_classes * num_z)
        )

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        x = self.final_conv(bev).permute(0, 3, 2, 1)  # (B, Dx, Dy, C)
        b, dx, dy, _ = x.shape
        return self.predicter(x).view(b, dx, dy, self.num_z, self.num_classes)


class BEVOCCHead3D(nn.Module):
    """3D head: (B, C, Dz, Dy, Dx) -> Conv3d 3x3x3 (+bias) + ReLU -> per voxel Linear -> Softplus ->
    Linear -> logits (B, Dx, Dy, Dz, num_classes) (bev_occ_head.py, BEVOCCHead3D)."""

    def __init__(self, in_dim: int = 32, out_dim: int = 32, num_classes: int = 18) -> None:
        super().__init__()
        self.final_conv = ConvModule(nn.Conv3d(in_dim, out_dim, 3, padding=1), relu=True)
        self.predicter = nn.Sequential(nn.Linear(out_dim, out_dim * 2), nn.Softplus(), nn.Linear(out_dim * 2, num_classes))

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        return self.predicter(self.final_conv(voxels).permute(0, 4, 3, 2, 1))

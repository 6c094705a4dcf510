"""Necks: ``CustomFPN`` on image features, ``FPN_LSS`` / ``LSSFPN3D`` on BEV features.

Class names follow the official modules so their state-dict prefixes read the same
(FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/fpn.py, CustomFPN; necks/lss_fpn.py, FPN_LSS and LSSFPN3D).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flashocc.models.layers import ConvModule


class CustomFPN(nn.Module):
    """Top-down FPN that returns only the finest level: 1x1 laterals (bias), nearest upsample + add,
    one 3x3 output conv (bias). Output (B·N, out_channels, H/16, W/16) for the R50 configs."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(ConvModule(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.fpn_convs = nn.ModuleList([ConvModule(nn.Conv2d(out_channels, out_channels, 3, padding=1))])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        return self.fpn_convs[0](laterals[0])


class FPN_LSS(nn.Module):  # noqa: N801 - official name, kept so users recognise it
    """BEV neck: cat[feats[0], up4(feats[2])] -> 2x (conv3x3, BN, ReLU) -> up2 -> conv3x3, BN, ReLU, conv1x1.

    Official detail (lss_fpn.py, FPN_LSS.forward): bilinear upsampling with align_corners=True, and the
    high-resolution map comes first in the concatenation.
    """

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 4,
                 input_feature_index: tuple[int, int] = (0, 2)) -> None:
        super().__init__()
        self.input_feature_index = input_feature_index
        self.out_channels = out_channels
        mid = out_channels * 2
        self.up = nn.Upsample(scale_factor=scale_factor, mode="bilinear", align_corners=True)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        high, low = (feats[i] for i in self.input_feature_index)
        x = torch.cat([high, self.up(low)], dim=1)
        return self.up2(self.conv(x))


class LSSFPN3D(nn.Module):
    """3D BEV neck of the BEVDetOcc baseline: trilinear up x2 / x4 (align_corners=True), cat[l0, l1, l2],
    then Conv3d 1x1 (no bias) + BN3d + ReLU (lss_fpn.py, LSSFPN3D)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.up1 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
        self.up2 = nn.Upsample(scale_factor=4, mode="trilinear", align_corners=True)
        self.conv = ConvModule(nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels), relu=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x8, x16, x32 = feats
        return self.conv(torch.cat([x8, self.up1(x16), self.up2(x32)], dim=1))

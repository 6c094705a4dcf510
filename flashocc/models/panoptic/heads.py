"""Heads of Panoptic-FlashOcc: ``BEVOCCHead2D_V2`` (the FlashOcc head's layers) and the CenterPoint-style
instance-centre head ``CenternessHead``.

``CenternessHead`` keeps the official child names (FlashOCC@4084861
projects/mmdet3d_plugin/models/dense_heads/bev_centerpoint_head.py, Centerness_Head and SeparateHead):
``shared_conv.conv/bn`` and ``task_heads.0.<branch>.0.conv/bn``, ``task_heads.0.<branch>.1``. The dim,
rot and vel branches are trained with weight 0 upstream; they are kept so that official checkpoints load
strictly, and skipped at inference.
"""
from __future__ import annotations

import torch
from torch import nn

from flashocc.models.heads import BEVOCCHead2D

# Config order of the official detection classes (projects/configs/panoptic-flashocc/*, class_names).
DETECTION_CLASSES: tuple[str, ...] = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier",
                                      "motorcycle", "bicycle", "pedestrian", "traffic_cone")
# branch -> output channels, in the official order of common_heads then heatmap.
BRANCHES: dict[str, int] = {"reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2, "heatmap": len(DETECTION_CLASSES)}
INFERENCE_BRANCHES = ("reg", "height", "heatmap")
HEATMAP_INIT_BIAS = -2.19


class BEVOCCHead2D_V2(BEVOCCHead2D):  # noqa: N801 (official name)
    """The channel-to-height head; only its losses differ from ``BEVOCCHead2D`` (panoptic/criterion.py)."""


class ConvBN(nn.Module):
    """mmcv ConvModule with BN: conv (no bias) -> BN -> ReLU, keys ``conv.*`` and ``bn.*``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class SeparateHead(nn.Module):
    """One branch per output: ConvBN(C, C) then a 3x3 conv with bias to the branch's channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        for name, k in BRANCHES.items():
            setattr(self, name, nn.Sequential(ConvBN(channels, channels), nn.Conv2d(channels, k, 3, padding=1)))
        with torch.no_grad():
            self.heatmap[1].bias.fill_(HEATMAP_INIT_BIAS)

    def forward(self, x: torch.Tensor, branches: tuple[str, ...] = tuple(BRANCHES)) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name)(x) for name in branches}


class CenternessHead(nn.Module):
    """BEV feature (B, C, Dy, Dx) -> {reg (B, 2, ·), height (B, 1, ·), heatmap logits (B, 10, ·), ...}."""

    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        self.shared_conv = ConvBN(in_channels, channels)
        self.task_heads = nn.ModuleList([SeparateHead(channels)])

    def forward(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        branches = tuple(BRANCHES) if self.training else INFERENCE_BRANCHES
        return self.task_heads[0](self.shared_conv(bev), branches)


__all__ = ["BEVOCCHead2D_V2", "CenternessHead", "DETECTION_CLASSES", "BRANCHES"]

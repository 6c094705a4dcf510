"""BEV encoders: ``CustomResNet`` (2D, FlashOcc) and ``CustomResNet3D`` (3D, BEVDetOcc baseline)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from flashocc.models.layers import ConvModule
from flashocc.models.resnet import BasicBlock


def run_stages(stages: nn.Sequential, x: torch.Tensor, with_cp: bool) -> list[torch.Tensor]:
    """Every stage's output; ``with_cp`` recomputes activations in backward to save memory."""
    feats = []
    for stage in stages:
        x = checkpoint(stage, x, use_reentrant=False) if with_cp and x.requires_grad else stage(x)
        feats.append(x)
    return feats


class CustomResNet(nn.Module):
    """Stages of BasicBlocks on the BEV map; returns every stage output.

    Official detail (FlashOCC@4084861 projects/mmdet3d_plugin/models/backbones/resnet.py,
    CustomResNet): each stage's first block downsamples with a bare 3x3 conv *with bias and no BN*.
    """

    def __init__(self, in_channels: int, num_channels: tuple[int, ...], num_layers: tuple[int, ...],
                 strides: tuple[int, ...], with_cp: bool = False) -> None:
        super().__init__()
        if not len(num_channels) == len(num_layers) == len(strides):
            raise ValueError(f"num_channels {num_channels}, num_layers {num_layers} and strides {strides} "
                             "must have the same length")
        self.with_cp = with_cp
        self.out_channels = tuple(num_channels)
        stages, cin = [], in_channels
        for cout, count, stride in zip(num_channels, num_layers, strides):
            blocks = [BasicBlock(cin, cout, stride, downsample=nn.Conv2d(cin, cout, 3, stride, 1))]
            blocks += [BasicBlock(cout, cout) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layers = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_stages(self.layers, x, self.with_cp)


class BasicBlock3D(nn.Module):
    """conv3x3x3-BN-ReLU, conv3x3x3-BN, residual (optional ConvModule downsample), ReLU; no conv bias."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = ConvModule(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), relu=True)
        self.conv2 = ConvModule(nn.Conv3d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm3d(cout))
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        out += identity  # in place: no new activation-sized tensor per block
        return self.relu(out)


class CustomResNet3D(nn.Module):
    """3D BEV encoder: each stage starts with a strided BasicBlock3D whose downsample is
    Conv3d 3x3x3 + BN3d (backbones/resnet.py, CustomResNet3D)."""

    def __init__(self, in_channels: int, num_channels: tuple[int, ...], num_layers: tuple[int, ...],
                 strides: tuple[int, ...], with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.out_channels = tuple(num_channels)
        stages, cin = [], in_channels
        for cout, count, stride in zip(num_channels, num_layers, strides):
            down = ConvModule(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout))
            blocks = [BasicBlock3D(cin, cout, stride, down)] + [BasicBlock3D(cout, cout) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layers = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_stages(self.layers, x, self.with_cp)

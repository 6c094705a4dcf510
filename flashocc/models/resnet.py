"""ResNet image backbones with torchvision's parameter names (no ``fc``), as mmdet's ResNet uses.

``style='pytorch'``: the stride sits on the 3x3 conv of the bottleneck (mmdet ``ResNet`` as configured in
FlashOCC@4084861 projects/configs/flashocc/flashocc-r50.py).
Returns the feature maps of the requested stages (0 = layer1 ... 3 = layer4).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as mmdet's blocks: no new activation-sized tensor per block
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place (BatchNorm's backward reads its input, not this output)
        return self.relu(out)


RESNET_LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet-18/34/50/101 trunk. ``out_indices`` picks stages; ``with_cp`` checkpoints each block
    (saves activation memory in training at the cost of a second forward)."""

    def __init__(self, depth: int = 50, out_indices: tuple[int, ...] = (2, 3), with_cp: bool = False) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of 0..3, got {out_indices}")
        block, counts = RESNET_LAYOUTS[depth]
        self.out_indices = tuple(out_indices)
        self.with_cp = with_cp
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        # Only the stages up to the last requested one are built: unused stages would hold parameters
        # that never get gradients (DDP refuses them). The official configs use stage 3, so all 4 exist.
        num_stages = max(self.out_indices) + 1
        for stage, (count, width) in enumerate(zip(counts[:num_stages], (64, 128, 256, 512)[:num_stages])):
            stride = 1 if stage == 0 else 2
            downsample = None
            if stride != 1 or cin != width * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(cin, width * block.expansion, 1, stride, bias=False),
                                           nn.BatchNorm2d(width * block.expansion))
            blocks = [block(cin, width, stride, downsample)]
            cin = width * block.expansion
            blocks += [block(cin, width) for _ in range(count - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.stage_channels = tuple(w * block.expansion for w in (64, 128, 256, 512))[:num_stages]

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.stage_channels[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in range(len(self.stage_channels)):
            for block in getattr(self, f"layer{stage + 1}"):
                if self.with_cp and x.requires_grad:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if stage in self.out_indices:
                outs.append(x)
        return outs

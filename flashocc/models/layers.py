"""Small building blocks shared by several parts."""
from __future__ import annotations

from torch import nn


class ConvModule(nn.Sequential):
    """conv [-> norm] [-> ReLU] with mmcv ConvModule's child names (``conv``, ``bn``), so the
    official state-dict keys (e.g. ``lateral_convs.0.conv.weight``) load unchanged."""

    def __init__(self, conv: nn.Module, norm: nn.Module | None = None, relu: bool = False) -> None:
        super().__init__()
        self.conv = conv
        if norm is not None:
            self.bn = norm
        if relu:
            self.activate = nn.ReLU(inplace=True)

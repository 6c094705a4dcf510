"""After the encoders: ``ConvFuser2D``, the 2D BEV trunk ``SECOND`` + ``SECONDFPN``, and the LiDAR-assisted
depth net of the camera branch.

Names follow the official modules so EFFOcc checkpoints load strictly: EFFOcc@9544ca0
mmdet3d/models/fuser/convfuse2d.py (ConvFuser2D.occ_enc), mmdet3d/models/backbones/second.py
(SECOND.blocks), mmdet3d v1.0 necks/second_fpn.py (SECONDFPN.deblocks) and
mmdet3d/models/necks/view_transformer.py (LSSViewTransformer with ``with_depth_from_lidar``:
``lidar_input_net`` and the three-conv ``depth_net``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from flashocc.errors import DataError
from flashocc.models.view_transformer import DepthContextNet, Lifted, LSSViewTransformer
from flashocc.ops.bev_pool import BevPoolIndices, bev_pool


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # SECOND / SECONDFPN norm_cfg


class ConvFuser2D(nn.Module):
    """cat[camera BEV, LiDAR BEV] (camera first) -> 3x3 conv (no bias) -> BN -> ReLU."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = tuple(in_channels), out_channels
        self.occ_enc = nn.Sequential(nn.Conv2d(sum(in_channels), out_channels, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, img_bev: torch.Tensor, pts_bev: torch.Tensor) -> torch.Tensor:
        return self.occ_enc(torch.cat([img_bev, pts_bev], dim=1))


class SECOND(nn.Module):
    """Per block: 3x3 conv at the block's stride, then ``layers`` 3x3 convs, each conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: Sequence[int], layer_nums: Sequence[int],
                 layer_strides: Sequence[int]) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for cout, n, stride in zip(out_channels, layer_nums, layer_strides):
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), _bn2d(cout),
                                       nn.ReLU(inplace=True)]
            for _ in range(n):
                layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), _bn2d(cout), nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    """Each SECOND output back to the input resolution: a 1x1-per-stride conv when the upsample stride is 1
    (``use_conv_for_no_stride``), else a transposed conv; BN, ReLU; concatenated."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], upsample_strides: Sequence[int]) -> None:
        super().__init__()
        deblocks = []
        for cin, cout, stride in zip(in_channels, out_channels, upsample_strides):
            up: nn.Module = (nn.Conv2d(cin, cout, stride, stride=stride, bias=False) if stride == 1
                             else nn.ConvTranspose2d(cin, cout, stride, stride=stride, bias=False))
            deblocks.append(nn.Sequential(up, _bn2d(cout), nn.ReLU(inplace=True)))
        self.deblocks = nn.ModuleList(deblocks)
        self.out_channels = sum(out_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([d(f) for d, f in zip(self.deblocks, feats)], dim=1)


class LiDARDepthNet(DepthContextNet):
    """cat[image features, LiDAR depth features] -> 3x3 conv, BN, ReLU -> 3x3 conv, BN, ReLU -> 1x1 to D + C.

    Children are numbered like the official ``nn.Sequential`` (``depth_net.0`` ... ``depth_net.6``).
    """

    def __init__(self, in_channels: int, num_depth: int, context_channels: int, lidar_channels: int = 64) -> None:
        super().__init__(num_depth, context_channels)
        layers = [nn.Conv2d(in_channels + lidar_channels, in_channels, 3, padding=1), nn.BatchNorm2d(in_channels),
                  nn.ReLU(inplace=True), nn.Conv2d(in_channels, in_channels, 3, padding=1),
                  nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, num_depth + context_channels, 1)]
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)

    def features(self, x: torch.Tensor, *conditioning: torch.Tensor | None) -> torch.Tensor:
        (lidar_feat,) = conditioning
        x = torch.cat([x, lidar_feat.to(x.dtype)], dim=1)
        for layer in self.children():
            x = layer(x)
        return x


def lidar_depth_stem(downsample: int) -> nn.Sequential:
    """``lidar_input_net``: 1x1 1->8, 5x5 stride 4 ->32, 5x5 stride 2·downsample/8 ->64, each with BN and
    ReLU, so a full-resolution depth image lands on the feature grid."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 32, 5, stride=4, padding=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 5, stride=int(2 * downsample / 8), padding=2), nn.BatchNorm2d(64), nn.ReLU(inplace=True))


class LiDARAssistedViewTransformer(LSSViewTransformer):
    """``LSSViewTransformer`` whose depth net also reads each camera's LiDAR depth image (batch key
    ``lidar_depth``, (B, N, H, W) metres at the network input size)."""

    def __init__(self, in_channels: int, out_channels: int, input_size, downsample: int, depth_bins, lower, interval,
                 grid_size, sid: bool = False) -> None:
        super().__init__(in_channels, out_channels, input_size, downsample, depth_bins, lower, interval, grid_size,
                         collapse_z=True, sid=sid)
        self.depth_net = LiDARDepthNet(in_channels, self.num_depth, out_channels)
        self.lidar_input_net = lidar_depth_stem(downsample)

    def lidar_features(self, depth_image: torch.Tensor | None, feat_hw: tuple[int, int]) -> torch.Tensor:
        """(B, N, H, W) metres -> (B·N, 64, fH, fW)."""
        if depth_image is None:
            raise DataError("the LiDAR-assisted depth net needs batch['lidar_depth'] (B, N, H, W) metres "
                            "(DataConfig load_lidar_depth=True)")
        out = self.lidar_input_net(depth_image.reshape(-1, 1, *depth_image.shape[-2:]).float())
        if tuple(out.shape[-2:]) != tuple(feat_hw):
            raise DataError(f"batch['lidar_depth'] of size {tuple(depth_image.shape[-2:])} does not reach the image "
                            f"feature grid {tuple(feat_hw)}; give it at the network input size {self.input_size}")
        return out

    def forward(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                indices: BevPoolIndices | None = None) -> Lifted:
        depth, context = self.lift(feats, self.lidar_features(batch.get("lidar_depth"), feats.shape[-2:]))
        if indices is None:
            indices = self.pool_indices(batch)
        bev = self.splat(depth, context, feats.shape[:2], lambda d, c: bev_pool(d, c, indices))
        return Lifted(bev, depth, context)


__all__ = ["ConvFuser2D", "SECOND", "SECONDFPN", "LiDARDepthNet", "LiDARAssistedViewTransformer", "lidar_depth_stem"]

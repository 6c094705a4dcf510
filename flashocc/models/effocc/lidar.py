"""LiDAR BEV sources: points -> a (B, C, Dy, Dx) BEV map in the camera BEV's layout (rows y, columns x).

* ``SparseEncoder``: mmdet3d's basic-block ``SparseEncoder`` (mmdet3d v1.0 middle_encoders/sparse_encoder.py,
  ``block_type='basicblock'``; ops/sparse_block.py, ``SparseBasicBlock``) on the plain-torch sparse
  convs of ``flashocc.ops.sparse_conv``, with its state-dict names. It takes the hard-voxelized mean
  features (``Voxelization`` + ``HardSimpleVFE``, the ``pts_voxel_layer`` / ``pts_voxel_encoder`` of
  EFFOcc@9544ca0 mmdet3d/models/detectors/flash_lidarocc.py, FlashFusionOCC.extract_pts_feat).
* ``HeightBinnedEncoder``: ours, a dense encoder for CPU training: points binned into the occupancy
  grid's own voxels (no caps, nothing dropped), per voxel log(1 + count), mean height offset and mean
  intensity, z folded into channels, then three 2D convs. It cannot load the sparse weights.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flashocc.errors import DataError
from flashocc.ops.sparse_conv import SparseConv3d, SparseModule, SparseSequential, SparseTensor, SubMConv3d
from flashocc.ops.voxelize import HardSimpleVFE, Voxelization


def _bn1d(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=1e-3, momentum=0.01)  # mmdet3d SparseEncoder norm_cfg


def sparse_conv_module(cin: int, cout: int, kernel, stride=1, padding=0, indice_key: str | None = None,
                       subm: bool = False, backend: str = "torch") -> SparseSequential:
    """mmdet3d ``make_sparse_convmodule``: conv (no bias) -> BN1d -> ReLU, children 0, 1, 2."""
    conv_cls = SubMConv3d if subm else SparseConv3d
    conv = conv_cls(cin, cout, kernel, stride=stride, padding=padding, bias=False, indice_key=indice_key,
                    backend=backend)
    return SparseSequential(conv, _bn1d(cout), nn.ReLU(inplace=True))


class SparseBasicBlock(SparseModule):
    """SubM 3^3 -> BN -> ReLU -> SubM 3^3 -> BN, + identity, ReLU (keys conv1, bn1, conv2, bn2)."""

    def __init__(self, channels: int, indice_key: str | None = None, backend: str = "torch") -> None:
        super().__init__()
        self.conv1 = SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key, backend=backend)
        self.bn1 = _bn1d(channels)
        self.conv2 = SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key, backend=backend)
        self.bn2 = _bn1d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + x.features))


class SparseEncoder(nn.Module):
    """Voxel features (M, C_in) at (b, z, y, x) -> BEV (B, C_out·Z_out, Y/8, X/8), channel = c·Z_out + z.

    Official layout: conv_input (SubM 5->16), four stages of (16, 16, 32), (32, 32, 64), (64, 64, 128),
    (128, 128) where the last entry of the first three is a stride-2 SparseConv3d (paddings 1, 1,
    (0, 1, 1)), conv_out SparseConv3d (3, 1, 1) stride (2, 1, 1) to ``out_channels``.
    """

    ENCODER_CHANNELS = ((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128))
    ENCODER_PADDINGS = ((0, 0, 1), (0, 0, 1), (0, 0, (0, 1, 1)), (0, 0))

    def __init__(self, in_channels: int, sparse_shape: Sequence[int], out_channels: int = 128,
                 backend: str = "torch") -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.sparse_shape = tuple(int(s) for s in sparse_shape)
        self.conv_input = sparse_conv_module(in_channels, 16, 3, padding=1, indice_key="subm1", subm=True,
                                             backend=backend)
        self.encoder_layers = SparseSequential()
        cin = 16
        last = len(self.ENCODER_CHANNELS) - 1
        for i, (blocks, pads) in enumerate(zip(self.ENCODER_CHANNELS, self.ENCODER_PADDINGS)):
            layers = []
            for j, (cout, pad) in enumerate(zip(blocks, pads)):
                if j == len(blocks) - 1 and i != last:
                    layers.append(sparse_conv_module(cin, cout, 3, stride=2, padding=pad,
                                                     indice_key=f"spconv{i + 1}", backend=backend))
                else:
                    layers.append(SparseBasicBlock(cout, indice_key=f"subm{i + 1}", backend=backend))
                cin = cout
            self.encoder_layers.add_module(f"encoder_layer{i + 1}", SparseSequential(*layers))
        self.conv_out = sparse_conv_module(cin, out_channels, (3, 1, 1), stride=(2, 1, 1), padding=0,
                                           indice_key="spconv_down2", backend=backend)
        z = self.sparse_shape[0]
        for pad in (1, 1, 0):
            z = (z + 2 * pad - 3) // 2 + 1
        self.out_z = (z - 3) // 2 + 1
        self.bev_channels = out_channels * self.out_z

    def forward(self, voxel_features: torch.Tensor, coors: torch.Tensor, batch_size: int) -> torch.Tensor:
        x = SparseTensor(voxel_features, coors.int(), self.sparse_shape, batch_size).sort_sites()
        x = self.conv_out(self.encoder_layers(self.conv_input(x)))
        dense = x.dense()  # (B, C, Z, Y, X)
        b, c, z, y, w = dense.shape
        return dense.view(b, c * z, y, w)  # height compression: channel = c·Z + z


class HeightBinnedEncoder(nn.Module):
    """points (list of (Nᵢ, ≥4): x, y, z, intensity, ...) -> BEV (B, out_channels, Dy, Dx).

    Per voxel of the occupancy grid: log(1 + count), mean z offset from the voxel centre (in voxel
    units) and mean intensity -> 3·Dz channels (channel = f·Dz + z), then 3x3 -> 3x3 -> 1x1 convs with
    BN and ReLU. Dynamic voxelization (``index_add_``): deterministic up to float summation order.
    """

    NUM_FEATURES = 3

    def __init__(self, lower: Sequence[float], voxel_size: Sequence[float], grid_shape: Sequence[int],
                 mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lower, self.voxel_size = tuple(lower), tuple(voxel_size)
        self.grid_shape = tuple(int(s) for s in grid_shape)  # (Dx, Dy, Dz)
        self.out_channels = out_channels
        cin = self.NUM_FEATURES * self.grid_shape[2]

        def block(i: int, o: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.convs = nn.Sequential(*block(cin, mid_channels, 3), *block(mid_channels, mid_channels, 3),
                                   *block(mid_channels, out_channels, 1))

    def rasterize(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, 3·Dz, Dy, Dx) voxel statistics."""
        dx, dy, dz = self.grid_shape
        device = points[0].device if len(points) else torch.device("cpu")
        lower = torch.tensor(self.lower, device=device)
        size = torch.tensor(self.voxel_size, device=device)
        maps = []
        for pts in points:
            if pts.dim() != 2 or pts.shape[1] < 4:
                raise DataError(f"points must be (N, >=4) x, y, z, intensity; got shape {tuple(pts.shape)}")
            rel = (pts[:, :3].float() - lower) / size
            idx = torch.floor(rel).long()
            keep = ((idx >= 0) & (idx < torch.tensor([dx, dy, dz], device=device))).all(dim=1)
            idx, rel, inten = idx[keep], rel[keep], pts[keep, 3].float()
            flat = (idx[:, 2] * dy + idx[:, 1]) * dx + idx[:, 0]  # (z, y, x) order
            n = dz * dy * dx
            count = torch.zeros(n, device=device).index_add_(0, flat, torch.ones_like(inten))
            zoff = torch.zeros(n, device=device).index_add_(0, flat, rel[:, 2] - idx[:, 2] - 0.5)
            isum = torch.zeros(n, device=device).index_add_(0, flat, inten)
            denom = count.clamp(min=1)
            feats = torch.stack([torch.log1p(count), zoff / denom, isum / denom])  # (3, Dz·Dy·Dx)
            maps.append(feats.view(self.NUM_FEATURES * dz, dy, dx))
        return torch.stack(maps)

    def forward(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.convs(self.rasterize(points))


__all__ = ["SparseEncoder", "SparseBasicBlock", "HeightBinnedEncoder", "Voxelization", "HardSimpleVFE",
           "sparse_conv_module"]

"""Lift-splat, written once: image features -> depth distribution x context -> BEV features.

``DepthContextNet`` is the base of both depth nets (the plain 1x1 conv here, the camera-aware
``depthnet.DepthNet`` of the stereo models): it computes cat[depth logits (D), context (C)] and
splits it into depth probabilities and context features. ``LiftSplat`` is the base of both view
transformers: the frustum, the pooling grid and ``splat`` (pool the depth x context outer product
into BEV cells, then fold z into channels for a 2D BEV). The model's forward, the ONNX graph
(``flashocc.deploy.onnx.OccGraph``) and the temporal graph call these same methods, passing only a
different pooling function.

Depth bins are the official arange start values, the frustum uses the official linspace pixel grid,
and pooling keeps the official truncating voxel indices (FlashOCC@4084861
projects/mmdet3d_plugin/models/necks/view_transformer.py, LSSViewTransformer.create_frustum and
voxel_pooling_prepare_v2).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from flashocc.geometry import create_frustum, depth_bin_values, frustum_to_ego, sensor_to_key_ego
from flashocc.ops.bev_pool import BevPoolIndices, bev_pool, prepare_bev_pool

# (depth (B, N, D, fH, fW), context (B, N, fH, fW, C)) -> BEV (B, C, Dz, Dy, Dx)
PoolFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Lifted(NamedTuple):
    """What a view transform gives: the BEV map and, per camera, what was lifted into it."""

    bev: torch.Tensor      # (B, C·Dz, Dy, Dx) folded, or (B, C, Dz, Dy, Dx)
    depth: torch.Tensor    # (B·N, D, fH, fW) softmax probabilities
    context: torch.Tensor  # (B·N, C, fH, fW) context features


class DepthContextNet(nn.Module):
    """Base of the depth nets: ``features(x, *conditioning)`` -> (B·N, D + C, fH, fW) with the D depth
    logits first (official channel order), ``forward`` -> (depth probabilities, context)."""

    def __init__(self, num_depth: int, context_channels: int) -> None:
        super().__init__()
        self.num_depth, self.context_channels = num_depth, context_channels

    def features(self, x: torch.Tensor, *conditioning: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *conditioning: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B·N, C_in, fH, fW) -> (depth (B·N, D, fH, fW) softmax over D, context (B·N, C, fH, fW))."""
        out = self.features(x, *conditioning)
        d = self.num_depth
        return out[:, :d].softmax(dim=1), out[:, d:d + self.context_channels]


class PlainDepthNet(DepthContextNet):
    """The official single-frame depth net: one 1x1 conv (with bias) to D + C channels.

    The official ``depth_net`` is a bare ``nn.Conv2d``, so its parameters sit directly at
    ``img_view_transformer.depth_net.weight`` / ``.bias``; they are kept there for strict loading.
    """

    def __init__(self, in_channels: int, num_depth: int, context_channels: int) -> None:
        super().__init__(num_depth, context_channels)
        conv = nn.Conv2d(in_channels, num_depth + context_channels, 1)  # its initialisation, parameters and keys
        self.weight, self.bias = conv.weight, conv.bias

    def features(self, x: torch.Tensor, *conditioning: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> depth {self.num_depth} + context {self.context_channels}, 1x1"


class LiftSplat(nn.Module):
    """Base of the view transformers: depth bins, frustum and pooling grid, and ``lift``/``splat``.

    ``lower``/``interval``/``grid_size`` describe the pooling grid (x, y, z); with ``collapse_z`` the
    z cells are folded into channels (z-major), giving a (B, C·Dz, Dy, Dx) BEV map. Subclasses set
    ``depth_net`` (a ``DepthContextNet``).
    """

    depth_net: DepthContextNet

    def __init__(self, out_channels: int, input_size: tuple[int, int], downsample: int,
                 depth_bins: tuple[float, float, float], lower: tuple[float, float, float],
                 interval: tuple[float, float, float], grid_size: tuple[int, int, int], collapse_z: bool = True,
                 sid: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.input_size, self.downsample = tuple(input_size), downsample
        self.depth_bins, self.sid = tuple(depth_bins), sid
        self.lower, self.interval, self.grid_size = tuple(lower), tuple(interval), tuple(grid_size)
        self.collapse_z = collapse_z
        depths = depth_bin_values(*depth_bins, sid=sid)
        self.num_depth = depths.numel()
        # Not in the state dict, like the official plain attribute; moves with .to(device).
        self.register_buffer("frustum", create_frustum(depths, self.input_size, downsample), persistent=False)

    def lift(self, feats: torch.Tensor, *conditioning: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, N, C_in, fH, fW) -> (depth (B·N, D, fH, fW) probabilities, context (B·N, C, fH, fW))."""
        b, n, c, fh, fw = feats.shape
        return self.depth_net(feats.reshape(b * n, c, fh, fw), *conditioning)

    def splat(self, depth: torch.Tensor, context: torch.Tensor, views: tuple[int, int], pool: PoolFn) -> torch.Tensor:
        """Pool depth x context into the BEV grid with ``pool`` (``bev_pool`` here, export-friendly
        pooling in the ONNX graphs); ``views`` is (B, N). Returns (B, C·Dz, Dy, Dx) or (B, C, Dz, Dy, Dx)."""
        b, n = views
        fh, fw = depth.shape[-2:]
        bev = pool(depth.view(b, n, self.num_depth, fh, fw),
                   context.view(b, n, self.out_channels, fh, fw).permute(0, 1, 3, 4, 2))
        if self.collapse_z:
            bev = torch.cat(bev.unbind(dim=2), dim=1)  # (B, Dz·C, Dy, Dx), channel = z·C + c
        return bev

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, downsample={self.downsample}, depth_bins={self.depth_bins}, "
                f"sid={self.sid}, grid_size={self.grid_size}, collapse_z={self.collapse_z}")


class LSSViewTransformer(LiftSplat):
    """Lift-splat with the plain 1x1 ``depth_net`` (M0/M1 and the 3D baseline)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: tuple[int, int],
        downsample: int,
        depth_bins: tuple[float, float, float],
        lower: tuple[float, float, float],
        interval: tuple[float, float, float],
        grid_size: tuple[int, int, int],
        collapse_z: bool = True,
        sid: bool = False,
    ) -> None:
        super().__init__(out_channels, input_size, downsample, depth_bins, lower, interval, grid_size, collapse_z, sid)
        self.depth_net = PlainDepthNet(in_channels, self.num_depth, out_channels)

    def ego_coords(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Frustum points in the BEV-augmented key-ego frame: (B, N, D, fH, fW, 3) metres."""
        s2k = sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])
        return frustum_to_ego(self.frustum, s2k, batch["intrinsics"].float(), batch["post_rots"].float(),
                              batch["post_trans"].float(), batch["bda"].float())

    def pool_indices(self, batch: Mapping[str, torch.Tensor]) -> BevPoolIndices:
        """Pooling indices for this batch's calibration (cacheable while the calibration is fixed)."""
        return prepare_bev_pool(self.ego_coords(batch), self.lower, self.interval, self.grid_size)

    def forward(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                indices: BevPoolIndices | None = None) -> Lifted:
        """feats (B, N, C, fH, fW) -> ``Lifted``: bev (B, C', Dy, Dx) or (B, C, Dz, Dy, Dx), depth and
        context (B·N, ·, fH, fW)."""
        depth, context = self.lift(feats)
        if indices is None:
            indices = self.pool_indices(batch)
        bev = self.splat(depth, context, feats.shape[:2], lambda d, c: bev_pool(d, c, indices))
        return Lifted(bev, depth, context)

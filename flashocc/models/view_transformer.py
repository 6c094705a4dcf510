"""LSS view transformer: image features -> depth distribution x context -> BEV features.

Depth bins are the official arange start values, the frustum uses the official linspace pixel grid,
and pooling keeps the official truncating voxel indices (flashocc.md §3).
"""
from __future__ import annotations

import torch
from torch import nn

from flashocc.geometry import create_frustum, depth_bin_values, frustum_to_ego, sensor_to_key_ego
from flashocc.ops.bev_pool import BevPoolIndices, bev_pool, prepare_bev_pool


class LSSViewTransformer(nn.Module):
    """Lift-splat with a single 1x1 ``depth_net`` (M0/M1 and the 3D baseline).

    ``lower``/``interval``/``grid_size`` describe the pooling grid (x, y, z); with ``collapse_z`` the
    z cells are folded into channels (z-major), giving a (B, C·Dz, Dy, Dx) BEV map.
    """

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
        self.depth_net = nn.Conv2d(in_channels, self.num_depth + out_channels, 1)

    def ego_coords(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Frustum points in the BEV-augmented key-ego frame: (B, N, D, fH, fW, 3) metres."""
        s2k = sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])
        return frustum_to_ego(self.frustum, s2k, batch["intrinsics"].float(), batch["post_rots"].float(),
                              batch["post_trans"].float(), batch["bda"].float())

    def pool_indices(self, batch: dict[str, torch.Tensor]) -> BevPoolIndices:
        """Pooling indices for this batch's calibration (cacheable while the calibration is fixed)."""
        return prepare_bev_pool(self.ego_coords(batch), self.lower, self.interval, self.grid_size)

    def forward(self, feats: torch.Tensor, batch: dict[str, torch.Tensor],
                indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, N, C, fH, fW) -> (bev, depth): bev (B, C', Dy, Dx) or (B, C, Dz, Dy, Dx);
        depth (B·N, D, fH, fW) softmax probabilities."""
        b, n, c, fh, fw = feats.shape
        x = self.depth_net(feats.reshape(b * n, c, fh, fw))
        depth = x[:, :self.num_depth].softmax(dim=1)
        context = x[:, self.num_depth:self.num_depth + self.out_channels]
        if indices is None:
            indices = self.pool_indices(batch)
        bev = bev_pool(depth.view(b, n, self.num_depth, fh, fw),
                       context.view(b, n, self.out_channels, fh, fw).permute(0, 1, 3, 4, 2), indices)
        if self.collapse_z:
            bev = torch.cat(bev.unbind(dim=2), dim=1)  # (B, Dz·C, Dy, Dx), channel = z·C + c
        return bev, depth

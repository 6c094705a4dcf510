"""Where the decoders look in the images: box-based points (voxel decoder) and mask-guided points (mask
decoder), both sampled by ``flashocc.ops.msmv_sampling.sampling_4d``.

Upstream: SparseOcc@af4d9df models/sparsebev_transformer.py, SparseBEVSampling;
models/sparseocc_transformer.py, MaskFormerSampling; models/sparsebev_sampling.py, make_sample_points_from_mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from flashocc.grid import OccGrid
from flashocc.ops.msmv_sampling import sampling_4d


@dataclass
class ImageContext:
    """What every sampler reads: the grouped FPN levels (``split_groups`` layout), the per-image
    projection ego frame -> pixels (B, T·N, 4, 4), the padded input (H, W), frames and views."""

    feats: list[torch.Tensor]
    lidar2img: torch.Tensor
    image_hw: tuple[int, int]
    num_frames: int
    num_views: int


def _sample(points: torch.Tensor, weights: torch.Tensor, ctx: ImageContext, groups: int, num_points: int,
            levels: int) -> torch.Tensor:
    """points (B, Q, G·P, 3) metres, weight logits (B, Q, G·P·L) -> (B, Q, G, T·P, C); the same points and
    level weights for every frame (upstream expands both over T)."""
    b, q = points.shape[:2]
    t = ctx.num_frames
    pts = points.reshape(b, q, 1, groups, num_points, 3).expand(b, q, t, groups, num_points, 3)
    w = torch.softmax(weights.view(b, q, groups, 1, num_points, levels), dim=-1)
    w = w.expand(b, q, groups, t, num_points, levels)
    return sampling_4d(pts, ctx.feats, w, ctx.lidar2img, ctx.image_hw, ctx.num_views)


class SparseBEVSampling(nn.Module):
    """Points = box centre + size ⊙ offset (offset = ``sampling_offset(query)``, weight 0 and bias
    U(−0.5, 0.5) at init, so points start inside the cell)."""

    def __init__(self, dims: int, groups: int, num_points: int, levels: int) -> None:
        super().__init__()
        self.groups, self.num_points, self.levels = groups, num_points, levels
        self.sampling_offset = nn.Linear(dims, groups * num_points * 3)
        self.scale_weights = nn.Linear(dims, groups * num_points * levels)
        self.use_checkpoint = True  # layers.set_decoder_checkpointing

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.zeros_(self.sampling_offset.weight)
        nn.init.uniform_(self.sampling_offset.bias, -0.5, 0.5)

    def _forward(self, centers: torch.Tensor, sizes: torch.Tensor, query: torch.Tensor,
                 ctx: ImageContext) -> torch.Tensor:
        b, q = query.shape[:2]
        offset = self.sampling_offset(query).view(b, q, self.groups * self.num_points, 3)
        points = centers[:, :, None] + sizes[:, :, None] * offset  # (B, Q, GP, 3)
        return _sample(points, self.scale_weights(query), ctx, self.groups, self.num_points, self.levels)

    def forward(self, centers: torch.Tensor, sizes: torch.Tensor, query: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        """centers, sizes (B, Q, 3) metres; query (B, Q, C) -> (B, Q, G, T·P, C/G)."""
        if self.use_checkpoint and self.training and query.requires_grad:
            return checkpoint(self._forward, centers, sizes, query, ctx, use_reentrant=False)
        return self._forward(centers, sizes, query, ctx)


class MaskGuidedPoints(nn.Module):
    """Per query, ``count`` voxel indices drawn uniformly with replacement from its predicted mask.

    Draws exactly the official ``torch.rand`` calls, in order, on the CPU (upstream draws from the global
    CPU generator and then moves the values): for each sample with any valid voxel, (Q, count) for the
    picks and then (number of queries with an empty mask, count, 3) uniform points in the grid; for a
    sample with no valid voxel at all, (Q, count, 3) in [0, 1)³ voxel units (Official quirk: not scaled by
    the grid size there, unlike the per-query fallback). ``generator`` replaces the global generator.
    Replace this module (or subclass it) to feed known points.
    """

    def __init__(self, count: int, grid_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.count = count
        self.grid_shape = grid_shape

    def forward(self, valid: torch.Tensor, occ_loc: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """valid (B, Q, K) bool; occ_loc (B, K, 3) voxel indices -> (B, Q, count, 3) float voxel units."""
        b, q, _ = valid.shape
        size = torch.tensor(self.grid_shape, dtype=torch.float32)
        out = []
        for i in range(b):
            counts = valid[i].sum(dim=1).cpu()  # (Q,)
            total = int(counts.sum())
            if total == 0:
                out.append(torch.rand((q, self.count, 3), generator=generator))
                continue
            rand = torch.rand((q, self.count), generator=generator)
            pick = (rand * counts[:, None]).floor().long() + (torch.cumsum(counts, 0) - counts)[:, None]
            # A query with an empty mask at the end points past the last valid voxel (upstream clamps).
            pick = pick.clamp_(max=total - 1)
            voxel = valid[i].nonzero()[:, 1].cpu()  # valid voxel ids, query-major (torch.where order)
            pts = occ_loc[i].cpu()[voxel[pick]].float()  # (Q, count, 3)
            empty = counts == 0
            pts[empty] = torch.rand((int(empty.sum()), self.count, 3), generator=generator) * size
            out.append(pts)
        return torch.stack(out).to(valid.device)


class MaskFormerSampling(nn.Module):
    """Mask-guided sampling: voxel indices from ``points`` plus a learned ``offset`` (voxel units, zero at
    init), at the voxel **min corner**: metres = lower + (index + offset)·voxel (upstream parity)."""

    def __init__(self, dims: int, groups: int, num_points: int, levels: int, grid: OccGrid) -> None:
        super().__init__()
        self.groups, self.num_points, self.levels = groups, num_points, levels
        self.grid_lower, self.grid_upper, self.grid_shape = grid.lower, grid.upper, grid.shape
        self.offset = nn.Linear(dims, groups * num_points * 3)
        self.scale_weights = nn.Linear(dims, groups * num_points * levels)
        self.use_checkpoint = True  # layers.set_decoder_checkpointing
        self.points = MaskGuidedPoints(groups * num_points, grid.shape)

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def _forward(self, query: torch.Tensor, idx: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        b, q = query.shape[:2]
        idx = idx + self.offset(query).view(b, q, self.groups * self.num_points, 3)
        # Upstream normalises by the grid size and scales by the range: (idx / D)·(hi − lo) + lo.
        size = idx.new_tensor(self.grid_shape)
        span = idx.new_tensor([hi - lo for lo, hi in zip(self.grid_lower, self.grid_upper)])
        points = idx / size * span + idx.new_tensor(self.grid_lower)
        return _sample(points, self.scale_weights(query), ctx, self.groups, self.num_points, self.levels)

    def forward(self, query: torch.Tensor, valid: torch.Tensor, occ_loc: torch.Tensor, ctx: ImageContext,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """query (B, Q, C); valid (B, Q, K) = mask logits > 0; occ_loc (B, K, 3) -> (B, Q, G, T·P, C/G)."""
        idx = self.points(valid, occ_loc, generator)
        if self.use_checkpoint and self.training and query.requires_grad:
            return checkpoint(self._forward, query, idx, ctx, use_reentrant=False)
        return self._forward(query, idx, ctx)


__all__ = ["ImageContext", "SparseBEVSampling", "MaskGuidedPoints", "MaskFormerSampling"]

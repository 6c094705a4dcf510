"""Sparse voxel decoder: coarse-to-fine, each level lifts its queries to 8 children and keeps the top-k.

Upstream: SparseOcc@af4d9df models/sparse_voxel_decoder.py (SparseVoxelDecoder, SparseVoxelDecoderLayer,
upsample, index2point, point2bbox) and models/bbox/utils.py (encode_bbox, decode_bbox).

Coordinates are integer voxel **min corners** (Official quirk kept for parity: the position encoding and
the attention distances use the min corner; only the image sampling adds half a cell to get the centre).
The first level starts from every 2**L-th voxel with zero features (1250 queries on the 200×200×16 grid).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flashocc.grid import OccGrid
from flashocc.models.sparseocc.layers import FFN, AdaptiveMixing, SparseBEVSelfAttention
from flashocc.models.sparseocc.sampling import ImageContext, SparseBEVSampling

# Child k of a cell is the parent's min corner plus half the parent's size along these axes (upstream
# upsample, pos_list: child 0 is the parent corner itself).
CHILD_AXES: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))


@dataclass
class VoxelLevel:
    """One level's output: kept child ``coords`` (B, K, 3) in units of ``scale`` voxels (long), their
    ``logits`` (B, K, num_classes) and ``feats`` (B, K, C); ``scale`` = child size in voxels."""

    coords: torch.Tensor
    logits: torch.Tensor
    feats: torch.Tensor
    scale: int


class SparseVoxelDecoderLayer(nn.Module):
    def __init__(self, dims: int, groups: int, num_points: int, num_frames: int, levels: int, self_attn: bool) -> None:
        super().__init__()
        self.position_encoder = nn.Sequential(
            nn.Linear(3, dims), nn.LayerNorm(dims), nn.ReLU(inplace=True),
            nn.Linear(dims, dims), nn.LayerNorm(dims), nn.ReLU(inplace=True),
        )
        self.self_attn = SparseBEVSelfAttention(dims, heads=8, dropout=0.1) if self_attn else None
        if self_attn:
            self.norm1 = nn.LayerNorm(dims)
        self.sampling = SparseBEVSampling(dims, groups, num_points, levels)
        self.mixing = AdaptiveMixing(dims, num_points * num_frames, groups, num_points * num_frames * groups)
        self.ffn = FFN(dims, dims * 2, dropout=0.1)
        self.norm2 = nn.LayerNorm(dims)
        self.norm3 = nn.LayerNorm(dims)

    @torch.no_grad()
    def init_weights(self) -> None:
        if self.self_attn is not None:
            self.self_attn.init_weights()
        self.sampling.init_weights()
        self.mixing.init_weights()

    def forward(self, query: torch.Tensor, box: torch.Tensor, grid: OccGrid, ctx: ImageContext) -> torch.Tensor:
        """query (B, Q, C); box (B, Q, 6) encoded as upstream: normalised min corner, log size (metres)."""
        query = query + self.position_encoder(box[..., :3])
        corner, size = decode_box(box, grid)
        if self.self_attn is not None:
            query = self.norm1(self.self_attn(corner[..., :2], query))
        sampled = self.sampling(corner + size / 2, size, query, ctx)
        query = self.norm2(self.mixing(sampled, query))
        return self.norm3(self.ffn(query))


class SparseVoxelDecoder(nn.Module):
    """``num_layers`` levels; level i has 2**(L − i)-voxel cells, keeps ``topk[i]`` of their children."""

    def __init__(self, dims: int, groups: int, num_points: int, num_frames: int, levels: int, num_layers: int,
                 num_classes: int, free_label: int, topk_training: tuple[int, ...], topk_testing: tuple[int, ...],
                 grid: OccGrid) -> None:
        super().__init__()
        self.dims, self.num_layers, self.free_label, self.grid = dims, num_layers, free_label, grid
        self.topk_training, self.topk_testing = tuple(topk_training), tuple(topk_testing)
        # Upstream: self-attention on levels 0 and 1 only; points halve per level.
        self.decoder_layers = nn.ModuleList(
            SparseVoxelDecoderLayer(dims, groups, num_points // 2 ** i, num_frames, levels, self_attn=i in (0, 1))
            for i in range(num_layers))
        self.lift_feat_heads = nn.ModuleList(nn.Sequential(nn.Linear(dims, dims * 8), nn.ReLU(inplace=True))
                                             for _ in range(num_layers))
        self.seg_pred_heads = nn.ModuleList(nn.Linear(dims, num_classes) for _ in range(num_layers))

    @torch.no_grad()
    def init_weights(self) -> None:
        for layer in self.decoder_layers:
            layer.init_weights()

    def initial_coords(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B, N0, 3) min corners of the coarsest cells, x outer, z inner (upstream generate_grid)."""
        step = 2 ** self.num_layers
        axes = [torch.arange(0, d, step, device=device) for d in self.grid.shape]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, 3)
        return coords.expand(batch, -1, -1)

    def forward(self, ctx: ImageContext, batch: int) -> list[VoxelLevel]:
        topk = self.topk_training if self.training else self.topk_testing
        coords = self.initial_coords(batch, ctx.lidar2img.device)
        query = ctx.lidar2img.new_zeros(batch, coords.shape[1], self.dims)
        out = []
        for i, layer in enumerate(self.decoder_layers):
            interval = 2 ** (self.num_layers - i)
            query = layer(query, encode_box(coords, interval, self.grid), self.grid, ctx)
            b, q, c = query.shape
            feats = self.lift_feat_heads[i](query).reshape(b, q * 8, c)  # child k of query j at j·8 + k
            children = coords[:, :, None, :].repeat(1, 1, 8, 1)
            for k, axes in enumerate(CHILD_AXES):
                for axis in axes:
                    children[:, :, k, axis] += interval // 2
            children = children.reshape(b, q * 8, 3)
            logits = self.seg_pred_heads[i](feats)
            score = 1 - F.softmax(logits, dim=-1)[..., self.free_label]
            keep = torch.topk(score, k=topk[i], dim=1).indices  # (B, K), sorted by score
            children = torch.gather(children, 1, keep[..., None].expand(-1, -1, 3))
            feats = torch.gather(feats, 1, keep[..., None].expand(-1, -1, c))
            logits = torch.gather(logits, 1, keep[..., None].expand(-1, -1, logits.shape[-1]))
            out.append(VoxelLevel(torch.div(children, interval // 2, rounding_mode="trunc").long(), logits, feats,
                                  interval // 2))
            # Levels are trained separately: the next level sees detached coordinates and features.
            coords, query = children.detach(), feats.detach()
        return out


def encode_box(coords: torch.Tensor, interval: int, grid: OccGrid) -> torch.Tensor:
    """Integer min corners (B, Q, 3) -> (B, Q, 6): min corner normalised to [0, 1] by the range, log of
    the cube side 0.4·interval m (upstream index2point -> point2bbox -> encode_bbox)."""
    lower = coords.new_tensor(grid.lower, dtype=torch.float32)
    span = coords.new_tensor([hi - lo for lo, hi in zip(grid.lower, grid.upper)], dtype=torch.float32)
    corner = coords * coords.new_tensor(grid.voxel_size, dtype=torch.float32) + lower
    size = torch.ones_like(corner) * corner.new_tensor([v * interval for v in grid.voxel_size])
    return torch.cat([(corner - lower) / span, size.log()], dim=-1)


def decode_box(box: torch.Tensor, grid: OccGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Q, 6) -> min corner (B, Q, 3) m and size (B, Q, 3) m (upstream decode_bbox)."""
    lower = box.new_tensor(grid.lower)
    span = box.new_tensor([hi - lo for lo, hi in zip(grid.lower, grid.upper)])
    return box[..., :3] * span + lower, box[..., 3:6].exp()


__all__ = ["SparseVoxelDecoder", "SparseVoxelDecoderLayer", "VoxelLevel", "CHILD_AXES", "encode_box", "decode_box"]

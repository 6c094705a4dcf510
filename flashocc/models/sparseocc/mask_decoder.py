"""Mask transformer: learned queries predict a class and a mask over the voxel decoder's final voxels.

Upstream: SparseOcc@af4d9df models/sparseocc_transformer.py (MaskFormerOccDecoder,
MaskFormerOccDecoderLayer). One layer is applied ``num_layers`` times with **shared weights**; predictions
are made from the initial queries and after every pass (3 sets for the official 2 passes).
"""
from __future__ import annotations

import torch
from torch import nn

from flashocc.grid import OccGrid
from flashocc.models.sparseocc.layers import FFN, AdaptiveMixing, MaskFormerSelfAttention
from flashocc.models.sparseocc.sampling import ImageContext, MaskFormerSampling


class MaskFormerOccDecoderLayer(nn.Module):
    def __init__(self, dims: int, groups: int, num_points: int, num_frames: int, levels: int, num_classes: int,
                 grid: OccGrid) -> None:
        super().__init__()
        self.self_attn = MaskFormerSelfAttention(dims, heads=8)
        self.sampling = MaskFormerSampling(dims, groups, num_points, levels, grid)
        # Upstream hard-codes out_points=128, which is P·T·G for the official 4·8·4.
        self.mixing = AdaptiveMixing(dims, num_points * num_frames, groups, num_points * num_frames * groups)
        self.ffn = FFN(dims, dims * 2, dropout=0.1)
        self.mask_proj = nn.Linear(dims, dims)
        # No "free" / no-object logit: free comes from score thresholds and from voxels not kept.
        self.classifier = nn.Linear(dims, num_classes - 1)
        self.norm1 = nn.LayerNorm(dims)
        self.norm2 = nn.LayerNorm(dims)
        self.norm3 = nn.LayerNorm(dims)

    @torch.no_grad()
    def init_weights(self) -> None:
        self.self_attn.init_weights()
        self.sampling.init_weights()
        self.mixing.init_weights()

    def predict(self, query: torch.Tensor, mask_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> class logits (B, Q, num_classes − 1), mask logits (B, Q, K)."""
        return self.classifier(query), torch.einsum("bqc,bnc->bqn", self.mask_proj(query), mask_feat)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, mask_pred: torch.Tensor, occ_loc: torch.Tensor,
                mask_feat: torch.Tensor, ctx: ImageContext, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        query = self.norm1(self.self_attn(query, query_pos))
        sampled = self.sampling(query, mask_pred > 0, occ_loc, ctx, generator)
        query = self.norm2(self.mixing(sampled, query))
        query = self.norm3(self.ffn(query))
        return (query, *self.predict(query, mask_feat))


class MaskFormerOccDecoder(nn.Module):
    def __init__(self, dims: int, groups: int, num_points: int, num_frames: int, levels: int, num_classes: int,
                 num_queries: int, num_layers: int, grid: OccGrid) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.decoder_layer = MaskFormerOccDecoderLayer(dims, groups, num_points, num_frames, levels, num_classes, grid)
        self.query_feat = nn.Embedding(num_queries, dims)
        self.query_pos = nn.Embedding(num_queries, dims)

    @torch.no_grad()
    def init_weights(self) -> None:
        self.decoder_layer.init_weights()

    def forward(self, occ_loc: torch.Tensor, mask_feat: torch.Tensor, ctx: ImageContext,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """occ_loc (B, K, 3) final voxel indices; mask_feat (B, K, C) -> per prediction set (initial, then
        after each pass) the mask logits (B, Q, K) and class logits (B, Q, num_classes − 1)."""
        b = mask_feat.shape[0]
        query = self.query_feat.weight[None].repeat(b, 1, 1)
        query_pos = self.query_pos.weight[None].repeat(b, 1, 1)
        class_pred, mask_pred = self.decoder_layer.predict(query, mask_feat)
        class_preds, mask_preds = [class_pred], [mask_pred]
        for _ in range(self.num_layers):
            query, class_pred, mask_pred = self.decoder_layer(query, query_pos, mask_pred, occ_loc, mask_feat, ctx,
                                                              generator)
            class_preds.append(class_pred)
            mask_preds.append(mask_pred)
        return mask_preds, class_preds


__all__ = ["MaskFormerOccDecoder", "MaskFormerOccDecoderLayer"]

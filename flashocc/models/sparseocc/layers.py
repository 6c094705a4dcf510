"""SparseOcc building blocks with the official state-dict names.

FPN: mmdet ``FPN`` (``lateral_convs.i.conv``, ``fpn_convs.i.conv``). FFN: mmcv ``FFN`` (``layers.0.0``,
``layers.1``). Attention, mixing: SparseOcc@af4d9df models/sparsebev_transformer.py (SparseBEVSelfAttention,
AdaptiveMixing) and models/sparseocc_transformer.py (MaskFormerSelfAttention).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from flashocc.models.layers import ConvModule


class FPN(nn.Module):
    """mmdet FPN, no extra levels: 1x1 laterals and 3x3 output convs (both with bias), nearest top-down."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(ConvModule(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvModule(nn.Conv2d(out_channels, out_channels, 3, padding=1))
                                       for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class FFN(nn.Module):
    """mmcv FFN: Linear, ReLU, Dropout, Linear, Dropout, plus the identity."""

    def __init__(self, dims: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)),
                                    nn.Linear(hidden, dims), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class _MMCVAttention(nn.Module):
    """mmcv ``MultiheadAttention`` (``attn`` inside, residual added): attention dropout only."""

    def __init__(self, dims: int, heads: int, attn_drop: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, heads, dropout=attn_drop, batch_first=True)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return x + self.attn(x, x, x, attn_mask=attn_mask, need_weights=False)[0]


class SparseBEVSelfAttention(nn.Module):
    """Self-attention with a distance bias per head: −τ_h(q)·‖c_q − c_k‖ (BEV x, y in metres).

    τ = ``gen_tau(query)`` starts at weight 0 and bias U(0, 2) (upstream init_weights)."""

    def __init__(self, dims: int, heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _MMCVAttention(dims, heads, dropout)
        self.gen_tau = nn.Linear(dims, heads)
        self.use_checkpoint = True  # set_decoder_checkpointing

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.zeros_(self.gen_tau.weight)
        nn.init.uniform_(self.gen_tau.bias, 0.0, 2.0)

    def _attend(self, centers_xy: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # The direct difference, not cdist's matmul form, whose cancellation errors reach 1e-3 m.
        dist = torch.cdist(centers_xy, centers_xy, compute_mode="donot_use_mm_for_euclid_dist")  # (B, Q, Q)
        tau = self.gen_tau(query).permute(0, 2, 1)  # (B, H, Q)
        # (B·H, Q, Q), batch-major as nn.MultiheadAttention expects.
        bias = (-dist[:, None] * tau[..., None]).flatten(0, 1)
        return self.attention(query, bias)

    def forward(self, centers_xy: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """centers_xy (B, Q, 2) metres (upstream: the min corners); query (B, Q, C)."""
        # Checkpointed in training as upstream: the bias is a dense (8·B, Q, Q) tensor (512 MB at Q = 4000).
        if self.use_checkpoint and self.training and query.requires_grad:
            return checkpoint(self._attend, centers_xy, query, use_reentrant=False)
        return self._attend(centers_xy, query)


class MaskFormerSelfAttention(nn.Module):
    """Plain ``nn.MultiheadAttention`` with q = k = feat + pos, v = feat, residual (no dropout)."""

    def __init__(self, dims: int, heads: int = 8) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dims, heads, dropout=0.0, batch_first=True)

    @torch.no_grad()
    def init_weights(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        qk = query + query_pos
        return query + self.self_attn(qk, qk, query, need_weights=False)[0]


INFERENCE_CHUNK = 1024  # queries per block of AdaptiveMixing without autograd


class AdaptiveMixing(nn.Module):
    """AdaMixer's adaptive channel and point mixing, parameters generated per query and group.

    Per group: x (Pin, C/G) @ M (C/G, C/G) -> LN over (Pin, C/G) -> ReLU -> S (Pout, Pin) @ x -> LN ->
    ReLU; then (G·Pout·C/G) -> Linear -> added to the query."""

    def __init__(self, dims: int, in_points: int, groups: int, out_points: int) -> None:
        super().__init__()
        self.groups, self.in_points, self.out_points = groups, in_points, out_points
        self.eff = dims // groups
        self.m_parameters = self.eff * self.eff
        self.s_parameters = in_points * out_points
        self.parameter_generator = nn.Linear(dims, groups * (self.m_parameters + self.s_parameters))
        self.out_proj = nn.Linear(self.eff * out_points * groups, dims)
        self.use_checkpoint = True  # set_decoder_checkpointing

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.zeros_(self.parameter_generator.weight)

    def _mix(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        b, q, g, p, c = x.shape
        if (g, p, c) != (self.groups, self.in_points, self.eff):
            raise ValueError(f"AdaptiveMixing: sampled features {(g, p, c)} != (groups, in_points, C/G) "
                             f"{(self.groups, self.in_points, self.eff)}")
        params = self.parameter_generator(query).reshape(b * q, g, -1)
        m, s = params.split([self.m_parameters, self.s_parameters], dim=2)
        m = m.reshape(b * q, g, c, c)
        s = s.reshape(b * q, g, self.out_points, p)
        out = torch.matmul(x.reshape(b * q, g, p, c), m)
        out = F.relu(F.layer_norm(out, out.shape[-2:]))
        out = torch.matmul(s, out)
        out = F.relu(F.layer_norm(out, out.shape[-2:]))
        return query + self.out_proj(out.reshape(b, q, -1))

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # Upstream checkpoints the mixing in training: the generated (B·Q, G, C/G, C/G) matrices are the
        # largest activations of the decoder.
        if self.use_checkpoint and self.training and x.requires_grad:
            return checkpoint(self._mix, x, query, use_reentrant=False)
        if torch.is_grad_enabled() or query.shape[1] <= INFERENCE_CHUNK:
            return self._mix(x, query)
        # Inference: every query mixes on its own, so blocks of queries give the same result while the
        # generated matrices of only one block exist (557 MB for the 8,000 level-2 queries of sparseocc-r50).
        return torch.cat([self._mix(x[:, i:i + INFERENCE_CHUNK], query[:, i:i + INFERENCE_CHUNK])
                          for i in range(0, query.shape[1], INFERENCE_CHUNK)], dim=1)


def set_decoder_checkpointing(module: nn.Module, enabled: bool) -> None:
    """Turn the training-time activation checkpointing of every decoder block under ``module`` on or off.

    Upstream checkpoints the attention, sampling and mixing blocks unconditionally in training (memory of
    the 64,000-voxel level on a GPU); recomputing them costs a second forward, which small CPU models
    need not pay. Outputs and gradients are the same either way (the RNG state is replayed)."""
    for m in module.modules():
        if hasattr(m, "use_checkpoint"):
            m.use_checkpoint = enabled


__all__ = ["FPN", "FFN", "SparseBEVSelfAttention", "MaskFormerSelfAttention", "AdaptiveMixing",
           "set_decoder_checkpointing"]

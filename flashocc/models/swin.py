"""Swin Transformer image backbone with the parameter names of the mmseg/BEVDet ``SwinTransformer``
used by the official M3 config (``flashocc-stbase-4d-stereo-512x1408``), and its image neck.

Key layout (what official checkpoints contain, so they load strictly):
  patch_embed.projection (Conv2d 4x4/4), patch_embed.norm;
  stages.{i}.blocks.{j}.{norm1, attn.w_msa.{relative_position_bias_table, relative_position_index,
  qkv, proj}, norm2, ffn.layers.{0.0, 1}}; stages.{i}.downsample.{norm, reduction} (i < 3);
  norm{i} for each output stage i.
``relative_position_index`` is a persistent buffer there, so it is one here too.

Patch merging follows ``nn.Unfold`` channel order (c·4 + kh·2 + kw), the order of checkpoints already
converted from the original Swin release (``swin_convert``); released FlashOcc checkpoints are in it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class SwinLayout:
    embed_dims: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    patch_size: int = 4
    mlp_ratio: int = 4


SWIN_LAYOUTS: dict[str, SwinLayout] = {
    "swin-t": SwinLayout(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin-b": SwinLayout(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),  # M3 (window 12, 384-pretrained)
}


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def relative_position_index(window: int) -> torch.Tensor:
    """(W², W²) index into the (2W-1)² bias table: (Δrow + W-1)·(2W-1) + (Δcol + W-1)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


class WindowMSA(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(self, dims: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dims, dims * 3)
        self.proj = nn.Linear(dims, dims)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, num_windows: int) -> torch.Tensor:
        """x (B·nW, L, C) window tokens; mask (nW, L, L) additive or None."""
        bw, length, dims = x.shape
        qkv = self.qkv(x).view(bw // num_windows, num_windows, length, 3, self.num_heads, dims // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, L, d)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(length, length, self.num_heads).permute(2, 0, 1)  # (heads, L, L)
        attn_mask = bias.unsqueeze(0).unsqueeze(0).to(q.dtype)
        if mask is not None:
            attn_mask = attn_mask + mask.view(1, num_windows, 1, length, length).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # scale = d^-0.5
        return self.proj(out.permute(0, 1, 3, 2, 4).reshape(bw, length, dims))


class ShiftWindowMSA(nn.Module):
    """(Shifted-)window attention on a (B, H·W, C) token map; pads H, W to multiples of the window."""

    def __init__(self, dims: int, num_heads: int, window: int, shift: int, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.w_msa = WindowMSA(dims, num_heads, window)
        self.drop = DropPath(drop_path)

    def _shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        # Label the 3x3 regions that the cyclic shift brings together; tokens attend only within a region.
        win, s = self.window, self.shift
        labels = torch.zeros(h, w, device=device)
        bounds = ((0, -win), (-win, -s), (-s, None))
        for i, (h0, h1) in enumerate(bounds):
            for j, (w0, w1) in enumerate(bounds):
                labels[h0:h1, w0:w1] = i * 3 + j
        windows = labels.view(h // win, win, w // win, win).permute(0, 2, 1, 3).reshape(-1, win * win)
        diff = windows.unsqueeze(1) - windows.unsqueeze(2)
        return torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))  # (nW, L, L)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        h, w = hw
        win = self.window
        x = x.view(b, h, w, c)
        pad_b, pad_r = (win - h % win) % win, (win - w % win) % win
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        mask = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = self._shift_mask(hp, wp, x.device)
        num_windows = (hp // win) * (wp // win)
        windows = x.view(b, hp // win, win, wp // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, win * win, c)
        out = self.w_msa(windows, mask, num_windows)
        out = out.view(b, hp // win, wp // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return self.drop(out[:, :h, :w].reshape(b, h * w, c))


class FFN(nn.Module):
    """mmcv FFN naming: layers.0.0 (Linear C->4C), GELU, layers.1 (Linear 4C->C)."""

    def __init__(self, dims: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dims), nn.Dropout(0.0))
        self.drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.layers(x))


class SwinBlock(nn.Module):
    def __init__(self, dims: int, num_heads: int, hidden: int, window: int, shift: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attn = ShiftWindowMSA(dims, num_heads, window, window // 2 if shift else 0, drop_path)
        self.norm2 = nn.LayerNorm(dims)
        self.ffn = FFN(dims, hidden, drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return self.ffn(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> LayerNorm(4C) -> Linear(4C, 2C), in ``nn.Unfold`` channel order."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dims)
        self.reduction = nn.Linear(4 * dims, 2 * dims, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c).permute(0, 3, 1, 2)
        x = F.pad(x, (0, w % 2, 0, h % 2))  # odd sizes: one zero row/column, as mmseg does
        x = F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)  # (B, H/2·W/2, 4C), channel = c·4 + kh·2 + kw
        return self.reduction(self.norm(x)), ((h + 1) // 2, (w + 1) // 2)


class SwinStage(nn.Module):
    def __init__(self, dims: int, depth: int, num_heads: int, layout: SwinLayout, drop_paths: list[float],
                 downsample: bool, with_cp: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dims, num_heads, dims * layout.mlp_ratio, layout.window_size,
                                              shift=i % 2 == 1, drop_path=drop_paths[i]) for i in range(depth))
        self.downsample = PatchMerging(dims) if downsample else None
        self.with_cp = with_cp

    def blocks_forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, hw, use_reentrant=False) if self.with_cp and x.requires_grad else block(x, hw)
        return x


class SwinTransformer(nn.Module):
    """Swin backbone: (B, 3, H, W) -> [stereo feature (stage 0, no norm), norm_i(stage i) for out_indices].

    The stage-0 map (embed_dims channels, stride 4) is the temporal-stereo feature, returned first
    when ``return_stereo_feat`` (official M3 setting), *without* an output norm.
    """

    def __init__(self, layout: SwinLayout | str = "swin-b", out_indices: tuple[int, ...] = (2, 3),
                 drop_path_rate: float = 0.1, return_stereo_feat: bool = True, with_cp: bool = False) -> None:
        super().__init__()
        layout = SWIN_LAYOUTS[layout] if isinstance(layout, str) else layout
        self.layout, self.out_indices, self.return_stereo_feat = layout, tuple(out_indices), return_stereo_feat
        dims = layout.embed_dims
        self.patch_embed = nn.Module()
        self.patch_embed.projection = nn.Conv2d(3, dims, layout.patch_size, layout.patch_size)
        self.patch_embed.norm = nn.LayerNorm(dims)
        rates = torch.linspace(0, drop_path_rate, sum(layout.depths), device="cpu").tolist()  # stochastic depth
        self.num_features = [dims * 2 ** i for i in range(len(layout.depths))]
        self.stages = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(layout.depths, layout.num_heads)):
            first = sum(layout.depths[:i])
            self.stages.append(SwinStage(self.num_features[i], depth, heads, layout, rates[first:first + depth],
                                         downsample=i < len(layout.depths) - 1, with_cp=with_cp))
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.num_features[i] for i in self.out_indices)

    @property
    def stereo_channels(self) -> int:
        return self.num_features[0]

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.layout.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.patch_embed.projection(x)
        hw = (x.shape[2], x.shape[3])
        return self.patch_embed.norm(x.flatten(2).transpose(1, 2)), hw

    @staticmethod
    def _to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)  # (B, C, H, W)

    def stereo_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-0 map only (the official ``extract_stereo_ref_feat`` for the t-2 reference frame)."""
        tokens, hw = self._embed(x)
        return self._to_map(self.stages[0].blocks_forward(tokens, hw), hw)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens, hw = self._embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            out = stage.blocks_forward(tokens, hw)
            if i == 0 and self.return_stereo_feat:
                outs.append(self._to_map(out, hw))
            if i in self.out_indices:
                outs.append(self._to_map(getattr(self, f"norm{i}")(out), hw))
            if i == max(self.out_indices):
                break
            tokens, hw = stage.downsample(out, hw)
        return outs


class ImageFPN_LSS(nn.Module):  # noqa: N801 - official module name (FPN_LSS without extra upsample)
    """Image neck of the Swin configs: cat[f0, up2(f1)] -> conv3x3-BN-ReLU x2 (``FPN_LSS`` with
    ``extra_upsample=None``, so no ``up2`` block and mid = out channels). Keys conv.{0,1,3,4}."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 2) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.scale_factor = scale_factor
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        high, low = feats
        up = F.interpolate(low, scale_factor=self.scale_factor, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([high, up], dim=1))

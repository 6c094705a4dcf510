"""Multi-view multi-scale sampling of SparseOcc in plain torch (``grid_sample``), forward and backward.

Two steps, as upstream (SparseOcc@af4d9df models/sparsebev_sampling.py, sampling_4d; models/csrc/wrapper.py,
msmv_sampling and its CUDA kernel):

* ``sampling_4d`` projects 3D points (ego frame, metres) into every camera of every frame, keeps the
  **first** camera in which the point is valid (camera 0 when none is) and calls
* ``msmv_sampling``, which reads each point bilinearly from that one view of every feature level and sums
  the levels with their weights.

Addressing is align-corners: pixel x = u·(W_l − 1), y = v·(H_l − 1) with u, v ∈ (0, 1) normalised by the
padded input size, zero outside the map. The views of a level are stacked along y with zero rows between
them (``stack_views``) and read by one 2-D ``grid_sample``, so no sample ever blends two views: upstream's
own torch fallback (``msmv_sampling_pytorch``, a 5-D ``grid_sample`` with z = 2·n/5 − 1) leaks ~1e-7 of a
neighbouring view through float rounding and reads 8 corners instead of 4.
Official quirk kept for parity: u·(W − 1) instead of u·W − 0.5 shifts samples by (u − 0.5) feature pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5  # upstream sampling_4d eps: depth floor and validity threshold


def stack_views(feat: torch.Tensor) -> torch.Tensor:
    """(R, C, N, H, W) -> (R, C, N·(H + 1) + 1, W): the views one above the other, each between zero rows.

    The zero rows give the kernel's zero padding at a view's top and bottom edge (a sample at
    −1 < y < 0 or H − 1 < y < H blends with zeros, never with the next view), so one 2-D ``grid_sample``
    reads every view without the cross-view leak of upstream's 5-D fallback."""
    r, c, n, h, w = feat.shape
    out = feat.new_zeros(r, c, n * (h + 1) + 1, w)
    out[:, :, 1:].view(r, c, n, h + 1, w)[:, :, :, :h] = feat
    return out


def msmv_sampling(stacked_feats: list[torch.Tensor], locations: torch.Tensor, weights: torch.Tensor,
                  num_views: int) -> torch.Tensor:
    """Bilinear multi-level sampling from one view per point.

    stacked_feats: per level (R, C, N·(H_l + 1) + 1, W_l) from ``stack_views``, R = B·T·G rows.
    locations: (R, Q, P, 3) = (u, v, view / (N − 1)); u, v normalised to [0, 1] by the padded input size.
    weights: (R, Q, P, L) level weights.
    Returns (R, Q, C, P) (upstream layout). Differentiable in the features, (u, v) and the weights; the
    view is a choice, not a coordinate, and gets no gradient (nor does it in the CUDA kernel).
    """
    if weights.shape[-1] != len(stacked_feats):
        raise ValueError(f"msmv_sampling: {weights.shape[-1]} level weights for {len(stacked_feats)} feature levels")
    n = num_views
    view = torch.round(locations[..., 2].detach() * max(n - 1, 1)).clamp_(0, n - 1)
    out = None
    for level, feat in enumerate(stacked_feats):
        rows = feat.shape[-2]
        h = (rows - 1) // n - 1
        y = locations[..., 1] * (h - 1)
        # The kernel skips a sample unless -1 < x < W and -1 < y < H; x is zero-padded by grid_sample
        # itself, y must not reach the neighbouring view, so such samples are sent far outside the map.
        inside = (y > -1) & (y < h)
        y_stack = torch.where(inside, y + view * (h + 1) + 1, torch.full_like(y, -4.0))
        grid = torch.stack([locations[..., 0] * 2 - 1, y_stack * (2 / (rows - 1)) - 1], dim=-1)  # (R, Q, P, 2)
        sampled = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled = sampled * weights[..., level].unsqueeze(1)  # (R, C, Q, P)
        out = sampled if out is None else out + sampled
    return out.permute(0, 2, 1, 3)


def sampling_4d(points: torch.Tensor, mlvl_feats: list[torch.Tensor], weights: torch.Tensor, lidar2img: torch.Tensor,
                image_hw: tuple[int, int], num_views: int) -> torch.Tensor:
    """Sample every point in every frame from the first camera that sees it.

    points: (B, Q, T, G, P, 3) ego-frame metres (upstream passes the same points for every frame).
    mlvl_feats: per level (B·T·G, C, N·(H_l + 1) + 1, W_l), row = (b·T + t)·G + g (``split_groups``).
    weights: (B, Q, G, T, P, L) level weights (softmaxed).
    lidar2img: (B, T·N, 4, 4) ego frame -> image pixels of each camera of each frame (frames outer).
    image_hw: padded input (H, W) the pixels are normalised by.
    Returns (B, Q, G, T·P, C), frames outer inside T·P.
    """
    b, q, t, g, p, _ = points.shape
    n = num_views
    h, w = image_hw
    pts = points.reshape(b, q, t, g * p, 3)
    pts = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)  # (B, Q, T, GP, 4)
    mats = lidar2img.reshape(b, t, n, 4, 4)
    # (B, T, N, Q, GP, 4): every point through every camera of its frame.
    cam = torch.einsum("btnij,bqtkj->btnqki", mats, pts)
    depth = cam[..., 2:3]
    uv = cam[..., 0:2] / torch.clamp(depth, min=EPS)
    uv = uv / uv.new_tensor([w, h])
    valid = ((depth[..., 0] > EPS) & (uv[..., 0] > 0) & (uv[..., 0] < 1) & (uv[..., 1] > 0) & (uv[..., 1] < 1))
    # Official behaviour: argmax of the 0/1 mask = the first valid camera, camera 0 when none is.
    view = torch.argmax(valid.to(torch.uint8), dim=2, keepdim=True)  # (B, T, 1, Q, GP)
    uv = torch.gather(uv, 2, view[..., None].expand(b, t, 1, q, g * p, 2))[:, :, 0]  # (B, T, Q, GP, 2)
    view = view[:, :, 0].to(uv.dtype) / max(n - 1, 1)
    loc = torch.cat([uv, view[..., None]], dim=-1).reshape(b, t, q, g, p, 3)
    loc = loc.permute(0, 1, 3, 2, 4, 5).reshape(b * t * g, q, p, 3)
    # Official quirk (SparseOcc@af4d9df models/sparsebev_sampling.py, sampling_4d): the level weights are
    # flattened in (B, G, T) order while points and features are in (B, T, G) order, so row (t, g) reads the
    # weights of group (t·G + g) // T (the weights are the same for every frame). Kept for checkpoint parity.
    lw = weights.reshape(b, q, g, t, p, -1).permute(0, 2, 3, 1, 4, 5).reshape(b * g * t, q, p, -1)
    out = msmv_sampling(mlvl_feats, loc, lw, n)  # (BTG, Q, C, P)
    c = out.shape[2]
    out = out.reshape(b, t, g, q, c, p).permute(0, 3, 2, 1, 5, 4)  # (B, Q, G, T, P, C)
    return out.flatten(3, 4)


def split_groups(feat: torch.Tensor, num_frames: int, num_views: int, num_groups: int) -> torch.Tensor:
    """FPN level (B, T·N, G·C, H, W) -> the stacked (B·T·G, C, N·(H + 1) + 1, W) layout ``msmv_sampling``
    reads: channel g·C + c of group g (upstream SparseOccTransformer.forward stores (B·T·G, N, H, W, C))."""
    b, tn, gc, h, w = feat.shape
    c = gc // num_groups
    feat = feat.reshape(b, num_frames, num_views, num_groups, c, h, w)
    return stack_views(feat.permute(0, 1, 3, 4, 2, 5, 6).reshape(b * num_frames * num_groups, c, num_views, h, w))


__all__ = ["msmv_sampling", "sampling_4d", "split_groups", "stack_views"]

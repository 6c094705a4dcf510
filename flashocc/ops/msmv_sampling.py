"""Multi-view multi-scale sampling of SparseOcc in plain torch (``grid_sample``), forward and backward.

Two steps, as upstream (SparseOcc@af4d9df models/sparsebev_sampling.py, sampling_4d; models/csrc/wrapper.py,
msmv_sampling and its CUDA kernel):

* ``sampling_4d`` projects 3D points (ego frame, metres) into every camera of every frame, keeps the
  **first** camera in which the point is valid (camera 0 when none is) and calls
* ``msmv_sampling``, which reads each point bilinearly from that one view of every feature level and sums
  the levels with their weights.

Addressing is align-corners: pixel x = u·(W_l − 1), y = v·(H_l − 1) with u, v ∈ (0, 1) normalised by the
padded input size, zero outside the map. The view is the third coordinate of a 5-D ``grid_sample`` over
(view, y, x); its normalised coordinates are chosen so that ``grid_sample`` recovers the integer view
exactly (see ``_view_coordinates``), so no sample ever blends two views — upstream's own torch fallback
(``msmv_sampling_pytorch``, z = 2·n/5 − 1) leaks ~1e-7 of a neighbouring view through float rounding.
Official quirk kept for parity: u·(W − 1) instead of u·W − 0.5 shifts samples by (u − 0.5) feature pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5  # upstream sampling_4d eps: depth floor and validity threshold


def _view_coordinates(num_views: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(num_views,) normalised z coordinates whose align-corners unnormalisation ((z + 1) / 2 · (N − 1), the
    formula of ``grid_sample``) gives exactly 0, 1, ..., N − 1 in ``dtype``: the nearest representable
    value of 2n/(N − 1) − 1 is nudged by one ulp until it does."""
    if num_views == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    out = []
    for n in range(num_views):
        z = torch.tensor(2.0 * n / (num_views - 1) - 1.0, dtype=dtype)
        for _ in range(8):
            back = (z + 1) / 2 * (num_views - 1)
            if back == n:
                break
            z = torch.nextafter(z, torch.tensor(float("inf") if back < n else float("-inf"), dtype=dtype))
        out.append(z)
    return torch.stack(out).to(device)


def msmv_sampling(mlvl_feats: list[torch.Tensor], locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Bilinear multi-level sampling from one view per point.

    mlvl_feats: per level (R, C, N, H_l, W_l), R = B·T·G rows (channel-first, unlike upstream's
        channel-last storage; the values are the same).
    locations: (R, Q, P, 3) = (u, v, view / (N − 1)); u, v normalised to [0, 1] by the padded input size.
    weights: (R, Q, P, L) level weights.
    Returns (R, Q, C, P) (upstream layout). Differentiable in the features, (u, v) and the weights.
    """
    if weights.shape[-1] != len(mlvl_feats):
        raise ValueError(f"msmv_sampling: {weights.shape[-1]} level weights for {len(mlvl_feats)} feature levels")
    num_views = mlvl_feats[0].shape[2]
    # The view id is a choice, not a coordinate: no gradient flows into it (nor does the kernel's).
    view = torch.round(locations[..., 2].detach() * (num_views - 1)).long().clamp_(0, num_views - 1)
    z = _view_coordinates(num_views, locations.device, locations.dtype)[view]
    grid = torch.cat([locations[..., :2] * 2 - 1, z[..., None]], dim=-1)[:, :, :, None, :]  # (R, Q, P, 1, 3)
    out = None
    for level, feat in enumerate(mlvl_feats):
        sampled = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[..., 0]
        sampled = sampled * weights[..., level].unsqueeze(1)  # (R, C, Q, P)
        out = sampled if out is None else out + sampled
    return out.permute(0, 2, 1, 3)


def sampling_4d(points: torch.Tensor, mlvl_feats: list[torch.Tensor], weights: torch.Tensor, lidar2img: torch.Tensor,
                image_hw: tuple[int, int], num_views: int) -> torch.Tensor:
    """Sample every point in every frame from the first camera that sees it.

    points: (B, Q, T, G, P, 3) ego-frame metres (upstream passes the same points for every frame).
    mlvl_feats: per level (B·T·G, C, N, H_l, W_l), row = (b·T + t)·G + g (``split_groups``).
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
    out = msmv_sampling(mlvl_feats, loc, lw)  # (BTG, Q, C, P)
    c = out.shape[2]
    out = out.reshape(b, t, g, q, c, p).permute(0, 3, 2, 1, 5, 4)  # (B, Q, G, T, P, C)
    return out.flatten(3, 4)


def split_groups(feat: torch.Tensor, num_frames: int, num_views: int, num_groups: int) -> torch.Tensor:
    """FPN level (B, T·N, G·C, H, W) -> (B·T·G, C, N, H, W): channel g·C + c of group g (upstream
    SparseOccTransformer.forward, channel-first here for ``grid_sample``)."""
    b, tn, gc, h, w = feat.shape
    c = gc // num_groups
    feat = feat.reshape(b, num_frames, num_views, num_groups, c, h, w)
    return feat.permute(0, 1, 3, 4, 2, 5, 6).reshape(b * num_frames * num_groups, c, num_views, h, w)


__all__ = ["msmv_sampling", "sampling_4d", "split_groups"]

"""Temporal stereo matching of BEVStereo4D: a plane-sweep cost volume between consecutive frames.

For every pixel of the current frame's stride-4 feature map and every depth hypothesis, the 3D point
is projected into the adjacent (earlier) frame's camera, the adjacent feature is sampled there, and
the L1 feature distance becomes a matching cost; a softmax over depth of the negated cost gives a
per-pixel depth distribution (FlashOCC@4084861 projects/mmdet3d_plugin/models/model_utils/depthnet.py,
DepthNet.calculate_cost_volumn; docs/official-behaviour.md, "Temporal stereo (M2)"). Everything here
runs without gradients.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def current_to_adjacent_sensor(sensor2ego: torch.Tensor, ego2global: torch.Tensor,
                               adj_sensor2ego: torch.Tensor, adj_ego2global: torch.Tensor) -> torch.Tensor:
    """Per-camera transform from the current camera frame to the same camera in the adjacent frame.

    All inputs (B, N, 4, 4); computed in float64 and cast to float32 like the official
    ``prepare_inputs``: inverse(ego2global_adj · sensor2ego_adj) · ego2global · sensor2ego.
    """
    curr2global = ego2global.double() @ sensor2ego.double()
    adj2global = adj_ego2global.double() @ adj_sensor2ego.double()
    return (torch.linalg.inv(adj2global) @ curr2global).float()


def cost_volume_grid(frustum: torch.Tensor, curr2adj: torch.Tensor, intrinsics: torch.Tensor,
                     post_rots: torch.Tensor, post_trans: torch.Tensor, image_size: tuple[int, int],
                     inverse_3x3: Callable[[torch.Tensor], torch.Tensor] = torch.linalg.inv) -> torch.Tensor:
    """``grid_sample`` coordinates of every (depth, pixel) of the current frame in the adjacent image.

    frustum (D, H, W, 3) of (u, v, d) in augmented-image pixels and metres; curr2adj (B, N, 4, 4);
    intrinsics, post_rots (B, N, 3, 3); post_trans (B, N, 3); image_size (H_img, W_img) of the
    augmented image. Returns (B·N, D·H, W, 2) in [-1, 1] (x, y). ONNX export passes an adjugate
    ``inverse_3x3`` (ONNX has no matrix inverse).
    """
    b, n = curr2adj.shape[:2]
    d, h, w, _ = frustum.shape
    # Undo the image augmentation, back-project, move into the adjacent camera, project, re-augment.
    pts = frustum.to(post_trans.dtype).view(1, 1, d, h, w, 3) - post_trans.view(b, n, 1, 1, 1, 3)
    pts = inverse_3x3(post_rots).view(b, n, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1))
    pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :]), dim=-2)  # (u·d, v·d, d)
    combine = curr2adj[:, :, :3, :3].matmul(inverse_3x3(intrinsics))
    pts = combine.view(b, n, 1, 1, 1, 3, 3).matmul(pts) + curr2adj[:, :, :3, 3].view(b, n, 1, 1, 1, 3, 1)
    behind = pts[..., 2, 0] < 1e-3
    pts = intrinsics.view(b, n, 1, 1, 1, 3, 3).matmul(pts)
    uv = pts[..., :2, :] / pts[..., 2:3, :]
    uv = post_rots[..., :2, :2].view(b, n, 1, 1, 1, 2, 2).matmul(uv).squeeze(-1)
    uv = uv + post_trans[..., :2].view(b, n, 1, 1, 1, 2)
    img_h, img_w = image_size
    # Official quirk (DepthNet.calculate_cost_volumn): normalised by the *image* size (W-1, H-1) with
    # align_corners=True although the sampled map is the stride-4 feature; kept for parity.
    gx = uv[..., 0] / (img_w - 1.0) * 2.0 - 1.0
    gy = uv[..., 1] / (img_h - 1.0) * 2.0 - 1.0
    # Points behind the adjacent camera sample outside the map (zeros padding).
    gx = torch.where(behind, torch.full_like(gx, -2.0), gx)
    gy = torch.where(behind, torch.full_like(gy, -2.0), gy)
    return torch.stack((gx, gy), dim=-1).view(b * n, d * h, w, 2)


@torch.no_grad()
def stereo_cost_volume(prev: torch.Tensor, curr: torch.Tensor, grid: torch.Tensor, num_depth: int,
                       bias: float = 5.0, group_size: int = 4) -> torch.Tensor:
    """Depth probabilities (B·N, D, H, W) from matching ``curr`` against the warped ``prev``.

    prev, curr (B·N, C, H, W) stride-4 features of the adjacent and the current frame; grid from
    ``cost_volume_grid``. cost[d] = Σ_c |curr_c - warp(prev_c)[d]|; softmax over D of -cost.
    Channels are warped ``group_size`` at a time to bound memory ((B·N, group, D·H, W) per step).
    """
    bn, channels, h, w = curr.shape
    if channels % group_size:
        raise ValueError(f"stereo feature channels ({channels}) must be a multiple of group_size ({group_size})")
    # Summing |differences| over hundreds of channels loses the ranking of close depths in 16-bit
    # floats, so under AMP the matching runs in float32 (the official model trains in float32).
    prev, curr = prev.float(), curr.float()
    grid = grid.float()
    cost = curr.new_zeros(bn, num_depth, h, w)
    warped = None
    for start in range(0, channels, group_size):
        warped = F.grid_sample(prev[:, start:start + group_size], grid, align_corners=True, padding_mode="zeros")
        warped = warped.view(bn, group_size, num_depth, h, w)
        cost += (curr[:, start:start + group_size].unsqueeze(2) - warped).abs().sum(dim=1)
    if bias != 0 and warped is not None:
        # Official quirk (DepthNet.calculate_cost_volumn): the invalid mask is "channel 0 of the *last* group warps
        # to exactly 0", which also fires where that (post-ReLU) feature is legitimately 0.
        cost = cost + bias * (warped[:, 0] == 0).to(cost.dtype)
    return (-cost).softmax(dim=1)

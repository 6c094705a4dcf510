"""Export-friendly BEV pooling and camera geometry: the same maths as ``flashocc.ops.bev_pool`` and
``flashocc.geometry``, written with ONNX-exportable operators only.

Why not export ``bev_pool`` as is: its ``index_add_`` becomes ``ScatterND``/``ScatterElements`` with
add-reduction, which ONNX Runtime parallelises without atomics, so with more than one thread points of
the same cell race and the result is wrong and changes from run to run. Here the points are sorted by
cell, prefix-summed (``CumSum``), read at the end of each run of equal cells and differenced; every
cell is then written exactly once (``ScatterND`` with unique indices and no reduction), which is exact
and deterministic at any thread count. The prefix sum runs in float64 by default: in float32 its
rounding error grows with the running total (~1e5 for M0), swamping the small sums of far cells.
TensorRT has no float64, so its export uses float32 accumulation (``accumulate=torch.float32``).

``torch.linalg.inv`` has no ONNX operator, so the full graph inverts the 3x3 matrices by their
adjugate and the rigid 4x4 ego poses by transposition.
"""
from __future__ import annotations

import torch


def pool_sorted_runs(depth_flat: torch.Tensor, feat_rows: torch.Tensor, ranks_depth: torch.Tensor,
                     ranks_feat: torch.Tensor, ranks_bev: torch.Tensor, run_ends: torch.Tensor, num_cells: int,
                     accumulate: torch.dtype = torch.float64) -> torch.Tensor:
    """Sum pooling of points already sorted by output cell, with no scatter-add.

    depth_flat (P_all,), feat_rows (R, C); ranks_* (P,) with ``ranks_bev`` sorted; run_ends (K,) the
    index of the last point of every run of equal ``ranks_bev``. Returns (num_cells, C) float32.
    """
    points = depth_flat[ranks_depth].unsqueeze(1) * feat_rows[ranks_feat]  # (P, C)
    csum = points.to(accumulate).cumsum(0)
    at_ends = csum[run_ends]  # (K, C) prefix sums at the end of each run
    sums = torch.cat([at_ends[:1], at_ends[1:] - at_ends[:-1]], dim=0).to(feat_rows.dtype)
    out = feat_rows.new_zeros(num_cells, feat_rows.shape[1])
    # Each run is a distinct cell, so these indices are unique: a plain ScatterND, no reduction.
    return out.index_put((ranks_bev[run_ends],), sums)


def pool_precomputed(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
                     ranks_bev: torch.Tensor, interval_starts: torch.Tensor, interval_lengths: torch.Tensor,
                     out_cells: tuple[int, int, int], accumulate: torch.dtype = torch.float64) -> torch.Tensor:
    """``bev_pool`` from the official five index arrays (``BevPoolIndices`` layout, any int dtype).

    depth (B, N, D, fH, fW); feat (B, N, fH, fW, C); out_cells (Dz, Dy, Dx). Returns (B, C, Dz, Dy, Dx).
    """
    b, channels = depth.shape[0], feat.shape[-1]
    dz, dy, dx = out_cells
    run_ends = interval_starts.long() + interval_lengths.long() - 1
    out = pool_sorted_runs(depth.reshape(-1), feat.reshape(-1, channels), ranks_depth.long(), ranks_feat.long(),
                           ranks_bev.long(), run_ends, b * dz * dy * dx, accumulate)
    return out.view(b, dz, dy, dx, channels).permute(0, 4, 1, 2, 3)


def pool_in_graph(depth: torch.Tensor, feat: torch.Tensor, coords: torch.Tensor, lower: tuple[float, float, float],
                  interval: tuple[float, float, float], grid_size: tuple[int, int, int],
                  accumulate: torch.dtype = torch.float64) -> torch.Tensor:
    """``prepare_bev_pool`` + ``bev_pool`` with static shapes: points outside the grid go to one extra
    "dump" cell instead of being filtered out, so no boolean indexing is needed.

    depth (B, N, D, fH, fW); feat (B, N, fH, fW, C); coords (B, N, D, fH, fW, 3) ego metres;
    grid_size (Dx, Dy, Dz). Returns (B, C, Dz, Dy, Dx).
    """
    b, n, d, fh, fw, _ = coords.shape
    channels = feat.shape[-1]
    dx, dy, dz = grid_size
    num_cells = b * dz * dy * dx
    lower_t = torch.tensor(lower, dtype=coords.dtype)
    interval_t = torch.tensor(interval, dtype=coords.dtype)
    # Official quirk (FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/view_transformer.py,
    # LSSViewTransformer.voxel_pooling_prepare_v2): truncation toward zero (ONNX Cast float->int does the
    # same as .long()), so raw indices in (-1, 0) fold into cell 0; kept for logit parity.
    q = ((coords.reshape(b, -1, 3) - lower_t) / interval_t).long()  # (B, P_b, 3)
    qx, qy, qz = q[..., 0], q[..., 1], q[..., 2]
    kept = (qx >= 0) & (qx < dx) & (qy >= 0) & (qy < dy) & (qz >= 0) & (qz < dz)
    batch_idx = torch.arange(b).view(b, 1)
    cell = ((batch_idx * dz + qz) * dy + qy) * dx + qx
    cell = torch.where(kept, cell, torch.full_like(cell, num_cells)).reshape(-1)  # dump cell = num_cells
    cell_sorted, order = torch.sort(cell)
    # Point p = ((bn·D + d)·fH + h)·fW + w reads feature row bn·fH·fW + h·fW + w.
    pixels = fh * fw
    ranks_feat = (order // (d * pixels)) * pixels + order % pixels
    is_end = torch.cat([cell_sorted[1:] != cell_sorted[:-1], torch.ones(1, dtype=torch.bool)])
    run_ends = torch.nonzero(is_end).squeeze(1)
    out = pool_sorted_runs(depth.reshape(-1), feat.reshape(-1, channels), order, ranks_feat, cell_sorted, run_ends,
                           num_cells + 1, accumulate)
    return out[:num_cells].view(b, dz, dy, dx, channels).permute(0, 4, 1, 2, 3)


def exportable_pool(vt, mode: str, rest: tuple[torch.Tensor, ...], accumulate: torch.dtype):
    """The pooling ``vt.splat`` calls in an exported camera graph: ``full`` computes the ego coordinates
    from the calibration inputs ``rest`` in the graph, ``precomputed`` reads the five index arrays ``rest``."""
    dx, dy, dz = vt.grid_size
    if mode == "full":
        coords = ego_coords_exportable(vt.frustum, *rest)
        return lambda d, c: pool_in_graph(d, c, coords, vt.lower, vt.interval, vt.grid_size, accumulate)
    return lambda d, c: pool_precomputed(d, c, *rest, out_cells=(dz, dy, dx), accumulate=accumulate)


def inverse_3x3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 3, 3) matrices by the adjugate (the ONNX standard has no matrix inverse)."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    co = torch.stack([e * i - f * h, c * h - b * i, b * f - c * e,
                      f * g - d * i, a * i - c * g, c * d - a * f,
                      d * h - e * g, b * g - a * h, a * e - b * d], dim=-1)
    det = a * co[..., 0] + b * co[..., 3] + c * co[..., 6]
    return (co / det.unsqueeze(-1)).reshape(m.shape)


def inverse_rigid(t: torch.Tensor) -> torch.Tensor:
    """Inverse of (..., 4, 4) rigid transforms [R | t]: [Rᵀ | -Rᵀt]."""
    rot_t = t[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ t[..., :3, 3:4])
    top = torch.cat([rot_t, trans], dim=-1)
    return torch.cat([top, t[..., 3:4, :]], dim=-2)


def ego_coords_exportable(frustum: torch.Tensor, sensor2ego: torch.Tensor, ego2global: torch.Tensor,
                          intrinsics: torch.Tensor, post_rots: torch.Tensor, post_trans: torch.Tensor,
                          bda: torch.Tensor) -> torch.Tensor:
    """``sensor_to_key_ego`` + ``frustum_to_ego`` without ``linalg.inv`` (FlashOCC@4084861
    projects/mmdet3d_plugin/models/necks/view_transformer.py, LSSViewTransformer.get_ego_coor):
    (B, N, D, fH, fW, 3) metres in the BEV-augmented key-ego frame (view 0 = key ego,
    docs/official-behaviour.md#key-ego-frame)."""
    return lift_exportable(frustum, key_ego_exportable(sensor2ego, ego2global), intrinsics, post_rots, post_trans,
                           bda)


def key_ego_exportable(sensor2ego: torch.Tensor, ego2global: torch.Tensor) -> torch.Tensor:
    """``sensor_to_key_ego`` without ``linalg.inv``: (B, N, 4, 4) sensor -> view-0 ego
    (docs/official-behaviour.md#key-ego-frame)."""
    e2g = ego2global.double()
    return (inverse_rigid(e2g[:, 0:1]) @ e2g @ sensor2ego.double()).float()  # float64 product, as official


def lift_exportable(frustum: torch.Tensor, s2k: torch.Tensor, intrinsics: torch.Tensor, post_rots: torch.Tensor,
                    post_trans: torch.Tensor, bda: torch.Tensor) -> torch.Tensor:
    """``frustum_to_ego`` without ``linalg.inv``."""
    b, n = s2k.shape[:2]
    pts = frustum.view(1, 1, *frustum.shape) - post_trans.float().view(b, n, 1, 1, 1, 3)
    pts = inverse_3x3(post_rots.float()).view(b, n, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1))
    pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :]), dim=-2)  # (u·d, v·d, d)
    cam_to_ego = s2k[:, :, :3, :3].matmul(inverse_3x3(intrinsics.float()))
    pts = cam_to_ego.view(b, n, 1, 1, 1, 3, 3).matmul(pts).squeeze(-1)
    pts = pts + s2k[:, :, :3, 3].view(b, n, 1, 1, 1, 3)
    return bda.float().view(b, 1, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1)).squeeze(-1)

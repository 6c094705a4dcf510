"""The export-friendly pooling and geometry equal the model's own ops (pure PyTorch, no onnxruntime)."""
from __future__ import annotations

import pytest
import torch

from flashocc.deploy.pooling import (ego_coords_exportable, inverse_3x3, inverse_rigid, pool_in_graph,
                                     pool_precomputed)
from flashocc.geometry import make_transform, quaternion_to_rotation
from flashocc.ops.bev_pool import bev_pool


def _depth_feat(vt, b=1, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    fh, fw = vt.frustum.shape[1:3]
    depth = torch.rand(b, n, vt.num_depth, fh, fw, generator=g).softmax(2)
    feat = torch.randn(b, n, fh, fw, vt.out_channels, generator=g)
    return depth, feat


@pytest.mark.parametrize("source", ["synthetic", "fixture"])
def test_exportable_pooling_equals_bev_pool(tiny_model, synthetic_batch, fixture_batch, source):
    vt = tiny_model.img_view_transformer
    batch = synthetic_batch if source == "synthetic" else fixture_batch
    depth, feat = _depth_feat(vt)
    indices = vt.pool_indices(batch)
    expected = bev_pool(depth, feat, indices)
    dx, dy, dz = vt.grid_size
    pre = pool_precomputed(depth, feat, indices.ranks_depth.int(), indices.ranks_feat.int(), indices.ranks_bev.int(),
                           indices.interval_starts.int(), indices.interval_lengths.int(), (dz, dy, dx))
    full = pool_in_graph(depth, feat, vt.ego_coords(batch), vt.lower, vt.interval, vt.grid_size)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(pre, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)


def test_float32_prefix_sum_is_less_exact_than_float64(tiny_model, synthetic_batch):
    # Why the default accumulation is float64: the float32 prefix sum's error grows with the running total.
    vt = tiny_model.img_view_transformer
    depth, feat = _depth_feat(vt, seed=3)
    indices = vt.pool_indices(synthetic_batch)
    expected = bev_pool(depth.double(), feat.double(), indices)
    args = [getattr(indices, k).int() for k in ("ranks_depth", "ranks_feat", "ranks_bev", "interval_starts",
                                                "interval_lengths")]
    dx, dy, dz = vt.grid_size
    err64 = (pool_precomputed(depth, feat, *args, (dz, dy, dx)).double() - expected).abs().max()
    err32 = (pool_precomputed(depth, feat, *args, (dz, dy, dx), accumulate=torch.float32).double() - expected).abs().max()
    assert err64 < 1e-5
    assert err32 > err64


def test_batch_of_two_pools_each_sample_in_its_own_cells(tiny_model, synthetic_batch):
    vt = tiny_model.img_view_transformer
    batch = {k: torch.cat([v, v]) for k, v in synthetic_batch.items()}
    depth, feat = _depth_feat(vt, b=2)
    out = pool_in_graph(depth, feat, vt.ego_coords(batch), vt.lower, vt.interval, vt.grid_size)
    torch.testing.assert_close(out, bev_pool(depth, feat, vt.pool_indices(batch)), rtol=1e-5, atol=1e-5)


def test_matrix_inverses_match_linalg():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 6, 3, 3, generator=g) + 3 * torch.eye(3)
    torch.testing.assert_close(inverse_3x3(m), torch.linalg.inv(m), rtol=1e-4, atol=1e-5)
    pose = torch.from_numpy(make_transform(quaternion_to_rotation([0.9, 0.1, -0.3, 0.2]), [410.2, 1180.5, 0.3]))
    torch.testing.assert_close(inverse_rigid(pose), torch.linalg.inv(pose), rtol=1e-9, atol=1e-9)


def test_exportable_geometry_matches_model(tiny_model, fixture_batch):
    vt = tiny_model.img_view_transformer
    coords = ego_coords_exportable(vt.frustum, *(fixture_batch[k] for k in (
        "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda")))
    torch.testing.assert_close(coords, vt.ego_coords(fixture_batch), rtol=1e-5, atol=2e-5)

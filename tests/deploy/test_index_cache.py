"""Precomputed-mode indices: computed per calibration with the model's own code and cached by a hash
of the calibration (fixes the official reuse of the first sample's indices in FlashOCC@4084861
tools/convert_bevdet_to_TRT.py; docs/official-behaviour.md#tensorrt-path)."""
from __future__ import annotations

import math

import numpy as np
import torch

from flashocc.deploy.onnx import INDEX_KEYS, export_spec
from flashocc.deploy.runtime import PoolIndexCache, graph_feeds


def _rotated_camera(batch: dict, cam: int, degrees: float) -> dict:
    """A copy of ``batch`` whose camera ``cam`` is yawed by ``degrees`` (another vehicle's calibration)."""
    out = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    a = math.radians(degrees)
    yaw = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    out["sensor2ego"][0, cam, :3, :3] = yaw @ out["sensor2ego"][0, cam, :3, :3]
    return out


def test_indices_equal_the_model_indices(tiny_model, fixture_batch):
    cache = PoolIndexCache(export_spec(tiny_model, "precomputed", 1, torch.float64, 17))
    arrays = cache(fixture_batch)
    expected = tiny_model.img_view_transformer.pool_indices(fixture_batch)
    for key in INDEX_KEYS:
        assert arrays[key].dtype == np.int32
        np.testing.assert_array_equal(arrays[key], getattr(expected, key).numpy())


def test_cache_hits_same_calibration_and_recomputes_for_another(tiny_model, fixture_batch, synthetic_batch):
    cache = PoolIndexCache(export_spec(tiny_model, "precomputed", 1, torch.float64, 17), max_entries=2)
    first = cache(fixture_batch)
    again = cache(dict(fixture_batch, img=torch.zeros_like(fixture_batch["img"])))  # images don't matter
    assert (cache.hits, cache.misses) == (1, 1) and again is first
    moved = _rotated_camera(fixture_batch, cam=2, degrees=3.0)
    other = cache(moved)
    assert cache.misses == 2
    assert not np.array_equal(other["ranks_bev"], first["ranks_bev"])
    expected = tiny_model.img_view_transformer.pool_indices(moved)
    np.testing.assert_array_equal(other["ranks_bev"], expected.ranks_bev.numpy())
    cache(synthetic_batch)  # a third calibration evicts the least recently used one
    assert len(cache) == 2


def test_graph_feeds_split_a_batch_into_exported_chunks(tiny_model, synthetic_batch):
    spec = export_spec(tiny_model, "precomputed", 1, torch.float64, 17)
    batch = {k: torch.cat([v, v]) for k, v in synthetic_batch.items()}
    feeds = graph_feeds(spec, batch)
    assert len(feeds) == 2 and set(feeds[0]) == {"img", *INDEX_KEYS}
    assert feeds[0]["img"].shape == (1, 6, 3, *tiny_model.config.input_size)
    full = graph_feeds(export_spec(tiny_model, "full", 1, torch.float64, 17), synthetic_batch)
    assert set(full[0]) == {"img", "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda"}

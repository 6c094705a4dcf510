"""Merging metric totals across processes, and the ray-caster backend choice."""
import numpy as np
import pytest
import torch
import torch.distributed as dist

import flashocc.metrics.raycast as raycast
from flashocc.metrics import OccFScore, OccMIoU, RayIoU, RayPQ

from _metrics_helpers import LIDAR_ORIGIN, shifted


def test_all_reduce_on_a_single_rank_group_keeps_totals(tmp_path, occ3d):
    gt = occ3d["semantics"]
    m, r = OccMIoU(), RayIoU()
    m.update(shifted(gt, 0), gt, occ3d["mask_camera"])
    r.update(shifted(gt, 0), gt, LIDAR_ORIGIN)
    before = (m.compute(), r.compute())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        m.all_reduce()
        r.all_reduce()
    finally:
        dist.destroy_process_group()
    np.testing.assert_equal((m.compute(), r.compute()), before)


def test_state_is_int64_and_summing_states_equals_merge(occ3d):
    gt = occ3d["semantics"]
    a, b = RayIoU(), RayIoU()
    a.update(shifted(gt, 0), gt, LIDAR_ORIGIN)
    b.update(shifted(gt, 2), gt, LIDAR_ORIGIN)
    summed = {k: v + b.state()[k] for k, v in a.state().items()}   # what an all_reduce(SUM) produces
    assert all(v.dtype == torch.int64 for v in summed.values())
    c = RayIoU()
    c.load_state(summed)
    np.testing.assert_equal(c.compute(), a.merge(b).compute())


def test_merge_refuses_other_metrics():
    with pytest.raises(TypeError):
        OccMIoU().merge(RayIoU())
    with pytest.raises(TypeError):
        RayPQ().merge(OccFScore())
    with pytest.raises(KeyError, match="missing .pred_count."):
        RayIoU().load_state({"gt_count": torch.zeros(18, dtype=torch.int64)})


def test_backend_falls_back_to_torch_without_numba(monkeypatch):
    monkeypatch.setattr(raycast, "_NUMBA_OK", False)
    assert raycast.resolve_backend("auto") == "torch"
    with pytest.raises(ImportError, match="pip install numba"):
        raycast.resolve_backend("numba")
    assert RayIoU().caster.backend == "torch"

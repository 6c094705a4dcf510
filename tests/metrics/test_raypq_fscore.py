import numpy as np
import pytest

from flashocc.metrics import OccFScore, RayHits, RayPQ

from _metrics_helpers import EIGHT_ORIGINS, LIDAR_ORIGIN, needs_scipy, shifted


def _instances(gt: np.ndarray) -> np.ndarray:
    """Toy GT instances: car voxels split into 10 m slabs along x (one id per slab)."""
    inst = np.zeros(gt.shape, dtype=np.int32)
    x = np.arange(gt.shape[0])[:, None, None] * np.ones(gt.shape, dtype=np.int32)
    car = gt == 4
    inst[car] = 1 + x[car] // 25
    return inst


def test_raypq_identity_and_all_free(occ3d):
    gt = occ3d["semantics"]
    inst = _instances(gt)
    m = RayPQ()
    m.update(gt, gt, inst, inst, EIGHT_ORIGINS[:3])
    r = m.compute()
    assert [r[k] for k in ("RayPQ", "RayPQ@1", "RayPQ@2", "RayPQ@4")] == pytest.approx([1.0] * 4, abs=1e-9)
    m = RayPQ()
    m.update(np.full_like(gt, 17), gt, np.zeros_like(inst), inst, EIGHT_ORIGINS[:3])
    assert m.compute()["RayPQ"] == 0.0


def test_raypq_shifted_pinned_and_merge(occ3d):
    gt = occ3d["semantics"]
    inst = _instances(gt)
    pred, pred_inst = shifted(gt, 0), shifted(inst, 0)
    pred_inst[pred == 17] = 0
    whole, a, b = RayPQ(), RayPQ(), RayPQ()
    whole.update(pred, gt, pred_inst, inst, LIDAR_ORIGIN)
    whole.update(gt, gt, inst, inst, EIGHT_ORIGINS[1:3])
    a.update(pred, gt, pred_inst, inst, LIDAR_ORIGIN)
    b.update(gt, gt, inst, inst, EIGHT_ORIGINS[1:3])
    a.merge(b)
    np.testing.assert_equal(a.compute(), whole.compute())
    single = RayPQ()
    single.update(pred, gt, pred_inst, inst, LIDAR_ORIGIN)
    assert single.compute()["RayPQ"] == pytest.approx(PINNED_RAYPQ, abs=1e-6)


PINNED_RAYPQ = 0.7139958500467068     # pinned once from this implementation


def test_raypq_segment_matching_by_hand():
    """12 GT rays of car instance A and 12 of car B; the prediction calls them one car."""
    m = RayPQ(thresholds=(1.0,))
    car = 4
    n = 24
    hits = RayHits(gt_label=np.full(n, car), pred_label=np.full(n, car), gt_dist=np.zeros(n, np.float32),
                   pred_dist=np.zeros(n, np.float32), gt_index=np.zeros(n, np.int64), pred_index=np.zeros(n, np.int64))
    gt_inst = np.repeat([1, 2], 12)
    m.update_hits(hits, pred_inst=np.full(n, 7), gt_inst=gt_inst)
    # each GT car has IoU 12/24 = 0.5 with the prediction: not > 0.5, so no TP; 2 FN and 1 FP
    assert (m._totals["tp"][0, car], m._totals["fn"][0, car], m._totals["fp"][0, car]) == (0, 2, 1)
    assert m.compute()["RayPQ"] == 0.0
    # a stuff class (barrier) merges all its GT rays into one segment: IoU 1 with one predicted segment
    m = RayPQ(thresholds=(1.0,))
    hits.gt_label[:] = 1
    hits.pred_label[:] = 1
    m.update_hits(hits, pred_inst=np.full(n, 7), gt_inst=gt_inst)
    assert m.compute()["RayPQ"] == 1.0


@needs_scipy
def test_fscore(occ3d):
    gt, cam = occ3d["semantics"], occ3d["mask_camera"]
    before = gt.copy()
    f = OccFScore()
    f.update(gt, gt, cam)
    assert f.compute()["F-score"] == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_array_equal(gt, before)           # inputs untouched (the devkit writes 255 into them)
    f = OccFScore()
    f.update(np.full_like(gt, 17), gt, cam)
    assert f.compute() == {"F-score": 0.0, "accuracy": 0.0, "completeness": 0.0, "num_samples": 1}
    f = OccFScore()
    f.update(shifted(gt, 2), gt, cam)
    assert f.compute()["F-score"] == pytest.approx(0.8046084406743138, abs=1e-6)
    strict = OccFScore(threshold_acc=0.4, threshold_complete=0.4)
    strict.update(shifted(gt, 2), gt, cam)
    assert strict.compute()["F-score"] < f.compute()["F-score"]
    merged = OccFScore()
    merged.update(gt, gt, cam)
    merged.merge(f)
    assert merged.compute()["F-score"] == pytest.approx((1.0 + 0.8046084406743138) / 2, abs=1e-6)

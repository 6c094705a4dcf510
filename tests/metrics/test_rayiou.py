import numpy as np
import pytest

from flashocc.metrics import RayIoU

from _metrics_helpers import EIGHT_ORIGINS, LIDAR_ORIGIN, needs_numba, relabelled, shifted

KEYS = ("RayIoU", "RayIoU@1", "RayIoU@2", "RayIoU@4")


def _rayiou(pred, gt, origins, **kw):
    r = RayIoU(**kw)
    r.update(pred, gt, origins)
    return r.compute()


def test_gt_against_itself_is_1_and_all_free_is_0(occ3d):
    gt = occ3d["semantics"]
    same = _rayiou(gt, gt, EIGHT_ORIGINS)
    assert [same[k] for k in KEYS] == [1.0] * 4
    assert set(same["per_class"]) == set(RayIoU().grid.class_names[:-1])
    free = _rayiou(np.full_like(gt, 17), gt, EIGHT_ORIGINS)
    assert [free[k] for k in KEYS] == [0.0] * 4


# Pinned once from this implementation; the single-origin values agree to 4 decimals with the
# independent numpy check in docs/official-behaviour.md#independent-rayiou-check-on-the-fixture
# (0.7619 / 0.5258 / 0.8950).
PINNED = {
    ("shift_x", 1): (0.7618571865556344, 0.7452038994975905, 0.7656452155859249, 0.7747224445833879),
    ("shift_x", 8): (0.7313142351431917, 0.7126978304218782, 0.734375524347638, 0.7468693506600586),
    ("shift_z", 1): (0.5257590617842092, 0.47905576571999403, 0.5255159911100195, 0.5727054285226143),
    ("shift_z", 8): (0.5387548163461225, 0.4825771550145883, 0.53713041961805, 0.5965568744057297),
    ("relabel", 1): (0.8949579831932774,) * 4,
    ("relabel", 8): (0.8910010649627262, 0.8910010649627264, 0.8910010649627264, 0.8910010649627264),
}


@pytest.mark.parametrize("case, n_origins", sorted(PINNED))
def test_pinned_values(occ3d, case, n_origins):
    gt = occ3d["semantics"]
    pred = {"shift_x": shifted(gt, 0), "shift_z": shifted(gt, 2), "relabel": relabelled(gt)}[case]
    origins = LIDAR_ORIGIN if n_origins == 1 else EIGHT_ORIGINS
    r = _rayiou(pred, gt, origins)
    np.testing.assert_allclose([r[k] for k in KEYS], PINNED[case, n_origins], atol=1e-6)


@needs_numba
def test_torch_backend_gives_the_same_counts(occ3d):
    gt = occ3d["semantics"]
    a, b = RayIoU(backend="numba"), RayIoU(backend="torch")
    for m in (a, b):
        m.update(shifted(gt, 0), gt, LIDAR_ORIGIN)
    for k, v in a.state().items():
        assert (v == b.state()[k]).all()


def test_merge_of_two_halves_equals_whole(occ3d):
    gt = occ3d["semantics"]
    samples = [(shifted(gt, 0), gt, EIGHT_ORIGINS[:3]), (relabelled(gt), gt, EIGHT_ORIGINS[3:5]),
               (shifted(gt, 2), gt, LIDAR_ORIGIN)]
    whole, first, second = RayIoU(), RayIoU(), RayIoU()
    for s in samples:
        whole.update(*s)
    first.update(*samples[0])
    for s in samples[1:]:
        second.update(*s)
    first.merge(second)
    for k, v in whole.state().items():
        assert (first.state()[k] == v).all(), k
    np.testing.assert_equal(first.compute(), whole.compute())


def test_bad_inputs_raise(occ3d):
    gt = occ3d["semantics"]
    r = RayIoU()
    with pytest.raises(ValueError, match="not finite"):
        r.update(gt, gt, np.array([[0.9, np.nan, 1.8]]))
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        r.update(gt, gt, np.array([0.9, 0.0, 1.8]))
    with pytest.raises(ValueError, match="shape"):
        r.update(gt[:, :, :8], gt, LIDAR_ORIGIN)
    with pytest.raises(ValueError, match="dtype"):
        r.update(gt.astype(np.float64), gt, LIDAR_ORIGIN)
    ignore = gt.copy()
    ignore[0, 0, 0] = 255                       # would count as occupied in the official kernel
    with pytest.raises(ValueError, match="label 255"):
        r.update(gt, ignore, LIDAR_ORIGIN)
    with pytest.raises(ValueError, match="backend"):
        RayIoU(backend="cuda-kernel")
    assert r.compute()["num_samples"] == 0


def test_counting_rules_on_hand_made_rays():
    """Strict depth thresholds; wrong class = FP + FN; a predicted miss (free) only costs the GT class."""
    from flashocc.metrics import RayHits

    car, truck, free = 4, 10, 17
    gt_label = np.array([car, car, car, car])
    pred_label = np.array([car, car, truck, free])
    gt_dist = np.array([10.0, 10.0, 10.0, 10.0], np.float32)
    pred_dist = np.array([11.0, 10.5, 10.0, 30.0], np.float32)   # |error| 1.0 (not < 1), 0.5, 0, 20
    r = RayIoU()
    zeros = np.zeros(4, np.int64)
    r.update_hits(RayHits(gt_label, pred_label, gt_dist, pred_dist, zeros, zeros))
    out = r.compute()
    # car: GT 4 rays, predicted 2 rays; TP@1 = 1 (the 0.5 m ray), TP@2 = TP@4 = 2
    assert out["per_class"]["car"] == {"RayIoU@1": 1 / 5, "RayIoU@2": 2 / 4, "RayIoU@4": 2 / 4}
    assert out["per_class"]["truck"]["RayIoU@1"] == 0.0          # one FP, no GT
    assert np.isnan(out["per_class"]["bus"]["RayIoU@1"])         # no rays at all: skipped in the mean
    assert out["RayIoU@1"] == pytest.approx((1 / 5 + 0) / 2)

import numpy as np
import pytest
import torch

from flashocc.grid import OCC3D_NUSCENES
from flashocc.metrics import OccMIoU

from _metrics_helpers import relabelled, shifted


def _miou(pred, gt, mask):
    m = OccMIoU()
    m.update(pred, gt, mask)
    return m.compute()


def test_gt_against_itself_is_100(occ3d):
    gt = occ3d["semantics"]
    r = _miou(gt, gt, occ3d["mask_camera"])
    assert r["mIoU"] == 100.0
    present = set(np.unique(gt[occ3d["mask_camera"].astype(bool)]))
    for c, name in enumerate(OCC3D_NUSCENES.class_names[:-1]):
        assert np.isnan(r["per_class"][name]) == (c not in present)
    assert "free" not in r["per_class"]


def test_all_free_prediction_is_0(occ3d):
    gt = occ3d["semantics"]
    assert _miou(np.full_like(gt, 17), gt, occ3d["mask_camera"])["mIoU"] == 0.0


@pytest.mark.parametrize("mask_key, expected", [("mask_camera", 67.26117281068493),
                                               ("mask_lidar", 65.83937838744043), (None, 54.6299981223148)])
def test_shifted_prediction_pinned(occ3d, mask_key, expected):
    gt = occ3d["semantics"]
    mask = occ3d[mask_key] if mask_key else None
    assert _miou(shifted(gt, 0), gt, mask)["mIoU"] == pytest.approx(expected, abs=1e-6)


def test_relabelled_and_z_shift_pinned(occ3d):
    gt, cam = occ3d["semantics"], occ3d["mask_camera"]
    assert _miou(relabelled(gt), gt, cam)["mIoU"] == pytest.approx(89.30669800235019, abs=1e-6)
    assert _miou(shifted(gt, 2), gt, cam)["mIoU"] == pytest.approx(54.38544233462682, abs=1e-6)


def test_free_is_in_the_matrix_but_not_in_the_mean():
    # one voxel: GT car, predicted free -> car IoU 0 (a false negative for car), free never averaged
    gt = np.full(OCC3D_NUSCENES.shape, 17, np.uint8)
    pred = gt.copy()
    gt[0, 0, 0] = 4
    r = _miou(pred, gt, None)
    assert r["per_class"]["car"] == 0.0 and r["mIoU"] == 0.0


def test_merge_of_two_halves_equals_whole(occ3d):
    gt, cam = occ3d["semantics"], occ3d["mask_camera"]
    samples = [(shifted(gt, 0), gt, cam), (relabelled(gt), gt, cam), (shifted(gt, 2), gt, cam)]
    whole, first, second = OccMIoU(), OccMIoU(), OccMIoU()
    for s in samples:
        whole.update(*s)
    first.update(*samples[0])
    for s in samples[1:]:
        second.update(*s)
    first.merge(second)
    np.testing.assert_array_equal(first.confusion, whole.confusion)
    np.testing.assert_equal(first.compute(), whole.compute())
    # state() is a dict of int64 tensors that can be summed (as all_reduce would) and loaded back
    state = {k: v for k, v in whole.state().items()}
    assert state["confusion"].dtype == torch.int64
    fresh = OccMIoU()
    fresh.load_state(state)
    np.testing.assert_equal(fresh.compute(), whole.compute())


def test_batched_update_equals_per_sample(occ3d):
    gt, cam = occ3d["semantics"], occ3d["mask_camera"]
    a, b = OccMIoU(), OccMIoU()
    preds = np.stack([shifted(gt, 0), relabelled(gt)])
    a.update(preds, np.stack([gt, gt]), np.stack([cam, cam]))
    for p in preds:
        b.update(torch.from_numpy(p), gt, cam)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.compute()["num_samples"] == 2


def test_bad_inputs_raise(occ3d):
    gt, cam = occ3d["semantics"], occ3d["mask_camera"]
    m = OccMIoU()
    with pytest.raises(ValueError, match="shape"):
        m.update(gt[:100], gt, cam)
    with pytest.raises(ValueError, match="dtype"):
        m.update(gt.astype(np.float32), gt, cam)
    bad = gt.copy()
    bad[3, 4, 5] = 18
    with pytest.raises(ValueError, match=r"label 18 at \[3, 4, 5\]"):
        m.update(bad, gt, cam)
    with pytest.raises(ValueError, match="mask"):
        m.update(gt, gt, cam[:, :, :8])
    assert m.compute()["num_samples"] == 0

import math

import pytest
import torch
import torch.nn.functional as F

from flashocc.grid import OCC3D_CLASS_FREQUENCIES
from flashocc.models.losses import class_balance_weights, depth_bin_targets, downsample_gt_depth, occupancy_loss


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 3, 2, 18, generator=g)
    labels = torch.randint(0, 18, (2, 4, 3, 2), generator=g).to(torch.uint8)
    mask = (torch.rand(2, 4, 3, 2, generator=g) > 0.5).to(torch.uint8)
    return logits, labels, mask


def test_mean_over_visible_voxels_of_whole_batch():
    logits, labels, mask = _case()
    loss = occupancy_loss(logits, labels, mask)
    ce = F.cross_entropy(logits.reshape(-1, 18), labels.reshape(-1).long(), reduction="none")
    expected = ce[mask.reshape(-1).bool()].mean()
    torch.testing.assert_close(loss, expected)


def test_masked_voxels_do_not_matter():
    logits, labels, mask = _case(1)
    changed = logits.clone()
    changed[mask == 0] = torch.randn_like(changed[mask == 0]) * 100
    torch.testing.assert_close(occupancy_loss(logits, labels, mask), occupancy_loss(changed, labels, mask))
    logits.requires_grad_()
    occupancy_loss(logits, labels, mask).backward()
    assert torch.all(logits.grad[mask == 0] == 0)
    assert torch.any(logits.grad[mask == 1] != 0)


def test_ignore_label_and_no_mask():
    logits, labels, _ = _case(2)
    labels[0] = 255
    loss = occupancy_loss(logits, labels, None)
    ce = F.cross_entropy(logits.reshape(-1, 18), labels.reshape(-1).long(), reduction="none", ignore_index=255)
    torch.testing.assert_close(loss, ce.sum() / labels.numel())


def test_class_balance_normaliser():
    logits, labels, mask = _case(3)
    w = class_balance_weights(OCC3D_CLASS_FREQUENCIES)
    assert w[0] == pytest.approx(1 / math.log(944004 + 0.001))
    loss = occupancy_loss(logits, labels, mask, class_weights=w)
    flat_labels = labels.reshape(-1).long()
    ce = F.cross_entropy(logits.reshape(-1, 18), flat_labels, weight=w, reduction="none")
    visible = mask.reshape(-1).bool()
    torch.testing.assert_close(loss, ce[visible].sum() / w[flat_labels[visible]].sum())


def test_depth_targets_bins_and_patch_minimum():
    gt = torch.zeros(1, 1, 4, 4)
    gt[0, 0, 0, 0] = 3.2
    gt[0, 0, 1, 1] = 2.1  # nearest non-zero in the first 2x2 patch
    gt[0, 0, 3, 3] = 60.0  # out of range -> no target
    small = downsample_gt_depth(gt, 2)
    assert small.shape == (1, 2, 2)
    assert small[0, 0, 0] == pytest.approx(2.1) and small[0, 1, 0] == 0
    target = depth_bin_targets(small, 1.0, 45.0, 0.5, num_bins=88, sid=False)
    # bin k covers [1 + 0.5k, 1.5 + 0.5k): 2.1 m -> k = 2
    assert target[0, 0, 0].argmax() == 2 and target[0, 0, 0].sum() == 1
    assert target[0, 1, 1].sum() == 0 and target[0, 1, 0].sum() == 0

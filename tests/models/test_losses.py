import math

import pytest
import torch
import torch.nn.functional as F

from flashocc.grid import OCC3D_CLASS_FREQUENCIES
from flashocc.models.losses import (affinity_loss, class_balance_weights, depth_bin_targets, downsample_gt_depth,
                                   occupancy_loss)


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


def test_affinity_loss_hand_computed_and_masked():
    # Four counted voxels, classes {0: car, 17: free}; a fifth voxel outside the mask must not matter.
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.9, 0.1]])
    logits = torch.full((1, 5, 1, 1, 18), -1e4)
    logits[0, :, 0, 0, 0] = probs[:, 0].log()
    logits[0, :, 0, 0, 17] = probs[:, 1].log()
    labels = torch.tensor([0, 0, 17, 17, 17]).view(1, 5, 1, 1)
    mask = torch.tensor([1, 1, 1, 1, 0]).view(1, 5, 1, 1)

    def terms(p, t):  # -log precision - log recall - log specificity
        hit = (p * t).sum()
        return -(torch.log(hit / p.sum()) + torch.log(hit / t.sum())
                 + torch.log(((1 - p) * (1 - t)).sum() / (1 - t).sum()))

    car, free = probs[:4, 0], probs[:4, 1]
    is_car = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # Classes: mean over the two present classes; geometry: occupied (= 1 - p_free) against free.
    expected = (terms(car, is_car) + terms(free, 1 - is_car)) / 2 + terms(1 - free, is_car)
    torch.testing.assert_close(affinity_loss(logits, labels, mask, free_label=17), expected, rtol=1e-4, atol=1e-4)


def test_affinity_loss_penalises_a_smeared_class():
    labels = torch.full((1, 10, 1, 1), 17)
    labels[0, :2] = 0
    mask = torch.ones_like(labels)
    sharp = F.one_hot(labels, 18).float() * 10
    smeared = sharp.clone()
    smeared[0, 2:6, 0, 0, 0] = 12  # car predicted over four free voxels: recall 1, precision 1/3
    assert affinity_loss(sharp, labels, mask, 17) < 0.02
    assert affinity_loss(smeared, labels, mask, 17) > 1.0
    # Cross-entropy and the affinity terms agree on the direction; the affinity scores the class as a set.
    assert occupancy_loss(smeared, labels, mask) > occupancy_loss(sharp, labels, mask)


def test_model_adds_the_affinity_term_when_asked():
    import dataclasses

    from flashocc.models.presets import build_model, example_batch, get_config

    cfg = dataclasses.replace(get_config("flashocc-tiny"), affinity_loss_weight=0.5)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = example_batch(cfg)
    labels = torch.full((1, 200, 200, 16), 17, dtype=torch.uint8)
    labels[..., :2] = 11
    labels[110:115, 95:105, 2:6] = 4
    batch.update(voxel_semantics=labels, mask_camera=torch.ones_like(labels))
    losses = model(batch)
    assert set(losses) == {"loss_occ", "loss_affinity"}
    losses["loss_affinity"].backward()
    assert model.occ_head.predicter[-1].weight.grad.abs().sum() > 0
    assert build_model(get_config("flashocc-tiny")).criterion.affinity_loss_weight == 0  # off in every preset

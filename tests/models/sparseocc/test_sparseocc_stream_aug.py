"""SparseOcc online inference (content-keyed feature cache), the in-model photometric augmentation and the
decoder checkpointing switch, on a model small enough for a loaded 2-core box (3 frames of 2 cameras)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from flashocc.models.sparseocc import build_sparseocc, sparseocc_tiny
from flashocc.models.sparseocc.examples import example_batch
from flashocc.models.sparseocc.photometric import hsv_to_rgb, photometric_distortion, rgb_to_hsv
from flashocc.models.sparseocc.stream import SparseOccStream


def small_cfg(**changes):
    return replace(sparseocc_tiny(), input_size=(32, 64), num_frames=3, num_views=2, topk_training=(100, 400, 800),
                   topk_testing=(100, 200, 400), num_queries=6, sampling_seed=0, **changes)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sparseocc(small_cfg()).eval()


def test_stream_equals_the_batch_forward_and_costs_one_backbone_pass_per_new_frame(model, one_thread):
    cfg = model.cfg
    n = cfg.num_views
    stream = SparseOccStream(model)
    first = example_batch(cfg, seed=1)
    out = stream(first)
    with torch.no_grad():
        ref = model(first)
    assert stream.backbone_passes == cfg.num_frames
    assert torch.equal(out["semantics"], ref["semantics"]) and torch.equal(out["occ_loc"], ref["occ_loc"])
    # The next sample: a new keyframe, the old keyframe becomes t-1, the oldest frame leaves the window.
    new = example_batch(cfg, seed=2)["img"][:, :n]
    second = dict(first, img=torch.cat([new, first["img"][:, :-n]], dim=1))
    out2 = stream(second, return_intermediates=True)
    with torch.no_grad():
        ref2 = model(second, return_intermediates=True)
    assert stream.backbone_passes == cfg.num_frames + 1
    assert torch.equal(out2["semantics"], ref2["semantics"])
    assert torch.equal(out2["mask_preds"][-1], ref2["mask_preds"][-1])


def test_stream_never_returns_stale_features(model, one_thread):
    """Upstream keys by file name: the same 'names' with new pixels would reuse old features. Ours hashes
    the pixels, and drops the cache when the weights change."""
    cfg = model.cfg
    stream = SparseOccStream(model)
    a, b = example_batch(cfg, seed=3), example_batch(cfg, seed=4)
    stream(a)
    out_b = stream(b)
    with torch.no_grad():
        assert torch.equal(out_b["semantics"], model(b)["semantics"])
    assert stream.backbone_passes == 2 * cfg.num_frames
    passes = stream.backbone_passes
    stream(b)
    assert stream.backbone_passes == passes  # same pixels: all from the cache
    with torch.no_grad():
        model.img_neck.fpn_convs[0].conv.bias.add_(1.0)
        try:
            stream(b)
            assert stream.backbone_passes == passes + cfg.num_frames  # new weights: nothing reused
        finally:
            model.img_neck.fpn_convs[0].conv.bias.sub_(1.0)


def test_stream_refuses_training_mode_and_batches(model):
    stream = SparseOccStream(model)
    batch = example_batch(model.cfg, batch_size=2)
    with pytest.raises(ValueError, match="one sample"):
        stream(batch)
    model.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            stream(example_batch(model.cfg))
    finally:
        model.eval()
    with pytest.raises(ValueError, match="capacity"):
        SparseOccStream(model, capacity=1)


def _upstream_distortion(imgs, rng):
    """The official per-image loop (SparseOcc@af4d9df models/utils.py, GpuPhotoMetricDistortion.__call__)."""
    imgs = imgs[:, [2, 1, 0]].clone()
    modes = [rng.randint(2) for _ in range(imgs.shape[0])]
    for i in range(imgs.shape[0]):
        if rng.randint(2):
            imgs[i] += rng.uniform(-32, 32)
        if modes[i] == 0 and rng.randint(2):
            imgs[i] *= rng.uniform(0.5, 1.5)
    imgs = rgb_to_hsv(imgs)
    for i in range(imgs.shape[0]):
        if rng.randint(2):
            imgs[i, 1] *= rng.uniform(0.5, 1.5)
        if rng.randint(2):
            imgs[i, 0] += rng.uniform(-18, 18)
    imgs[:, 0][imgs[:, 0] > 360] -= 360
    imgs[:, 0][imgs[:, 0] < 0] += 360
    imgs = hsv_to_rgb(imgs)
    for i in range(imgs.shape[0]):
        if modes[i] == 1 and rng.randint(2):
            imgs[i] *= rng.uniform(0.5, 1.5)
        if rng.randint(2):
            imgs[i] = imgs[i, rng.permutation(3)]
    return imgs[:, [2, 1, 0]]


def test_photometric_distortion_matches_the_official_loop_and_draws():
    imgs = torch.rand(12, 3, 8, 10, generator=torch.Generator().manual_seed(0)) * 255
    ours = photometric_distortion(imgs, np.random.RandomState(5))
    ref = _upstream_distortion(imgs, np.random.RandomState(5))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-3)
    assert not torch.allclose(ours, imgs)
    # HSV round trip is the identity (the steps not taken change nothing).
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(imgs)), imgs, rtol=1e-5, atol=1e-3)


def test_color_aug_only_in_training_and_seeded(model, one_thread):
    img = example_batch(model.cfg, seed=5)["img"][:, :2]
    with torch.no_grad():
        model.eval()
        model.color_rng = np.random.RandomState(0)
        eval_feats = model.image_encoder(img)[0]
        plain = model.normalize(img[0])
        assert torch.equal(eval_feats[0], model.img_neck(model.img_backbone(plain))[0])  # eval: no augmentation
        model.train()
        try:
            feats = []
            for seed in (1, 1, 2):
                model.color_rng = np.random.RandomState(seed)
                feats.append(model.image_encoder(img)[0])
        finally:
            model.eval()
            model.color_rng = None
    assert torch.equal(feats[0], feats[1]) and not torch.allclose(feats[0], feats[2])
    assert not torch.allclose(feats[0], eval_feats)


def test_decoder_checkpointing_changes_neither_losses_nor_gradients(one_thread):
    results = []
    for cp in (True, False):
        torch.manual_seed(0)
        model = build_sparseocc(small_cfg(decoder_cp=cp, color_aug=False)).train()
        batch = example_batch(model.cfg, targets=True)
        torch.manual_seed(1)  # dropout draws
        losses = model(batch)
        sum(losses.values()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((losses, grads))
    (l_cp, g_cp), (l_no, g_no) = results
    assert set(l_cp) == set(l_no) and all(torch.equal(l_cp[k], l_no[k]) for k in l_cp)
    assert set(g_cp) == set(g_no)
    for k in g_cp:
        torch.testing.assert_close(g_cp[k], g_no[k], rtol=1e-5, atol=1e-6, msg=k)

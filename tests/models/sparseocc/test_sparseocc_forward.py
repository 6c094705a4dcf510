"""SparseOcc end to end on CPU at a small size: one training step, one eval forward, the intermediates,
the official torch.rand draws and the deterministic mode, the RGB normalisation, the frozen stem."""
from dataclasses import replace

import pytest
import torch

from flashocc.models.sparseocc import build_sparseocc, sparseocc_tiny
from flashocc.models.sparseocc.examples import example_batch
from flashocc.models.sparseocc.voxel_decoder import CHILD_AXES


def small_cfg(**changes):
    # sparseocc-tiny at 32x96 with fewer voxels and queries: the same 8 frames x 6 cameras.
    return replace(sparseocc_tiny(), input_size=(32, 96), topk_training=(200, 800, 1600),
                   topk_testing=(100, 400, 800), num_queries=8, **changes)


@pytest.fixture(scope="module")
def trained_step(one_thread):
    cfg = small_cfg()
    torch.manual_seed(0)
    model = build_sparseocc(cfg).train()
    batch = example_batch(cfg, targets=True)
    losses = model(batch)
    total = sum(losses.values())
    total.backward()
    return cfg, model, batch, losses


def test_training_step_gives_the_21_official_terms_and_gradients(trained_step):
    cfg, model, batch, losses = trained_step
    names = {f"{k}_{i}" for k in ("loss_sem_lovasz", "loss_geo_scal", "loss_sem_scal", "loss_sem_ce") for i in range(3)}
    names |= {f"{k}_{i}" for k in ("loss_mask", "loss_dice_mask", "loss_class") for i in range(3)}
    assert set(losses) == names
    assert all(torch.isfinite(v) for v in losses.values())
    vd = model.pts_bbox_head.transformer.voxel_decoder
    assert vd.seg_pred_heads[2].weight.grad.abs().sum() > 0
    assert model.img_backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.pts_bbox_head.transformer.decoder.query_feat.weight.grad.abs().sum() > 0
    # frozen_stages=1: stem and layer1 get no gradient and keep their BN statistics; norm_eval everywhere.
    assert model.img_backbone.conv1.weight.grad is None and model.img_backbone.layer1[0].conv1.weight.grad is None
    assert not any(m.training for m in model.img_backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_eval_outputs_and_intermediates(trained_step, one_thread):
    cfg, model, batch, _ = trained_step
    model.eval()
    with torch.no_grad():
        out = model(batch, return_intermediates=True, generator=torch.Generator().manual_seed(0))
    k = cfg.topk_testing[-1]
    assert out["occ_loc"].shape == (1, k, 3) and out["sem_pred"].shape == (1, k)
    dense = out["semantics"]
    assert dense.shape == (1, 200, 200, 16) and dense.dtype == torch.uint8
    # Everything not kept is free; kept voxels carry their merged label.
    kept = torch.zeros(200, 200, 16, dtype=torch.bool)
    loc = out["occ_loc"][0]
    kept[loc[:, 0], loc[:, 1], loc[:, 2]] = True
    assert torch.all(dense[0][~kept] == 17)
    assert torch.equal(dense[0][loc[:, 0], loc[:, 1], loc[:, 2]], out["sem_pred"][0].to(torch.uint8))
    levels = out["voxel_levels"]
    assert [lv.coords.shape[1] for lv in levels] == list(cfg.topk_testing)
    assert [lv.scale for lv in levels] == [4, 2, 1]
    for lv in levels:
        assert lv.logits.shape[-1] == 18
        res = torch.tensor([200, 200, 16]) // lv.scale
        assert torch.all(lv.coords >= 0) and torch.all(lv.coords < res)
        assert len(torch.unique(lv.coords[0], dim=0)) == lv.coords.shape[1]  # no voxel kept twice
    # Each level's voxels lie inside the previous level's kept cells.
    for coarse, fine in zip(levels, levels[1:]):
        parents = {tuple(c) for c in coarse.coords[0].tolist()}
        assert all(tuple(c) in parents for c in (fine.coords[0] // 2).tolist())
    assert len(out["mask_preds"]) == len(out["class_preds"]) == cfg.num_mask_layers + 1
    assert out["class_preds"][0].shape == (1, cfg.num_queries, 17)
    assert out["mask_preds"][-1].shape == (1, cfg.num_queries, k)


def test_children_order_is_the_official_one():
    # none, x, y, z, xy, xz, yz, xyz (upstream upsample, pos_list)
    assert CHILD_AXES == ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))


def test_mask_sampling_draws_the_official_shapes_and_the_deterministic_mode(trained_step, one_thread, monkeypatch):
    cfg, model, batch, _ = trained_step
    model.eval()
    shapes = []
    real_rand = torch.rand

    def recording_rand(*size, **kwargs):
        shapes.append(tuple(size[0]) if len(size) == 1 and isinstance(size[0], tuple) else size)
        return real_rand(*size, **kwargs)

    monkeypatch.setattr(torch, "rand", recording_rand)
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(batch)["semantics"]
        torch.manual_seed(5)
        b = model(batch)["semantics"]
    assert torch.equal(a, b)  # a seeded global generator reproduces the run, as upstream
    q, gp = cfg.num_queries, cfg.num_groups * cfg.num_points
    draws = shapes[: len(shapes) // 2]
    assert len(draws) == 2 * cfg.num_mask_layers
    for pick, empty in zip(draws[::2], draws[1::2]):
        assert pick == (q, gp) or pick == (q, gp, 3)  # (Q, G·P) picks; (Q, G·P, 3) only for an empty map
        if pick == (q, gp):
            assert len(empty) == 3 and empty[1:] == (gp, 3)
    monkeypatch.undo()
    # Deterministic mode: a seed in the config, independent of the global generator.
    det = build_sparseocc(replace(cfg, sampling_seed=3)).eval()
    det.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.manual_seed(1)
        x = det(batch, return_intermediates=True)
        torch.manual_seed(2)
        y = det(batch, return_intermediates=True)
    for mx, my in zip(x["mask_preds"], y["mask_preds"]):
        assert torch.equal(mx, my)
    assert torch.equal(x["semantics"], y["semantics"])


def test_images_are_normalised_in_rgb():
    cfg = small_cfg()
    model = build_sparseocc(cfg)
    bgr = torch.zeros(1, 3, 32, 96)
    bgr[:, 0] = 255.0  # pure blue in BGR
    out = model.normalize(bgr)
    mean, std = torch.tensor(cfg.img_mean), torch.tensor(cfg.img_std)
    expected = (torch.tensor([0.0, 0.0, 255.0]) - mean) / std  # RGB order: blue last
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    # Upstream pads to a multiple of 32 after normalising.
    assert model.normalize(torch.zeros(2, 3, 30, 90)).shape == (2, 3, 32, 96)


def test_batch_contract_errors():
    cfg = small_cfg()
    model = build_sparseocc(cfg)
    batch = example_batch(cfg)
    with pytest.raises(ValueError, match=r"T·N = 48"):
        model({**batch, "img": batch["img"][:, :6]})
    with pytest.raises(KeyError, match="lidar2img"):
        model({"img": batch["img"]})
    model.train()
    with pytest.raises(KeyError, match="voxel_semantics"):
        model(batch)

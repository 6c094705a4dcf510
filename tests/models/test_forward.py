from dataclasses import replace

import pytest
import torch

from flashocc.grid import OccGrid
from flashocc.models.presets import build_model, example_batch, get_config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("flashocc-tiny")
    return model


def _targets(batch_size=1, shape=(200, 200, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"voxel_semantics": torch.randint(0, 18, (batch_size, *shape), generator=g).to(torch.uint8),
            "mask_camera": (torch.rand(batch_size, *shape, generator=g) > 0.3).to(torch.uint8)}


def test_eval_returns_logits_and_predict_labels(tiny):
    tiny.eval()
    batch = example_batch(tiny.config)
    logits = tiny(batch)
    assert logits.shape == (1, 200, 200, 16, 18)
    labels = tiny.predict(batch)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 200, 200, 16)
    assert torch.equal(labels, logits.argmax(-1).to(torch.uint8))


def test_precomputed_indices_give_identical_logits(tiny):
    tiny.eval()
    batch = example_batch(tiny.config)
    indices = tiny.img_view_transformer.pool_indices(batch)
    assert indices.num_points > 0
    with torch.no_grad():
        torch.testing.assert_close(tiny(batch, indices=indices), tiny(batch), rtol=0, atol=0)


def test_train_mode_returns_named_losses_and_backprops(tiny):
    tiny.train()
    batch = {**example_batch(tiny.config), **_targets()}
    losses = tiny(batch)
    assert set(losses) == {"loss_occ"}
    assert torch.isfinite(losses["loss_occ"]) and losses["loss_occ"] > 0
    losses["loss_occ"].backward()
    assert tiny.img_backbone.conv1.weight.grad is not None
    assert tiny.occ_head.predicter[2].weight.grad.abs().sum() > 0
    tiny.zero_grad()


def test_train_mode_without_targets_names_them(tiny):
    tiny.train()
    with pytest.raises(ValueError, match="voxel_semantics"):
        tiny(example_batch(tiny.config))


def test_bad_batch_shapes_are_reported(tiny):
    tiny.eval()
    batch = example_batch(tiny.config)
    batch["intrinsics"] = batch["intrinsics"][:, :5]
    with pytest.raises(ValueError, match="intrinsics"):
        tiny(batch)
    del batch["bda"]
    with pytest.raises(KeyError, match="bda"):
        tiny(batch)


def test_depth_loss_when_configured():
    cfg = replace(get_config("flashocc-tiny"), depth_loss_weight=0.05)
    model = build_model(cfg).train()
    batch = {**example_batch(cfg), **_targets()}
    h, w = cfg.input_size
    batch["gt_depth"] = torch.zeros(1, 6, h, w)
    batch["gt_depth"][:, :, 64:, :] = 12.3
    losses = model(batch)
    assert set(losses) == {"loss_occ", "loss_depth"}
    assert torch.isfinite(losses["loss_depth"]) and losses["loss_depth"] > 0


def test_3d_baseline_forward_on_small_grid():
    # The full 3D baseline at 200x200x16 is too heavy for a unit test; the same parts on a 40x40x16 grid.
    small = OccGrid(lower=(-8.0, -8.0, -1.0), upper=(8.0, 8.0, 5.4))
    cfg = replace(get_config("bevdetocc-r50"), grid=small, backbone="resnet18", img_neck_channels=64,
                  input_size=(64, 176))
    model = build_model(cfg).train()
    batch = {**example_batch(cfg), **_targets(shape=small.shape)}
    losses = model(batch)
    losses["loss_occ"].backward()
    model.eval()
    assert model(example_batch(cfg)).shape == (1, 40, 40, 16, 18)

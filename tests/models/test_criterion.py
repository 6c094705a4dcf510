"""OccupancyCriterion owns the losses; the model gives it what it needs, computed once."""
from dataclasses import replace

import pytest
import torch

from flashocc.grid import OccGrid
from flashocc.models.builders import build_criterion
from flashocc.models.criterion import OccOutputs, OccupancyCriterion
from flashocc.models.examples import example_batch
from flashocc.models.presets import build_model, get_config

SMALL = OccGrid(lower=(-12.8, -12.8, -1.0), upper=(12.8, 12.8, 5.4))  # 64x64x16


def _aids_config():
    return replace(get_config("flashocc-tiny-demo"), grid=SMALL, affinity_loss_weight=0.5, input_size=(64, 176))


def _targets(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((1, *SMALL.shape), 17, dtype=torch.uint8)
    labels[..., :2] = 11
    labels[20:40, 30:34, 2:6] = 4
    return {"voxel_semantics": labels, "mask_camera": (torch.rand(1, *SMALL.shape, generator=g) > 0.2).to(torch.uint8)}


def test_the_depth_net_runs_once_per_training_step():
    torch.manual_seed(0)
    cfg = _aids_config()
    model = build_model(cfg).train()
    calls = []
    model.img_view_transformer.depth_net.register_forward_hook(lambda *_: calls.append(1))
    losses = model({**example_batch(cfg), **_targets()})
    assert list(losses) == ["loss_occ", "loss_affinity", "loss_depth", "loss_semantic"]
    assert len(calls) == 1  # the semantic loss reads the context the forward already computed
    sum(losses.values()).backward()
    assert model.img_view_transformer.depth_net.weight.grad.abs().sum() > 0


def test_model_outputs_feed_the_criterion():
    torch.manual_seed(0)
    cfg = _aids_config()
    model = build_model(cfg).train()
    batch = {**example_batch(cfg), **_targets()}
    torch.manual_seed(1)
    out = model.forward_outputs(batch)
    assert isinstance(out, OccOutputs)
    assert out.logits.shape == (1, *SMALL.shape, 18)
    assert out.depth.shape == (6, 44, 8, 22) and out.context.shape == (6, 16, 8, 22)
    assert out.semantic.shape == (6, 18, 8, 22)
    separate = build_criterion(cfg)(out, batch)
    torch.manual_seed(1)
    together = model(batch)
    assert separate.keys() == together.keys()
    for k in separate:
        torch.testing.assert_close(separate[k], together[k], rtol=0, atol=0)
    model.eval()
    assert model.forward_outputs(example_batch(cfg)).semantic is None  # inference skips the auxiliary head


def test_the_criterion_adds_no_state_and_names_missing_targets():
    model = build_model(replace(get_config("flashocc-tiny"), class_balance=True, depth_loss_weight=0.05))
    assert not any(k.startswith("criterion.") for k in model.state_dict())
    assert list(model.criterion.parameters()) == [] and model.criterion.class_weights is not None
    assert model.criterion.required_targets() == ("voxel_semantics", "mask_camera", "gt_depth")
    calls = []
    model.img_backbone.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"\['gt_depth'\]"):
        model.train()({**example_batch(model.config), **_targets()})
    assert not calls  # refused before the forward pass


def test_a_criterion_without_a_semantic_head_output_says_so():
    crit = OccupancyCriterion(SMALL, depth_bins=(1.0, 45.0, 1.0), downsample=8, input_size=(96, 256),
                              semantic_loss_weight=1.0)
    out = OccOutputs(torch.zeros(1, *SMALL.shape, 18), torch.zeros(6, 44, 12, 32), torch.zeros(6, 16, 12, 32),
                     None, example_batch(get_config("flashocc-tiny")))
    with pytest.raises(ValueError, match="semantic_head"):
        crit(out, _targets())
    with pytest.raises(ValueError, match="depth_target"):
        OccupancyCriterion(SMALL, depth_bins=(1.0, 45.0, 1.0), downsample=8, input_size=(96, 256), depth_target="x")

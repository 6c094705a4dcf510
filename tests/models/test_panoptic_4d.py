"""Panoptic-FlashOcc 4D (BEVDepth4DPano): parameter counts (no published count: ours, pinned), official
state-dict names, the [t, t-1] BEV concatenation on a 2-frame batch, the losses, a strict state-dict round trip."""
from dataclasses import replace

import pytest
import torch

from flashocc.errors import ConfigError
from flashocc.grid import OccGrid
from flashocc.models.configs import convert_family
from flashocc.models.examples import example_sequence
from flashocc.models.panoptic import BEVDepth4DPano, Panoptic4DConfig
from flashocc.models.presets import build_model, count_parameters, get_config

SMALL_GRID = OccGrid(lower=(-38.4, -38.4, -1.0), upper=(38.4, 38.4, 5.4), voxel_size=(2.4, 2.4, 0.4))  # 32x32x16
CAMS = 2

pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


def test_4d_counts_are_the_single_frame_model_plus_pre_process_and_wider_encoder_input():
    counts = {name: count_parameters(_meta(name)) for name in (
        "panoptic-flashocc-depth4d", "panoptic-flashocc-depth4d-pano", "panoptic-flashocc-depth4d-longterm8f",
        "panoptic-flashocc-depth4d-longterm8f-pano")}
    assert counts == {"panoptic-flashocc-depth4d": 58_237_422, "panoptic-flashocc-depth4d-pano": 58_618_498,
                      "panoptic-flashocc-depth4d-longterm8f": 59_850_222,
                      "panoptic-flashocc-depth4d-longterm8f-pano": 60_231_298}
    pano = _meta("panoptic-flashocc-depth4d-pano")
    pre = count_parameters(pano.pre_process_net)
    assert pre == 173_200  # BasicBlock 80->80 plus the official 3x3 "downsample" conv with bias
    # Each previous frame adds 80 input channels to both 3x3 convs (conv1, downsample) of the first block.
    per_frame = 2 * 80 * 160 * 9
    single = count_parameters(_meta("panoptic-flashocc-depth-pano"))
    assert counts["panoptic-flashocc-depth4d-pano"] == single + pre + per_frame
    assert counts["panoptic-flashocc-depth4d-longterm8f-pano"] == single + pre + 8 * per_frame
    assert count_parameters(_meta(replace(get_config("panoptic-flashocc-depth4d-longterm8f-pano"), num_adj=16))) == (
        single + pre + 16 * per_frame)  # the longterm16f config file


def test_4d_state_dict_names_and_frames():
    sd = _meta("panoptic-flashocc-depth4d-longterm8f-pano").state_dict()
    for key in ("pre_process_net.layers.0.0.conv1.weight", "pre_process_net.layers.0.0.downsample.weight",
                "img_view_transformer.depth_net.depth_mlp.fc1.weight", "aux_centerness_head.shared_conv.conv.weight",
                "occ_head.predicter.2.weight"):
        assert key in sd, key
    assert tuple(sd["img_bev_encoder_backbone.layers.0.0.conv1.weight"].shape) == (160, 9 * 80, 3, 3)
    assert not any(k.startswith("aux_") for k in _meta("panoptic-flashocc-depth4d").state_dict())
    assert get_config("panoptic-flashocc-depth4d-pano").data_requirements()["num_adjacent"] == 1
    assert get_config("panoptic-flashocc-depth4d-longterm8f").data_requirements()["num_adjacent"] == 8
    assert get_config("panoptic-flashocc-depth4d-longterm8f-pano").centre_score_threshold == 0.1  # official
    with pytest.raises(ConfigError, match="model.num_adj"):
        replace(get_config("panoptic-flashocc-depth4d"), num_adj=0)


def small_config() -> Panoptic4DConfig:
    tiny = get_config("panoptic-flashocc-tiny")
    return convert_family(tiny, Panoptic4DConfig, name="panoptic-4d-test", input_size=(64, 176), grid=SMALL_GRID,
                          depth_loss_weight=0.0, num_adj=1)


def _model(seed: int = 0) -> BEVDepth4DPano:
    torch.manual_seed(seed)
    m = build_model(small_config())
    m.num_cameras = CAMS
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():  # random BN statistics: the logits then depend visibly on the inputs
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return m


def _two_frames() -> tuple[dict, dict]:
    """(2-frame batch [t, t-1], the single-frame batch of t) of a synthetic drive, 2 cameras."""
    prev, curr = [{k: (v if k == "bda" else v[:, :CAMS]) for k, v in f.items()}
                  for f in example_sequence(small_config(), num_frames=2, seed=3)]
    two = {k: torch.cat([curr[k], prev[k]], dim=1) for k in ("img", "sensor2ego", "ego2global")}
    two.update({k: torch.cat([curr[k]] * 2, dim=1) for k in ("intrinsics", "post_rots", "post_trans")})
    two["bda"] = curr["bda"]
    return two, curr


def _bev_input(model, batch):
    seen = []
    handle = model.img_bev_encoder_backbone.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            logits = model(batch)
    finally:
        handle.remove()
    return logits, seen[-1]


def test_two_frame_forward_concatenates_current_then_previous():
    model = _model().eval()
    two, curr = _two_frames()
    logits, bev = _bev_input(model, two)
    assert logits.shape == (1, 32, 32, 16, 18)
    assert bev.shape == (1, 2 * 16, 32, 32)
    _, alone = _bev_input(model, curr)                    # T = 1: the previous frame falls back to t
    torch.testing.assert_close(bev[:, :16], alone[:, :16])  # [t, ...]: the current map first
    torch.testing.assert_close(alone[:, 16:], alone[:, :16])
    assert not torch.allclose(bev[:, 16:], bev[:, :16])   # t-1 is its own frame
    moved = {**two, "img": two["img"].clone()}
    moved["img"][:, CAMS:] = torch.randn_like(moved["img"][:, CAMS:])
    _, bev_moved = _bev_input(model, moved)
    torch.testing.assert_close(bev_moved[:, :16], bev[:, :16])
    assert not torch.allclose(bev_moved[:, 16:], bev[:, 16:])
    with pytest.raises(ValueError, match="T = 1..2"):
        model({**two, **{k: torch.cat([two[k], curr[k]], dim=1) for k in ("img", "sensor2ego", "ego2global",
                                                                            "intrinsics", "post_rots", "post_trans")}})


def test_two_frame_training_losses_and_gradients():
    model = _model().train()
    two, _ = _two_frames()
    sem = torch.full((1, 32, 32, 16), 17, dtype=torch.uint8)
    sem[:, :, :, 0] = 11
    inst = torch.zeros_like(sem)
    sem[0, 10:13, 20:22, 1:3], inst[0, 10:13, 20:22, 1:3] = 4, 5  # one car
    two.update(voxel_semantics=sem, voxel_instances=inst, mask_camera=torch.ones_like(sem),
               img=two["img"].requires_grad_())
    losses = model(two)
    assert {"loss_occ", "loss_voxel_lovasz", "task0.loss_heatmap", "task0.loss_xy"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.pre_process_net.layers[0][0].conv1.weight.grad.abs().sum() > 0
    # Official: only the key frame back-propagates; the previous frame runs without gradients.
    assert two["img"].grad[:, :CAMS].abs().sum() > 0 and two["img"].grad[:, CAMS:].abs().sum() == 0


def test_strict_state_dict_round_trip():
    model = _model(0).eval()
    other = _model(5).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    two, _ = _two_frames()
    with torch.no_grad():
        torch.testing.assert_close(other(two), model(two))
        labels, ids = other.predict_panoptic(two)
    assert labels.shape == ids.shape == (1, 32, 32, 16)

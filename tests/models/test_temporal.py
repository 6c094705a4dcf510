"""BEVStereo4D (M2): official names and count, batch layout, fallbacks, streaming == batch, losses."""
from dataclasses import replace

import pytest
import torch

from flashocc.grid import OccGrid
from flashocc.models.presets import build_model, count_parameters, get_config
from flashocc.models.examples import example_sequence, temporal_batch
from flashocc.models.temporal import FlashOccStereo4D, StereoStream

SMALL_GRID = OccGrid(lower=(-38.4, -38.4, -1.0), upper=(38.4, 38.4, 5.4), voxel_size=(2.4, 2.4, 0.4))  # 32x32x16
CAMS = 2  # two of the six rig cameras keep the CPU tests fast


def small_config():
    # R18 stereo model at 64x176 on a 32x32x16 grid; same code paths as M2.
    return replace(get_config("flashocc-tiny-m2"), input_size=(64, 176), grid=SMALL_GRID, img_neck_channels=64,
                   bev_channels=16, encoder_channels=(16, 32, 64), bev_neck_channels=32, head_channels=32,
                   aspp_channels=16)


def _cams(frame: dict) -> dict:
    return {k: (v if k == "bda" else v[:, :CAMS]) for k, v in frame.items()}


pytestmark = pytest.mark.usefixtures("one_thread")


def with_bev(model, fn, *args):
    """Run fn(*args) and also return the [prev, curr] BEV map entering the BEV encoder, which is far
    more sensitive to the inputs than the logits of a randomly initialised network."""
    seen = []
    handle = model.img_bev_encoder_backbone.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            out = fn(*args)
    finally:
        handle.remove()
    return out, seen[-1]


@pytest.fixture(scope="module")
def model() -> FlashOccStereo4D:
    torch.manual_seed(0)
    m = build_model(small_config())
    m.num_cameras = CAMS
    # Random BN statistics and affine terms so that logits depend visibly on the inputs.
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def sequence():
    return [_cams(f) for f in example_sequence(small_config(), num_frames=4, seed=3)]


def test_m2_parameter_count_and_official_names():
    with torch.device("meta"):
        m2 = build_model("flashocc-r50-m2")
    assert isinstance(m2, FlashOccStereo4D)
    assert count_parameters(m2) == 58_668_414  # derived from the official modules
    sd = m2.state_dict()
    prefixes = ("img_backbone.", "img_neck.", "img_view_transformer.", "pre_process_net.",
                "img_bev_encoder_backbone.", "img_bev_encoder_neck.", "occ_head.")
    assert all(k.startswith(prefixes) for k in sd)
    assert not any("frustum" in k for k in sd)
    dn = "img_view_transformer.depth_net."
    expected = {  # the official M2 checkpoint's keys
        "img_backbone.layer1.0.conv1.weight": (64, 64, 1, 1),
        "img_neck.lateral_convs.0.conv.weight": (256, 1024, 1, 1),
        dn + "reduce_conv.0.weight": (256, 256, 3, 3), dn + "reduce_conv.1.running_var": (256,),
        dn + "context_conv.weight": (80, 256, 1, 1), dn + "bn.weight": (27,), dn + "bn.num_batches_tracked": (),
        dn + "depth_mlp.fc1.weight": (256, 27), dn + "depth_mlp.fc2.weight": (256, 256),
        dn + "context_mlp.fc2.bias": (256,),
        dn + "depth_se.conv_reduce.weight": (256, 256, 1, 1), dn + "context_se.conv_expand.bias": (256,),
        dn + "cost_volumn_net.0.weight": (88, 88, 3, 3), dn + "cost_volumn_net.1.weight": (88,),
        dn + "cost_volumn_net.2.bias": (88,), dn + "cost_volumn_net.3.running_mean": (88,),
        dn + "depth_conv.0.conv1.weight": (256, 344, 3, 3), dn + "depth_conv.0.downsample.weight": (256, 344, 1, 1),
        dn + "depth_conv.0.downsample.bias": (256,), dn + "depth_conv.2.bn2.weight": (256,),
        dn + "depth_conv.3.aspp1.atrous_conv.weight": (96, 256, 1, 1),
        dn + "depth_conv.3.aspp4.atrous_conv.weight": (96, 256, 3, 3), dn + "depth_conv.3.aspp2.bn.weight": (96,),
        dn + "depth_conv.3.global_avg_pool.1.weight": (96, 256, 1, 1), dn + "depth_conv.3.global_avg_pool.2.bias": (96,),
        dn + "depth_conv.3.conv1.weight": (256, 480, 1, 1), dn + "depth_conv.3.bn1.weight": (256,),
        dn + "depth_conv.4.weight": (88, 256, 1, 1), dn + "depth_conv.4.bias": (88,),
        "pre_process_net.layers.0.0.conv1.weight": (80, 80, 3, 3),
        "pre_process_net.layers.0.0.downsample.weight": (80, 80, 3, 3),
        "pre_process_net.layers.0.0.downsample.bias": (80,),
        "img_bev_encoder_backbone.layers.0.0.conv1.weight": (160, 160, 3, 3),
        "img_bev_encoder_backbone.layers.2.0.conv1.weight": (640, 320, 3, 3),
        "img_bev_encoder_neck.conv.0.weight": (512, 800, 3, 3),
        "occ_head.predicter.2.weight": (288, 512),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("pre_process_net.layers.0.1") for k in sd)  # one block only
    assert m2.img_view_transformer.sid and m2.criterion.depth_loss_weight == 0.05


def test_m2_bins_are_sid():
    vt = build_model(small_config()).img_view_transformer
    d = vt.frustum[:, 0, 0, 2]
    assert d[0] == pytest.approx(1.0) and d[-1] == pytest.approx(44.0, rel=1e-5)  # 44^(i/(D-1)) for [1, 45, 1]
    ratios = d[1:] / d[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-4)  # log-uniform spacing
    assert torch.equal(vt.cv_frustum[:, 0, 0, 2], d) and vt.cv_frustum.shape[1:3] == (16, 44)


def test_batch_layout_is_checked(model, sequence):
    batch = temporal_batch(sequence, 2)
    bad = {**batch, "img": batch["img"][:, :CAMS * 3 - 1]}
    with pytest.raises(ValueError, match="img"):
        model(bad)
    bad = {k: (v if k == "bda" else torch.cat([v, v[:, :CAMS]], 1)) for k, v in batch.items()}  # T = 4
    with pytest.raises(ValueError, match="T = 1..3"):
        model(bad)


def test_first_frame_without_previous_equals_duplicated_fallback(model, sequence):
    alone, alone_bev = with_bev(model, model, sequence[0])  # T = 1: no previous frame
    duplicated, duplicated_bev = with_bev(model, model, temporal_batch(sequence, 0))  # T = 3: dataset's copies
    assert alone.shape == (1, 32, 32, 16, 18)
    torch.testing.assert_close(alone_bev, duplicated_bev, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, duplicated, rtol=0, atol=1e-6)
    # Without a previous frame both halves come from the current images: equal after pre_process_net.
    torch.testing.assert_close(alone_bev[:, :16], alone_bev[:, 16:], rtol=0, atol=1e-6)
    two = with_bev(model, model, temporal_batch(sequence, 1, scene_start=1))[1]  # frame 1 as a scene start
    torch.testing.assert_close(two, with_bev(model, model, sequence[1])[1], rtol=0, atol=1e-6)


def test_streaming_equals_batch_forward_frame_by_frame(model, sequence):
    stream = StereoStream(model)
    for k, frame in enumerate(sequence):
        batch_logits, batch_bev = with_bev(model, model, temporal_batch(sequence, k))
        stream_logits, stream_bev = with_bev(model, stream.step, frame)
        assert batch_bev.shape == (1, 32, 32, 32)  # [prev 16 ch, curr 16 ch]
        torch.testing.assert_close(stream_bev, batch_bev, rtol=0, atol=1e-7, msg=f"frame {k}")
        torch.testing.assert_close(stream_logits, batch_logits, rtol=0, atol=1e-7, msg=f"frame {k}")
    # The previous frames matter: frame 3 with history differs from frame 3 alone, in both halves.
    _, alone_bev = with_bev(model, model, sequence[3])
    assert (alone_bev[:, :16] - stream_bev[:, :16]).abs().max() > 1e-2
    # The current half changes only through the cost volume (weak in a random network, but far
    # above the streaming tolerance).
    assert (alone_bev[:, 16:] - stream_bev[:, 16:]).abs().max() > 1e-6


def test_streaming_restarts_at_scene_changes(model, sequence):
    stream = StereoStream(model)
    names = ["scene-a", "scene-a", "scene-b", "scene-b"]
    outs = [with_bev(model, stream.step, {**frame, "scene_names": [name]})[1] for frame, name in zip(sequence, names)]
    torch.testing.assert_close(outs[2], with_bev(model, model, sequence[2])[1], rtol=0, atol=1e-5)  # scene start
    torch.testing.assert_close(outs[3], with_bev(model, model, temporal_batch(sequence, 3, scene_start=2))[1],
                               rtol=0, atol=1e-5)
    stream.reset()
    torch.testing.assert_close(with_bev(model, stream.step, sequence[1])[1], with_bev(model, model, sequence[1])[1],
                               rtol=0, atol=1e-5)
    again = with_bev(model, stream.step, sequence[2], True)[1]
    torch.testing.assert_close(again, outs[2], rtol=0, atol=1e-5)


def test_streaming_refuses_train_mode(model, sequence):
    model.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            StereoStream(model).step(sequence[0])
    finally:
        model.eval()


def test_train_mode_returns_occ_and_depth_losses_and_backprops():
    torch.manual_seed(0)
    cfg = small_config()
    m = build_model(cfg).train()
    m.num_cameras = CAMS
    seq = [_cams(f) for f in example_sequence(cfg, num_frames=3, seed=5)]
    batch = temporal_batch(seq, 2)
    h, w = cfg.input_size
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(1, CAMS, h, w, generator=g) * 40 + 2
    batch.update(voxel_semantics=torch.randint(0, 18, (1, 32, 32, 16), generator=g).to(torch.uint8),
                 mask_camera=(torch.rand(1, 32, 32, 16, generator=g) > 0.3).to(torch.uint8),
                 gt_depth=torch.where(torch.rand(depth.shape, generator=g) > 0.8, depth, torch.zeros_like(depth)))
    losses = m(batch)
    assert set(losses) == {"loss_occ", "loss_depth"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    dn = m.img_view_transformer.depth_net
    assert dn.depth_conv[4].weight.grad.abs().sum() > 0 and dn.cost_volumn_net[0].weight.grad.abs().sum() > 0
    assert m.img_backbone.conv1.weight.grad.abs().sum() > 0
    assert m.pre_process_net.layers[0][0].conv1.weight.grad.abs().sum() > 0
    missing = {k: v for k, v in batch.items() if k != "gt_depth"}
    with pytest.raises(ValueError, match="gt_depth"):
        m(missing)


def test_stages_are_the_forward(model, sequence):
    # encode_images -> lift_to_bev -> bev_encoder -> occ_head (what `flashocc bench` times per stage) is
    # the real forward, previous frames and cost volumes included.
    batch = temporal_batch(sequence, 2)
    with torch.no_grad():
        encoded = model.encode_images(batch)
        lifted = model.lift_to_bev(encoded, batch)
        logits = model.occ_head(model.bev_encoder(lifted.bev))
        expected = model(batch)
    assert lifted.bev.shape == (1, 32, 32, 32) and lifted.depth.shape == (CAMS, 44, 4, 11)
    assert lifted.context.shape == (CAMS, 16, 4, 11)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="indices"):
        model(batch, indices=object())
    with pytest.raises(TypeError, match="lift_to_bev"):
        model.view_transform(encoded.curr.feats, batch)


def test_data_requirements():
    assert get_config("flashocc-r50-m2").data_requirements() == {
        "input_size": (256, 704), "num_adjacent": 2, "load_depth": True, "depth_range": (1.0, 45.0)}
    assert get_config("flashocc-r50-m1").data_requirements() == {"input_size": (256, 704), "num_adjacent": 0}
    occupancy_depth = replace(get_config("flashocc-tiny-m2"), depth_target="occupancy")
    assert "load_depth" not in occupancy_depth.data_requirements()  # its depth targets come from the voxels


def test_ray_target_aids_train_the_temporal_model_too():
    # The criterion reads the current frame's rays and context, whatever the family.
    torch.manual_seed(0)
    cfg = replace(small_config(), depth_target="occupancy", semantic_loss_weight=1.0, affinity_loss_weight=0.5)
    m = build_model(cfg).train()
    m.num_cameras = CAMS
    batch = temporal_batch([_cams(f) for f in example_sequence(cfg, num_frames=3, seed=5)], 2)
    labels = torch.full((1, 32, 32, 16), 17, dtype=torch.uint8)
    labels[..., :2] = 11
    batch.update(voxel_semantics=labels, mask_camera=torch.ones_like(labels))
    losses = m(batch)  # no gt_depth needed: the depth targets are the rays' first occupied voxels
    assert list(losses) == ["loss_occ", "loss_affinity", "loss_depth", "loss_semantic"]
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_depth"] > 0
    losses["loss_semantic"].backward()
    assert m.semantic_head.weight.grad.abs().sum() > 0

import pytest
import torch

from flashocc.models.presets import PRESETS, build_model, count_parameters, describe_presets, get_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts_are_exact(name):
    with torch.device("meta"):
        model = build_model(name)
    expected = PRESETS[name][1]
    if expected is not None:
        assert count_parameters(model) == expected


def test_m1_state_dict_names_and_shapes_follow_official():
    with torch.device("meta"):
        sd = build_model("flashocc-r50-m1").state_dict()
    assert len(sd) == 430  # the official M1 checkpoint's entries, BN buffers included
    prefixes = ["img_backbone.", "img_neck.", "img_view_transformer.", "img_bev_encoder_backbone.",
                "img_bev_encoder_neck.", "occ_head."]
    assert all(any(k.startswith(p) for p in prefixes) for k in sd)
    expected = {
        "img_backbone.conv1.weight": (64, 3, 7, 7),
        "img_backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
        "img_backbone.layer3.0.downsample.0.weight": (1024, 512, 1, 1),
        "img_backbone.layer3.0.downsample.1.running_var": (1024,),
        "img_neck.lateral_convs.0.conv.weight": (256, 1024, 1, 1),
        "img_neck.lateral_convs.1.conv.bias": (256,),
        "img_neck.fpn_convs.0.conv.weight": (256, 256, 3, 3),
        "img_view_transformer.depth_net.weight": (152, 256, 1, 1),
        "img_bev_encoder_backbone.layers.0.0.conv1.weight": (128, 64, 3, 3),
        "img_bev_encoder_backbone.layers.2.0.downsample.weight": (512, 256, 3, 3),
        "img_bev_encoder_backbone.layers.2.0.downsample.bias": (512,),
        "img_bev_encoder_backbone.layers.1.1.bn2.num_batches_tracked": (),
        "img_bev_encoder_neck.conv.0.weight": (512, 640, 3, 3),
        "img_bev_encoder_neck.conv.4.running_mean": (512,),
        "img_bev_encoder_neck.up2.1.weight": (256, 512, 3, 3),
        "img_bev_encoder_neck.up2.4.bias": (256,),
        "occ_head.final_conv.conv.weight": (256, 256, 3, 3),
        "occ_head.predicter.0.weight": (512, 256),
        "occ_head.predicter.2.weight": (288, 512),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("frustum" in k or "class_weights" in k for k in sd)


def test_m0_and_3d_baseline_shapes():
    with torch.device("meta"):
        m0 = build_model("flashocc-r50-m0").state_dict()
        b3 = build_model("bevdetocc-r50").state_dict()
    assert tuple(m0["img_view_transformer.depth_net.weight"].shape) == (108, 256, 1, 1)
    assert tuple(m0["occ_head.predicter.0.weight"].shape) == (256, 128)
    assert tuple(m0["img_bev_encoder_neck.up2.4.weight"].shape) == (128, 128, 1, 1)
    assert tuple(b3["img_view_transformer.depth_net.weight"].shape) == (120, 256, 1, 1)
    assert tuple(b3["img_bev_encoder_backbone.layers.0.0.conv1.conv.weight"].shape) == (32, 32, 3, 3, 3)
    assert tuple(b3["img_bev_encoder_backbone.layers.0.0.downsample.bn.weight"].shape) == (32,)
    assert tuple(b3["img_bev_encoder_neck.conv.conv.weight"].shape) == (32, 224, 1, 1, 1)
    assert tuple(b3["occ_head.predicter.2.weight"].shape) == (18, 64)


def test_unknown_preset_suggests_close_name():
    with pytest.raises(KeyError, match="did you mean 'flashocc-r50-m1'"):
        get_config("flashocc-r50-m")


def test_describe_presets_reports_counts_and_flops():
    rows = {r["name"]: r for r in describe_presets(with_flops=True)}
    assert rows["flashocc-r50-m1"]["params"] == 44_744_312
    # The official table counts multiply-adds (248.57 G for M1); we count 2 FLOPs per multiply-add.
    assert 480 < rows["flashocc-r50-m1"]["gflops"] < 510
    assert rows["flashocc-r50-m0"]["gflops"] < rows["flashocc-r50-m1"]["gflops"]
    assert rows["flashocc-tiny"]["gflops"] < rows["flashocc-r50-m0"]["gflops"] / 4


def test_explicit_class_weights_reach_the_criterion_and_conflicts_are_refused():
    from dataclasses import replace

    from flashocc.errors import ConfigError

    weights = tuple(float(i + 1) for i in range(18))
    model = build_model(replace(get_config("flashocc-tiny"), class_weights=weights))
    assert model.criterion.class_weights.tolist() == list(weights)
    assert "criterion.class_weights" not in model.state_dict()  # not a checkpoint entry
    with pytest.raises(ConfigError, match="model.class_balance"):  # both would mean one is ignored
        build_model(replace(get_config("flashocc-tiny"), class_weights=weights, class_balance=True))
    with pytest.raises(ConfigError, match="model.class_weights: expected 18 weights"):
        build_model(replace(get_config("flashocc-tiny"), class_weights=(1.0, 2.0, 3.0)))


def test_demo_preset_is_tiny_with_the_training_aids():
    tiny, demo = get_config("flashocc-tiny"), get_config("flashocc-tiny-demo")
    assert (demo.depth_loss_weight, demo.depth_target, demo.semantic_loss_weight) == (1.0, "occupancy", 1.0)
    with torch.device("meta"):
        extra = count_parameters(build_model(demo)) - count_parameters(build_model(tiny))
    assert extra == 16 * 18 + 18  # the semantic head only: same network at inference

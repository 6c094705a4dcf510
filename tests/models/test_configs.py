"""Per-family model configs: range checks, what a builder cannot honour, old config.yaml files,
messages for keys of another family, the demo preset and its recipe."""
from dataclasses import replace

import pytest
import torch
import yaml

from flashocc.config import default_run_config, load_run_config, run_config_from_dict
from flashocc.errors import ConfigError, UnknownConfigKeyError
from flashocc.grid import OccGrid
from flashocc.models.configs import CameraLSSConfig, ModelConfig, Stereo4DConfig, convert_family
from flashocc.models.family import is_family_config
from flashocc.models.presets import PRESETS, build_model, get_config
from flashocc.models.sparseocc import SparseOccConfig

# What save_run_config wrote for flashocc-tiny / flashocc-tiny-m2 before the per-family configs (one flat
# ModelConfig with temporal, backbone_depth and backbone: resnet).
OLD_TINY = {
    "name": "flashocc-tiny", "description": "ours: R18 (stride 8), 96x256, CPU-trainable; same 200x200x16 output",
    "backbone_depth": 18, "backbone_out_indices": [1, 2], "with_cp": False, "img_neck_channels": 64,
    "input_size": [96, 256], "downsample": 8, "depth_bins": [1.0, 45.0, 1.0], "bev_channels": 16,
    "encoder_channels": [16, 32, 64], "encoder_layers": [2, 2, 2], "encoder_strides": [2, 2, 2],
    "bev_neck_channels": 16, "head_channels": 16, "head_3d": False, "use_mask": True, "class_balance": False,
    "class_weights": [], "depth_loss_weight": 0.0, "depth_target": "lidar", "semantic_loss_weight": 0.0,
    "affinity_loss_weight": 0.0, "temporal": False, "backbone": "resnet", "img_neck": "custom_fpn", "sid": False,
    "aspp_channels": 96, "drop_path_rate": 0.0,
}
OLD_TINY_M2 = {**OLD_TINY, "name": "flashocc-tiny-m2", "description": "ours: R18, 128x352, 4D stereo (t, t-1, t-2)",
               "backbone_out_indices": [0, 2, 3], "img_neck_channels": 128, "input_size": [128, 352],
               "downsample": 16, "bev_channels": 32, "encoder_channels": [32, 64, 128], "bev_neck_channels": 64,
               "head_channels": 64, "depth_loss_weight": 0.05, "temporal": True, "sid": True}


def _state_shapes(cfg):
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}


# ---- families and dispatch ----------------------------------------------------------------------------
def test_presets_pick_their_family():
    families = {name: type(get_config(name)) for name in PRESETS}
    assert {n for n, f in families.items() if f is Stereo4DConfig} == {"flashocc-r50-m2", "flashocc-swinb-m3",
                                                                       "flashocc-tiny-m2"}
    # Lift-splat presets share ModelConfig; every family's config satisfies the tools' protocol.
    assert all(issubclass(f, ModelConfig) for n, f in families.items() if n.startswith(("flashocc-", "bevdetocc-")))
    assert {n for n, f in families.items() if f is SparseOccConfig} == {"sparseocc-r50", "sparseocc-r50-pano",
                                                                        "sparseocc-tiny"}
    assert all(is_family_config(get_config(n)) for n in PRESETS)
    assert not is_family_config(object())
    assert get_config("flashocc-tiny-m2").temporal and not get_config("flashocc-tiny").temporal
    with pytest.raises(ConfigError, match="CameraLSSConfig"):
        ModelConfig(name="x")  # the shared base is not a family


@pytest.mark.parametrize("field, value, message", [
    ("bev_channels", 0, "model.bev_channels: expected an integer > 0"),
    ("img_neck_channels", -4, "model.img_neck_channels"),
    ("depth_bins", (45.0, 1.0, 1.0), "model.depth_bins: expected .*start < stop"),
    ("depth_bins", (1.0, 45.0, 0.0), "step > 0"),
    ("encoder_channels", (16, 32), "three channel counts"),
    ("encoder_layers", (2, 0, 2), "model.encoder_layers"),
    ("input_size", (96,), "model.input_size"),
    ("backbone", "resnet99", "model.backbone: expected one of"),
    ("img_neck", "bifpn", "model.img_neck"),
    ("depth_target", "radar", "model.depth_target"),
    ("class_weights", (1.0, -2.0), "model.class_weights"),
    ("depth_loss_weight", float("nan"), "model.depth_loss_weight"),
    ("drop_path_rate", 1.5, "model.drop_path_rate"),
    ("backbone_out_indices", (2, 1), "ascending"),
    ("downsample", 12, "model.downsample"),
])
def test_out_of_range_values_are_refused_on_construction(field, value, message):
    with pytest.raises(ConfigError, match=message):
        replace(get_config("flashocc-tiny"), **{field: value})


@pytest.mark.parametrize("preset, changes, message", [
    ("flashocc-tiny", {"drop_path_rate": 0.1}, r"model.drop_path_rate: expected 0.0: stochastic depth is a Swin"),
    ("flashocc-tiny", {"downsample": 16}, r"model.downsample: expected 8, the stride of the image neck's output"),
    ("flashocc-r50-m1", {"img_neck": "fpn_lss", "backbone_out_indices": (1, 3), "downsample": 8},
     "two consecutive neck stages"),
    ("flashocc-tiny", {"input_size": (100, 256)}, r"model.input_size: expected \(H, W\) divisible by 8"),
    ("flashocc-tiny", {"encoder_strides": (1, 2, 2)}, r"model.encoder_strides: expected \(2, 2, 2\)"),
    ("bevdetocc-tiny", {"encoder_strides": (2, 2, 2)}, r"expected \(1, 2, 2\), the strides the 3D BEV neck"),
    ("flashocc-tiny", {"class_weights": (1.0,) * 5}, "model.class_weights: expected 18 weights"),
    ("flashocc-tiny", {"class_weights": (1.0,) * 18, "class_balance": True}, "model.class_balance"),
    ("flashocc-tiny", {"depth_target": "occupancy"}, "model.depth_target: expected 'lidar' while"),
    ("flashocc-tiny", {"sid": True, "depth_bins": (1.0, 2.0, 1.0)}, "model.depth_bins: expected at least 2 bins"),
    ("flashocc-tiny", {"grid": OccGrid(lower=(-10.0, -10.0, -1.0), upper=(10.0, 10.0, 5.4))},
     r"model.grid: expected BEV dimensions \(50, 50\) divisible by 8"),
    ("flashocc-tiny-m2", {"backbone_out_indices": (1, 2, 3), "downsample": 8}, "a first index of 0"),
    ("flashocc-tiny-m2", {"backbone_out_indices": (0, 1, 2), "downsample": 8}, "model.downsample: expected 16"),
])
def test_what_a_builder_cannot_honour_is_refused_naming_the_field(preset, changes, message):
    cfg = replace(get_config(preset), **changes)  # each value is fine on its own
    with pytest.raises(ConfigError, match=message):
        build_model(cfg)
    if "grid" not in changes:  # the grid is not a key=value field
        overrides = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in changes.items()]
        with pytest.raises(ConfigError, match=message):  # ...and when a run config is resolved
            load_run_config(preset, overrides)


def test_two_keys_that_change_together_work_in_either_order():
    # Overrides apply one at a time; consistency is checked once all of them are in.
    for order in (["model.backbone_out_indices=[2,3]", "model.downsample=16"],
                  ["model.downsample=16", "model.backbone_out_indices=[2,3]"]):
        cfg = load_run_config("flashocc-tiny", order)
        assert (cfg.model.backbone_out_indices, cfg.model.downsample) == ((2, 3), 16)


def test_keys_of_another_family_or_an_old_layout_are_explained():
    with pytest.raises(UnknownConfigKeyError, match="the preset chooses the model family.*flashocc-tiny-m2"):
        load_run_config("flashocc-tiny", ["model.temporal=True"])
    with pytest.raises(UnknownConfigKeyError, match=r"model.backbone=resnet18"):
        load_run_config("flashocc-tiny", ["model.backbone_depth=18"])
    with pytest.raises(UnknownConfigKeyError, match="belongs to the stereo-4d family; this preset is camera-lss"):
        load_run_config("flashocc-tiny", ["model.aspp_channels=32"])
    with pytest.raises(UnknownConfigKeyError, match="belongs to the camera-lss family"):
        load_run_config("flashocc-r50-m2", ["model.head_3d=True"])
    with pytest.raises(UnknownConfigKeyError, match="did you mean 'model.bev_channels'"):  # plain typos as before
        load_run_config("flashocc-tiny", ["model.bev_channel=8"])


def test_convert_family_keeps_the_shared_layers():
    twin = convert_family(get_config("flashocc-tiny-m2"), CameraLSSConfig, name="twin", backbone_out_indices=(2, 3))
    assert isinstance(twin, CameraLSSConfig) and twin.bev_channels == 32 and not twin.head_3d
    assert "img_view_transformer.depth_net.weight" in _state_shapes(twin)  # the plain 1x1 depth net


def test_data_follow_the_model_family():
    cfg = load_run_config("flashocc-tiny", ["data.num_adjacent=2"])
    assert cfg.data.num_adjacent == 0  # a single-frame model reads one frame whatever the data section says
    m2 = load_run_config("flashocc-tiny-m2")
    assert (m2.data.num_adjacent, m2.data.load_depth, m2.data.input_size) == (2, True, (128, 352))


# ---- config.yaml files of finished runs ---------------------------------------------------------------
@pytest.mark.parametrize("old, family", [(OLD_TINY, CameraLSSConfig), (OLD_TINY_M2, Stereo4DConfig)])
def test_old_run_configs_load_as_the_model_they_trained(tmp_path, old, family):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"preset": old["name"], "model": old, "train": {"lr": 0.002}}, sort_keys=False))
    for cfg in (load_run_config(str(path)), run_config_from_dict(yaml.safe_load(path.read_text()))):
        assert type(cfg.model) is family and cfg.model.backbone == "resnet18" and cfg.train.lr == 0.002
        assert cfg.model == get_config(old["name"])  # the same model as the preset: checkpoints load strictly


def test_old_single_frame_values_its_builder_ignored_load_as_trained(tmp_path, caplog):
    old = {**OLD_TINY, "sid": True, "aspp_channels": 32, "class_weights": [1.0] * 18, "class_balance": True,
           "depth_target": "occupancy"}
    cfg = run_config_from_dict({"preset": "flashocc-tiny", "model": old})
    assert (cfg.model.sid, cfg.model.class_balance, cfg.model.depth_target) == (False, False, "lidar")
    assert "model.sid=True was ignored" in caplog.text
    # A temporal run of the old layout with the 3D head was never buildable: the message says what to do.
    with pytest.raises(ConfigError, match="head_3d=True with temporal=True"):
        run_config_from_dict({"preset": "flashocc-tiny-m2", "model": {**OLD_TINY_M2, "head_3d": True}})


def test_an_old_single_frame_twin_of_a_temporal_preset_becomes_camera_lss():
    twin = {**OLD_TINY_M2, "temporal": False, "backbone_out_indices": [2, 3], "sid": False}
    cfg = run_config_from_dict({"preset": "flashocc-tiny-m2", "model": twin})
    assert type(cfg.model) is CameraLSSConfig and cfg.model.bev_channels == 32
    assert cfg.data.num_adjacent == 0


def test_new_run_configs_round_trip(tmp_path):
    from flashocc.config import config_to_dict, save_run_config

    cfg = load_run_config("flashocc-tiny-m2", ["model.aspp_channels=48", "train.lr=3e-4"])
    path = save_run_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(str(path)) == cfg == run_config_from_dict(yaml.safe_load(path.read_text()))
    assert "temporal" not in config_to_dict(cfg)["model"]


# ---- the demo preset and its recipe ------------------------------------------------------------------
def test_demo_preset_carries_the_demo_recipe():
    demo, tiny = default_run_config("flashocc-tiny-demo"), default_run_config("flashocc-tiny")
    assert (demo.train.lr, demo.train.batch_size, demo.train.schedule, demo.train.max_minutes) == (2e-3, 2, "cosine", 15.0)
    assert (demo.data.flip, demo.data.rot, demo.data.resize, demo.data.flip_dx_ratio) == (False, (0.0, 0.0), (0.0, 0.0), 0.0)
    assert (tiny.train.lr, tiny.data.flip) == (1e-4, True)  # other presets keep the official schedule
    # The recipe is an ordinary config: overrides change it, and the demo's own override order is kept.
    cfg = load_run_config("flashocc-tiny-demo", ["train.lr=1e-3", "train.max_minutes=30"])
    assert (cfg.train.lr, cfg.train.max_minutes, cfg.model.depth_target) == (1e-3, 30.0, "occupancy")


def test_demo_preset_is_listed_and_printable(capsys):
    from flashocc.cli import main

    assert main(["models", "--no-flops"]) == 0
    assert "flashocc-tiny-demo" in capsys.readouterr().out
    assert main(["train", "flashocc-tiny-demo", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["preset"] == "flashocc-tiny-demo" and printed["train"]["lr"] == 0.002
    assert printed["model"]["semantic_loss_weight"] == 1.0 and printed["data"]["flip"] is False


def test_swin_b_tiny_prints_and_builds():
    from flashocc.cli import main

    assert main(["train", "flashocc-tiny", "model.backbone=swin-b", "--print-config"]) == 0

"""EFFOcc: exact parameter counts, official names, both spconv weight layouts, forward/backward of every part."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from flashocc.engine.checkpoint import load_checkpoint
from flashocc.errors import ConfigError, DataError
from flashocc.grid import OccGrid
from flashocc.models.effocc import EFFOcc, EFFOccConfig, effocc_fusion_tiny
from flashocc.models.effocc.lidar import HeightBinnedEncoder, SparseEncoder
from flashocc.models.effocc.trunk import SECOND, SECONDFPN, ConvFuser2D
from flashocc.models.examples import example_batch
from flashocc.models.presets import PRESETS, build_model, count_parameters, get_config
from flashocc.ops.sparse_conv import SparseConv3d, SubMConv3d, sparse_weight_to_spconv2

SMALL = OccGrid(lower=(-3.2, -3.2, -1.0), upper=(3.2, 3.2, 5.4))  # 16 x 16 x 16 (sparse grid 41 x 128 x 128)


def _meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("effocc")])
def test_presets_build_with_the_official_counts(name):
    model = _meta(name)
    official = PRESETS[name][1]
    if official is not None:
        assert count_parameters(model) == official
    needs = get_config(name).data_requirements()
    assert needs["load_points"] is True
    assert needs.get("load_lidar_depth", False) == get_config(name).camera


def test_part_counts_and_official_names():
    model = _meta("effocc-fusion-r18")
    counts = {k: count_parameters(m) for k, m in model.named_children()}
    assert counts["pts_middle_encoder"] == 2_694_352
    assert counts["occ_fuser"] == 737_792 and counts["pts_backbone"] == 4_280_832
    assert counts["pts_neck"] == 295_936 and counts["occ_head"] == 1_459_232
    keys = set(model.state_dict())
    for key in ["pts_middle_encoder.conv_input.0.weight", "pts_middle_encoder.conv_input.1.running_mean",
                "pts_middle_encoder.encoder_layers.encoder_layer1.0.conv1.weight",
                "pts_middle_encoder.encoder_layers.encoder_layer1.2.0.weight",
                "pts_middle_encoder.encoder_layers.encoder_layer4.1.bn2.weight",
                "pts_middle_encoder.conv_out.0.weight", "occ_fuser.occ_enc.0.weight", "pts_backbone.blocks.1.15.weight",
                "pts_neck.deblocks.1.0.weight", "img_view_transformer.lidar_input_net.6.weight",
                "img_view_transformer.depth_net.6.weight", "occ_head.predicter.2.weight"]:
        assert key in keys, key
    assert model.state_dict()["img_view_transformer.depth_net.0.weight"].shape == (128, 192, 3, 3)
    assert model.state_dict()["pts_middle_encoder.conv_out.0.weight"].shape == (128, 128, 3, 1, 1)
    lidar = _meta("effocc-lidar")
    assert not any(k.startswith(("img_", "occ_fuser")) for k in lidar.state_dict())


def _small_sparse_cfg(camera: bool) -> EFFOccConfig:
    # The official sparse LiDAR branch on a small grid (the pure-torch rulebooks are slow on busy CPUs).
    base = dict(name="t", grid=SMALL, second_channels=(8, 16), second_layers=(1, 1), fpn_channels=(8, 8),
                head_channels=8, lidar_channels=16, max_voxels=(300, 400))
    if camera:
        base.update(backbone_out_indices=(1, 2), img_neck_channels=16, input_size=(64, 176),
                    depth_bins=(1.0, 45.0, 4.0), bev_channels=8, fuser_channels=16)
    else:
        base.update(camera=False)
    return EFFOccConfig(**base)


def _points(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([6.4, 6.4, 6.4]) + torch.tensor([-3.2, -3.2, -1.0])
    return torch.cat([xyz, torch.rand(n, 2, generator=g)], dim=1)


def _batch(cfg, b=1):
    batch = example_batch(cfg, b) if cfg.camera else {}
    batch["points"] = [_points(seed=i) for i in range(b)]
    if cfg.camera:
        h, w = cfg.input_size
        depth = torch.zeros(b, 6, h, w)
        depth[..., ::7, ::5] = 10.0
        batch["lidar_depth"] = depth
    dx, dy, dz = cfg.grid.shape
    batch["voxel_semantics"] = torch.randint(0, 18, (b, dx, dy, dz))
    batch["mask_camera"] = torch.ones(b, dx, dy, dz, dtype=torch.bool)
    return batch


@pytest.mark.parametrize("camera", [True, False])
def test_sparse_model_forward_backward_and_eval(camera):
    torch.manual_seed(0)
    cfg = _small_sparse_cfg(camera)
    model = build_model(cfg)
    batch = _batch(cfg, b=2)
    batch["points"] = [p[:100] for p in batch["points"]]  # the sparse backward is slow on busy CPUs
    losses = model.train()(batch)
    losses["loss_occ"].backward()
    assert torch.isfinite(losses["loss_occ"])
    assert model.pts_middle_encoder.conv_input[0].weight.grad.abs().sum() > 0
    if camera:
        assert model.img_view_transformer.lidar_input_net[0].weight.grad.abs().sum() > 0
    logits = model.eval()(batch)
    assert logits.shape == (2, 16, 16, 16, 18)


def test_height_compression_is_channel_major():
    enc = SparseEncoder(5, (41, 64, 64), 8).eval()
    coors = torch.tensor([[0, 3, 10, 20]], dtype=torch.int32)
    bev = enc(torch.ones(1, 5), coors, 1)
    assert bev.shape == (1, 8 * 2, 8, 8) and enc.out_z == 2
    # One voxel at (y, x) = (10, 20) reaches only BEV cells around (y / 8, x / 8) = (1.25, 2.5) (rows = y).
    active = (bev[0] != 0).any(dim=0).nonzero()
    assert len(active) > 0 and set(active[:, 0].tolist()) <= {0, 1, 2} and set(active[:, 1].tolist()) <= {1, 2, 3}
    # channel = c·Z + z: the dense (B, C, Z, Y, X) map viewed, not permuted.
    assert torch.equal(bev.view(1, 8, 2, 8, 8)[:, :, 1], bev[:, 1::2])


def _spconv1(w):
    return w.permute(2, 3, 4, 1, 0).contiguous()  # ours -> (kD, kH, kW, C_in, C_out)


@pytest.mark.parametrize("layout", ["ours", "spconv2", "spconv1"])
def test_official_state_dicts_load_strictly_in_each_sparse_layout(layout, tmp_path):
    torch.manual_seed(0)
    cfg = _small_sparse_cfg(camera=False)
    source = build_model(cfg).eval()
    state = source.state_dict()
    sparse_keys = [f"{n}.weight" for n, m in source.named_modules() if isinstance(m, (SubMConv3d, SparseConv3d))]
    assert len(sparse_keys) == 1 + 2 * 2 * 4 + 3 + 1
    convert = {"ours": lambda w: w, "spconv2": sparse_weight_to_spconv2, "spconv1": _spconv1}[layout]
    official = {k: convert(v) if k in sparse_keys else v for k, v in state.items()}
    if layout != "ours":
        assert official[sparse_keys[0]].shape != state[sparse_keys[0]].shape
    path = tmp_path / "effocc.pth"
    torch.save({"state_dict": official}, path)
    target = build_model(cfg).eval()
    report = load_checkpoint(target, path, strict=True)
    assert report.ok
    for key in sparse_keys:
        torch.testing.assert_close(target.state_dict()[key], state[key])
    batch = _batch(cfg)
    torch.testing.assert_close(target(batch), source(batch))


def test_trunk_shapes():
    fuser = ConvFuser2D((4, 6), 8)
    x = fuser(torch.randn(1, 4, 16, 16), torch.randn(1, 6, 16, 16))
    feats = SECOND(8, (8, 16), (1, 1), (1, 2))(x)
    assert [f.shape[-1] for f in feats] == [16, 8]
    assert SECONDFPN((8, 16), (4, 4), (1, 2))(feats).shape == (1, 8, 16, 16)


def test_height_encoder_bins_points_into_the_grid_voxels():
    enc = HeightBinnedEncoder((-6.4, -6.4, -1.0), (0.4, 0.4, 0.4), (32, 32, 16), 8, 16)
    pts = torch.tensor([[0.1, -6.3, -0.9, 0.5, 0.0], [0.1, -6.3, -0.9, 0.7, 0.0], [100.0, 0, 0, 1, 0]])
    raster = enc.rasterize([pts])
    assert raster.shape == (1, 48, 32, 32)
    # x cell 16, y cell 0, z cell 0: count 2 -> log(3); mean intensity 0.6 in channel 2·Dz + z.
    assert raster[0, 0, 0, 16] == pytest.approx(torch.log(torch.tensor(3.0)).item())
    assert raster[0, 32, 0, 16] == pytest.approx(0.6)
    assert raster[0, 0].sum() == pytest.approx(torch.log(torch.tensor(3.0)).item())  # the far point is dropped


def test_missing_lidar_inputs_are_named():
    cfg = effocc_fusion_tiny()
    model = build_model(cfg).eval()
    batch = _batch(cfg)
    with pytest.raises(DataError, match="lidar_depth"):
        model({k: v for k, v in batch.items() if k != "lidar_depth"})
    with pytest.raises(DataError, match="points"):
        model({k: v for k, v in batch.items() if k != "points"})


def test_config_refusals_name_the_field():
    with pytest.raises(ConfigError, match="model.voxel_size"):
        build_model(dataclasses.replace(get_config("effocc-lidar"), voxel_size=(0.1, 0.1, 0.16)))
    with pytest.raises(ConfigError, match="model.backbone"):
        build_model(dataclasses.replace(get_config("effocc-lidar"), backbone="resnet50"))
    with pytest.raises(ConfigError, match="model.max_points"):
        build_model(dataclasses.replace(get_config("effocc-lidar-tiny"), max_points=5))
    with pytest.raises(ConfigError, match="model.second_layers"):
        EFFOccConfig(name="x", second_layers=(1,))
    assert isinstance(build_model("effocc-lidar-tiny"), EFFOcc)


def test_export_refuses_the_sparse_presets_clearly(tmp_path):
    # The dense-encoder presets export (tests/deploy/test_effocc_export.py); sparse rulebooks are per frame.
    pytest.importorskip("onnx")
    from flashocc.deploy.onnx import export_onnx

    with pytest.raises(ConfigError, match="rulebooks"):
        export_onnx(build_model("effocc-lidar"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()

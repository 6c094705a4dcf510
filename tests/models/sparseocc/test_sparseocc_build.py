"""SparseOcc presets: exact parameter count per part, official state-dict names, config checks."""
from dataclasses import replace

import pytest
import torch

from flashocc.errors import ConfigError
from flashocc.models.sparseocc import SparseOccConfig, build_sparseocc, sparseocc_r50, sparseocc_r50_pano, sparseocc_tiny


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def r50():
    with torch.device("meta"):
        return build_sparseocc(sparseocc_r50())


def test_r50_parameter_count_per_part(r50):
    assert _count(r50) == 80_349_899
    vd = r50.pts_bbox_head.transformer.voxel_decoder
    per_level = [_count(vd.decoder_layers[i]) + _count(vd.lift_feat_heads[i]) + _count(vd.seg_pred_heads[i])
                 for i in range(3)]
    assert _count(r50.img_backbone) == 23_508_032
    assert _count(r50.img_neck) == 3_344_384
    assert per_level == [17_967_498, 10_600_786, 7_441_198]
    assert [_count(layer.mixing) for layer in vd.decoder_layers] == [16_810_240, 9_457_920, 6_571_264]
    assert _count(r50.pts_bbox_head.transformer.decoder) == 17_488_001
    with torch.device("meta"):
        assert _count(build_sparseocc(sparseocc_r50_pano())) == 80_349_899


def test_official_state_dict_names(r50):
    keys = set(r50.state_dict())
    vd = "pts_bbox_head.transformer.voxel_decoder."
    md = "pts_bbox_head.transformer.decoder."
    for key in ["img_backbone.layer4.2.bn3.running_var", "img_neck.lateral_convs.3.conv.weight",
                "img_neck.fpn_convs.0.conv.bias",
                vd + "decoder_layers.0.self_attn.attention.attn.in_proj_weight",
                vd + "decoder_layers.1.self_attn.gen_tau.bias", vd + "decoder_layers.0.norm1.weight",
                vd + "decoder_layers.2.sampling.sampling_offset.weight", vd + "decoder_layers.2.sampling.scale_weights.bias",
                vd + "decoder_layers.0.mixing.parameter_generator.weight", vd + "decoder_layers.0.mixing.out_proj.bias",
                vd + "decoder_layers.0.ffn.layers.0.0.weight", vd + "decoder_layers.0.ffn.layers.1.bias",
                vd + "decoder_layers.0.position_encoder.4.weight", vd + "lift_feat_heads.2.0.weight",
                vd + "seg_pred_heads.1.bias",
                md + "query_feat.weight", md + "query_pos.weight", md + "decoder_layer.self_attn.self_attn.in_proj_weight",
                md + "decoder_layer.sampling.offset.weight", md + "decoder_layer.sampling.scale_weights.weight",
                md + "decoder_layer.mixing.parameter_generator.bias", md + "decoder_layer.mask_proj.weight",
                md + "decoder_layer.classifier.weight", md + "decoder_layer.norm3.bias"]:
        assert key in keys, key
    # Level 2 has no self-attention; nothing outside the official prefixes (no criterion or cache state).
    assert not any(k.startswith(vd + "decoder_layers.2.self_attn") or k.startswith(vd + "decoder_layers.2.norm1")
                   for k in keys)
    assert {k.split(".")[0] for k in keys} == {"img_backbone", "img_neck", "pts_bbox_head"}


def test_state_dict_loads_strictly_into_a_fresh_model():
    cfg = sparseocc_tiny()
    torch.manual_seed(0)
    a = build_sparseocc(cfg)
    torch.manual_seed(1)
    b = build_sparseocc(cfg)
    b.load_state_dict(a.state_dict(), strict=True)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_official_initialisation():
    torch.manual_seed(0)
    model = build_sparseocc(sparseocc_tiny())
    vd = model.pts_bbox_head.transformer.voxel_decoder
    layer = vd.decoder_layers[0]
    assert torch.all(layer.sampling.sampling_offset.weight == 0)
    assert layer.sampling.sampling_offset.bias.abs().max() <= 0.5
    assert torch.all(layer.self_attn.gen_tau.weight == 0)
    assert 0 <= layer.self_attn.gen_tau.bias.min() and layer.self_attn.gen_tau.bias.max() <= 2
    assert torch.all(layer.mixing.parameter_generator.weight == 0)
    sampling = model.pts_bbox_head.transformer.decoder.decoder_layer.sampling
    assert torch.all(sampling.offset.weight == 0) and torch.all(sampling.offset.bias == 0)


@pytest.mark.parametrize("field, value", [
    ("embed_dims", 0), ("num_groups", 3), ("num_points", 3), ("input_size", (250, 704)),
    ("topk_testing", (2000, 8000)), ("topk_training", (20000, 16000, 64000)), ("backbone", "swin-t"),
    ("score_threshold", 1.5), ("loss_class_weight", -1.0), ("sampling_seed", 1.5), ("img_std", (1.0, 0.0, 1.0)),
])
def test_config_refuses_out_of_range_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}"):
        replace(sparseocc_r50(), **{field: value})


def test_config_is_frozen_and_reads_the_official_values():
    cfg = sparseocc_r50()
    assert isinstance(cfg, SparseOccConfig)
    assert (cfg.topk_training, cfg.topk_testing) == ((4000, 16000, 64000), (2000, 8000, 32000))
    assert cfg.num_frames * cfg.num_views == 48 and cfg.num_queries == 100 and cfg.num_mask_layers == 2
    with pytest.raises(Exception):
        cfg.embed_dims = 128  # type: ignore[misc]

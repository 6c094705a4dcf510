"""Swin backbone (M3): official key names and count, attention maths, patch-merging order, M3 wiring."""
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from flashocc.models.presets import build_model, count_parameters
from flashocc.models.swin import (SWIN_LAYOUTS, PatchMerging, ShiftWindowMSA, SwinLayout, SwinTransformer,
                                  WindowMSA, relative_position_index)
from flashocc.models.examples import example_sequence, temporal_batch
from flashocc.models.temporal import StereoStream

sys.path.insert(0, str(Path(__file__).parent))
from test_temporal import CAMS, _cams, small_config  # noqa: E402

TINY = SwinLayout(16, (2, 2, 2, 2), (1, 2, 2, 4), 4)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_m3_parameter_count_matches_readme():
    with torch.device("meta"):
        m3 = build_model("flashocc-swinb-m3")
    params = count_parameters(m3)
    assert params == 144_989_110
    assert round(params / 1e6, 2) == 144.99  # README: 144.99 M


def test_m3_state_dict_names_and_shapes():
    with torch.device("meta"):
        sd = build_model("flashocc-swinb-m3").state_dict()
    bb = "img_backbone."
    expected = {
        bb + "patch_embed.projection.weight": (128, 3, 4, 4), bb + "patch_embed.norm.weight": (128,),
        bb + "stages.0.blocks.0.norm1.weight": (128,),
        bb + "stages.0.blocks.1.attn.w_msa.relative_position_bias_table": (529, 4),
        bb + "stages.2.blocks.17.attn.w_msa.relative_position_bias_table": (529, 16),
        bb + "stages.3.blocks.1.attn.w_msa.relative_position_index": (144, 144),
        bb + "stages.2.blocks.0.attn.w_msa.qkv.weight": (1536, 512), bb + "stages.2.blocks.0.attn.w_msa.qkv.bias": (1536,),
        bb + "stages.3.blocks.0.attn.w_msa.proj.weight": (1024, 1024),
        bb + "stages.1.blocks.0.ffn.layers.0.0.weight": (1024, 256), bb + "stages.1.blocks.0.ffn.layers.1.weight": (256, 1024),
        bb + "stages.0.downsample.norm.weight": (512,), bb + "stages.0.downsample.reduction.weight": (256, 512),
        bb + "stages.2.downsample.reduction.weight": (1024, 2048),
        bb + "norm2.weight": (512,), bb + "norm3.bias": (1024,),
        "img_neck.conv.0.weight": (512, 1536, 3, 3), "img_neck.conv.4.running_var": (512,),
        "img_view_transformer.depth_net.reduce_conv.0.weight": (512, 512, 3, 3),
        "img_view_transformer.depth_net.depth_conv.0.conv1.weight": (512, 600, 3, 3),
        "img_view_transformer.depth_net.depth_conv.3.conv1.weight": (512, 480, 1, 1),
        "img_view_transformer.depth_net.context_conv.weight": (80, 512, 1, 1),
        "pre_process_net.layers.0.0.conv1.weight": (80, 80, 3, 3),
        "img_bev_encoder_neck.conv.0.weight": (512, 800, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert bb + "stages.3.downsample.norm.weight" not in sd  # the last stage does not merge
    assert not any(k.startswith((bb + "norm0", bb + "norm1", "img_neck.up2", bb + "head")) for k in sd)
    assert sum(1 for k in sd if k.endswith("relative_position_index")) == 24  # persistent, as officially


def test_relative_position_index_matches_official_construction():
    # The official table index: a "double step" sequence added to its transpose, then flipped.
    w = 5
    seq = (torch.arange(0, (2 * w - 1) * w, 2 * w - 1)[:, None] + torch.arange(w)[None, :]).reshape(1, -1)
    official = (seq + seq.T).flip(1)
    assert torch.equal(relative_position_index(w), official)


def test_window_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    msa = WindowMSA(8, 2, 3)
    torch.nn.init.normal_(msa.relative_position_bias_table)
    x = torch.randn(2 * 4, 9, 8)  # B=2, 4 windows of 3x3
    mask = torch.where(torch.rand(4, 9, 9) > 0.7, -100.0, 0.0)
    out = msa(x, mask, 4)
    q, k, v = msa.qkv(x).view(8, 9, 3, 2, 4).permute(2, 0, 3, 1, 4)
    bias = msa.relative_position_bias_table[msa.relative_position_index.view(-1)].view(9, 9, 2).permute(2, 0, 1)
    attn = (q * 4 ** -0.5) @ k.transpose(-2, -1) + bias + mask.repeat(2, 1, 1).unsqueeze(1)
    ref = msa.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(8, 9, 8))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_unshifted_single_window_is_global_attention_and_padding_is_cropped():
    torch.manual_seed(0)
    block = ShiftWindowMSA(8, 2, window=4, shift=0, drop_path=0.0)
    x = torch.randn(1, 3 * 4, 8)  # a 3x4 map padded to one 4x4 window
    out = block(x, (3, 4))
    assert out.shape == (1, 12, 8)
    padded = torch.nn.functional.pad(x.view(1, 3, 4, 8), (0, 0, 0, 0, 0, 1)).view(1, 16, 8)
    torch.testing.assert_close(out, block.w_msa(padded, None, 1)[:, :12])


def test_patch_merging_uses_unfold_channel_order():
    merge = PatchMerging(2)
    x = torch.arange(4 * 2, dtype=torch.float32).view(1, 2, 2, 2)  # (B, H, W, C)
    captured = []
    merge.norm.register_forward_pre_hook(lambda m, inp: captured.append(inp[0]))
    _, hw = merge(x.view(1, 4, 2), (2, 2))
    assert hw == (1, 1)
    expected = torch.tensor([x[0, kh, kw, c] for c in range(2) for kh in range(2) for kw in range(2)])
    torch.testing.assert_close(captured[0][0, 0], expected)  # channel = c·4 + kh·2 + kw


def test_backbone_outputs_and_stereo_feature_without_norm():
    torch.manual_seed(0)
    swin = SwinTransformer(TINY, out_indices=(2, 3), drop_path_rate=0.0).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        outs = swin(x)
        stereo = swin.stereo_features(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 10, 14), (2, 64, 3, 4), (2, 128, 2, 2)]
    torch.testing.assert_close(stereo, outs[0])
    assert swin.out_channels == (64, 128) and swin.stereo_channels == 16
    assert not hasattr(swin, "norm0")  # official: the stereo feature has no output norm


def test_swin_stereo_model_trains_and_streams(monkeypatch):
    monkeypatch.setitem(SWIN_LAYOUTS, "swin-test", TINY)
    cfg = replace(small_config(), backbone="swin-test", backbone_out_indices=(2, 3), img_neck="fpn_lss",
                  img_neck_channels=32, input_size=(64, 192), drop_path_rate=0.1)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.num_cameras = CAMS
    seq = [_cams(f) for f in example_sequence(cfg, num_frames=3, seed=1)]
    batch = temporal_batch(seq, 2)
    g = torch.Generator().manual_seed(0)
    batch.update(voxel_semantics=torch.randint(0, 18, (1, 32, 32, 16), generator=g), gt_depth=torch.zeros(1, CAMS, 64, 192),
                 mask_camera=torch.ones(1, 32, 32, 16, dtype=torch.uint8))
    losses = model.train()(batch)
    assert set(losses) == {"loss_occ", "loss_depth"} and losses["loss_depth"].item() == 0.0  # no LiDAR points
    losses["loss_occ"].backward()
    assert model.img_backbone.stages[0].blocks[0].attn.w_msa.relative_position_bias_table.grad.abs().sum() > 0
    model.eval()
    stream = StereoStream(model)
    for k, frame in enumerate(seq):
        with torch.no_grad():
            torch.testing.assert_close(stream.step(frame), model(temporal_batch(seq, k)), rtol=0, atol=1e-6)

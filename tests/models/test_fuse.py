"""Fused inference (flashocc/models/fuse.py): the same logits as the eager model with less work."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from flashocc.config import EvalConfig
from flashocc.deploy.bench import BenchReport, BenchRow, add_throughput, stage_gflop, throughput_lines
from flashocc.engine.evaluate import inference_model
from flashocc.errors import ConfigError
from flashocc.models.examples import example_model_batch
from flashocc.models.flops import count_gflops
from flashocc.models.fuse import FusedOcc, calibration_key, fold_batchnorm, fold_conv_bn, fuse_for_inference
from flashocc.models.presets import build_model, get_config


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]


def _random_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms (fresh ones are the identity: folding them proves
    nothing), scaled so activations keep their size through deep stacks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in _batchnorms(model):
            c = bn.num_features
            bn.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
            bn.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
            bn.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model.eval()


def _compare(model: nn.Module, batch: dict, fused: nn.Module | None = None) -> tuple[float, float]:
    """(max |logit difference| / max |logit|, argmax agreement) of eager against fused."""
    fused = fused if fused is not None else fuse_for_inference(model)
    with torch.no_grad():
        ref = model(batch)
    out = fused(batch)
    assert out.shape == ref.shape
    return float((out - ref).abs().max() / ref.abs().max()), float((out.argmax(-1) == ref.argmax(-1)).double().mean())


@pytest.mark.parametrize("conv_cls,bn_cls,shape", [(nn.Conv2d, nn.BatchNorm2d, (2, 4, 9, 7)),
                                                   (nn.Conv3d, nn.BatchNorm3d, (2, 4, 5, 6, 7))])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_conv_bn_equals_conv_then_bn(conv_cls, bn_cls, shape, bias):
    torch.manual_seed(0)
    conv, bn = conv_cls(4, 6, 3, padding=1, bias=bias), _random_stats(bn_cls(6))
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_unmatched_norms():
    # A BN after a conv with other channels, or a 1D BN, is not this conv's normalisation.
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 1), nn.BatchNorm1d(5),
                        nn.Linear(5, 5), nn.BatchNorm2d(5))
    assert fold_batchnorm(seq) == 1
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[3], nn.BatchNorm1d) and isinstance(seq[5], nn.BatchNorm2d)


@pytest.mark.parametrize("preset", ["flashocc-tiny", "bevdetocc-tiny"])
def test_fused_logits_equal_eager(preset):
    torch.manual_seed(0)
    model = _random_stats(build_model(preset))
    batch = example_model_batch(model.config)
    fused = fuse_for_inference(model)
    assert not _batchnorms(fused), "every BatchNorm of the 2D/3D paths is folded"
    assert _batchnorms(model), "the eager model is left unchanged"
    rel, agree = _compare(model, batch, fused)
    assert rel < 1e-4 and agree >= 0.9999
    assert fused.predict(batch).dtype == torch.uint8
    model.train()  # the eager model still trains
    assert not fused.training


def test_fused_temporal_logits_equal_eager():
    torch.manual_seed(0)
    model = _random_stats(build_model("flashocc-tiny-m2"))
    rel, agree = _compare(model, example_model_batch(model.config))
    assert rel < 1e-4 and agree >= 0.9999


def test_fused_bottleneck_resnet50_logits_equal_eager():
    # A mid-size model (8.9 M parameters): the R50 bottleneck stages of M0/M1 on flashocc-tiny's input and BEV.
    torch.manual_seed(0)
    cfg = replace(get_config("flashocc-tiny"), name="tiny-r50", backbone="resnet50")
    model = _random_stats(build_model(cfg))
    rel, agree = _compare(model, example_model_batch(model.config))
    assert rel < 1e-4 and agree >= 0.9999


def test_fused_m0_structure_on_meta():
    with torch.device("meta"):
        model = build_model("flashocc-r50-m0").eval()
    norms = len(_batchnorms(model))
    fused = fuse_for_inference(model)
    assert norms > 50 and not _batchnorms(fused)
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # BN weight + bias gone per norm; a bias added per conv that had none (every folded one).
    eager_params = sum(p.numel() for p in model.parameters())
    bn_params = sum(p.numel() for m in _batchnorms(model) for p in m.parameters())
    assert sum(p.numel() for p in fused.parameters()) == eager_params - bn_params // 2


def test_pool_indices_cached_per_calibration():
    torch.manual_seed(0)
    model = _random_stats(build_model("flashocc-tiny"))
    fused = fuse_for_inference(model)
    batch = example_model_batch(model.config)
    fused(batch)
    fused(dict(batch, img=torch.randn_like(batch["img"])))  # new images, same rig: reused
    assert (fused.misses, fused.hits) == (1, 1)
    other = dict(batch, post_trans=batch["post_trans"] + torch.tensor([3.0, -2.0, 0.0]))
    assert calibration_key(other) != calibration_key(batch)
    rel, agree = _compare(model, other, fused)  # another rig never reuses the first rig's indices
    assert fused.misses == 2 and rel < 1e-4 and agree >= 0.9999


def test_fused_refuses_training_and_refusing():
    fused = fuse_for_inference(build_model("flashocc-tiny"))
    with pytest.raises(RuntimeError, match="inference only"):
        fused.train()
    with pytest.raises(ValueError, match="already fused"):
        fuse_for_inference(fused)


def test_fused_compile_wraps_parts():
    # The "eager" backend exercises the wrapping without a C++ toolchain; inductor is the default.
    torch.manual_seed(0)
    model = _random_stats(build_model("flashocc-tiny"))
    fused = model.fuse(compile="eager")
    assert isinstance(fused, FusedOcc)
    assert type(fused.model.img_backbone).__name__ == "OptimizedModule"
    rel, agree = _compare(model, example_model_batch(model.config), fused)
    assert rel < 1e-4 and agree >= 0.9999


def test_eval_inference_field_validated_and_read():
    with pytest.raises(ConfigError, match="eval.inference"):
        EvalConfig(inference="fast")
    model = build_model("flashocc-tiny")
    assert inference_model(model, EvalConfig().inference) is model
    assert isinstance(inference_model(model, EvalConfig(inference="fused").inference), FusedOcc)


def test_stage_gflop_adds_up_to_model_flops():
    cfg = get_config("flashocc-r50-m0")
    gflop = stage_gflop(cfg, batch_size=2)
    assert sum(gflop.values()) == pytest.approx(2 * count_gflops(cfg), rel=1e-6)
    assert gflop["image_encoder"] > gflop["bev_encoder"] > gflop["head"] > gflop["view_transform"] > 0


def test_throughput_columns():
    row = add_throughput(BenchRow("torch", "fp32", stages_ms={"image_encoder": 500.0, "head": 250.0}, total_ms=1000.0,
                                  fps=1.0), {"image_encoder": 10.0, "view_transform": 0.0, "bev_encoder": 0.0,
                                             "head": 5.0}, peak=40.0)
    assert row.gflops_per_s == {"image_encoder": 20.0, "head": 20.0, "total": 15.0}
    assert row.peak_fraction["image_encoder"] == 0.5
    report = BenchReport("p", 1, "cpu", [row], stage_gflop={"image_encoder": 10.0, "head": 5.0}, peak_gflops_per_s=40.0)
    text = "\n".join(throughput_lines(report))
    assert "20.0 (50%)" in text and "40.0 GFLOP/s" in text

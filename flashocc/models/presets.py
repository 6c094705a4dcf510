"""Model presets: small functions returning frozen configs, one literal table, one builder.

| preset             | family     | official config                        | parameters        |
| flashocc-r50-m1    | camera-lss | flashocc-r50.py                        | 44,744,312        |
| flashocc-r50-m0    | camera-lss | flashocc-r50-M0.py                     | 39,938,892        |
| bevdetocc-r50      | camera-lss | bevdet-occ-r50.py                      | 29,021,482        |
| flashocc-tiny      | camera-lss | ours (CPU-trainable)                   |                   |
| flashocc-tiny-demo | camera-lss | ours: flashocc-tiny + the demo's aids  |                   |
| bevdetocc-tiny     | camera-lss | ours                                   |                   |
| flashocc-r50-m2    | stereo-4d  | flashocc-r50-4d-stereo.py              | 58,668,414        |
| flashocc-swinb-m3  | stereo-4d  | flashocc-stbase-4d-stereo-512x1408*.py | 144.99 M (README) |
| flashocc-tiny-m2   | stereo-4d  | ours (CPU-trainable, temporal stereo)  |                   |
| sparseocc-r50(-pano) | sparseocc | SparseOcc r50_nuimg_704x256_8f(_pano).py | 80,349,899      |
| sparseocc-tiny     | sparseocc  | ours (CPU-trainable)                   |                   |
Official configs are under FlashOCC@4084861 projects/configs/flashocc/. The config classes are in
configs.py, the builders in builders.py; a preset's training recipe (if it has its own) is in
``flashocc.config.RECIPES``.
"""
from __future__ import annotations

from dataclasses import asdict, replace

import torch
from torch import nn

from flashocc.errors import ConfigError
from flashocc.models.builders import BUILDERS, build_from_config
from flashocc.models.configs import CameraLSSConfig, ModelConfig, Stereo4DConfig
from flashocc.models.effocc import builder as effocc
from flashocc.models.family import FamilyConfig, is_family_config
from flashocc.models.sparseocc import builder as sparseocc
from flashocc.models.panoptic import builder as panoptic
from flashocc.models.examples import example_batch  # noqa: F401  (its former home; kept for callers)
from flashocc.models.flashocc import FlashOcc
from flashocc.models.flops import count_gflops, gflops_unavailable
from flashocc.models.pretrained import bundled_weights, load_bundled_weights, require_bundled_weights


def flashocc_r50_m1() -> CameraLSSConfig:
    return CameraLSSConfig(name="flashocc-r50-m1", description="FlashOcc M1: R50, 256x704, channel-to-height head")


def flashocc_r50_m0() -> CameraLSSConfig:
    # M0 = M1 with 1 m depth bins and a 128-channel BEV neck and head (official flashocc-r50-M0.py).
    return replace(flashocc_r50_m1(), name="flashocc-r50-m0", description="FlashOcc M0: R50, 1 m depth bins, 128-ch neck/head",
                   depth_bins=(1.0, 45.0, 1.0), bev_neck_channels=128, head_channels=128)


def bevdetocc_r50() -> CameraLSSConfig:
    # The 3D-conv baseline: 16 z cells of 0.4 m, 32 BEV channels, 3D encoder/neck/head (official bevdet-occ-r50.py).
    return replace(flashocc_r50_m1(), name="bevdetocc-r50", description="BEVDetOcc baseline: 3D-conv BEV encoder and head",
                   bev_channels=32, encoder_channels=(32, 64, 128), encoder_layers=(1, 2, 4), encoder_strides=(1, 2, 2),
                   bev_neck_channels=32, head_channels=32, head_3d=True)


def flashocc_tiny() -> CameraLSSConfig:
    # Ours, sized for training on 2 CPU cores: ResNet-18 up to layer3 with stride-8 features (layer2 +
    # layer3 into the FPN) at a 96x256 input, 1 m depth bins, a 16-channel BEV and a 16-channel
    # neck/head. Same 200x200x16 output on the same grid, so every tool treats it like the others.
    # Measured choices are in docs/benchmarks.md (flashocc demo).
    return CameraLSSConfig(name="flashocc-tiny", description="ours: R18 (stride 8), 96x256, CPU-trainable; same 200x200x16 output",
                           backbone="resnet18", backbone_out_indices=(1, 2), downsample=8, img_neck_channels=64,
                           input_size=(96, 256), depth_bins=(1.0, 45.0, 1.0), bev_channels=16,
                           encoder_channels=(16, 32, 64), bev_neck_channels=16, head_channels=16)


def flashocc_tiny_demo() -> CameraLSSConfig:
    # What `flashocc demo` trains: flashocc-tiny with dense image-side supervision read off the voxel
    # labels (the first occupied voxel on each ray gives the depth target and a per-pixel class), which
    # learns faster from little data (docs/benchmarks.md). Its training recipe (short cosine schedule,
    # no augmentation) is flashocc.config.RECIPES["flashocc-tiny-demo"]; the demo adds class weights
    # measured on its data (engine/demo.py, balanced_class_weights).
    return replace(flashocc_tiny(), name="flashocc-tiny-demo",
                   description="ours: flashocc-tiny + the demo's training aids (ray depth targets, pixel classes)",
                   depth_loss_weight=1.0, depth_target="occupancy", semantic_loss_weight=1.0)


def flashocc_r50_distill() -> CameraLSSConfig:
    # EFFOcc's camera student (EFFOcc@9544ca0 mmdet3d/models/detectors/distill_occ2d.py, DistillFlashBEVDetOCC):
    # FlashOcc-R50 (M1) whose FPN_LSS BEV neck gives 512 channels, the fusion teacher's, so that the
    # teacher's BEV feature is compared without an adapter and its head (512 -> 256 -> 16 x 18) can be
    # inherited. Train it with a teacher: flashocc train flashocc-r50-distill --teacher ... (docs/few-labels.md).
    return replace(flashocc_r50_m1(), name="flashocc-r50-distill",
                   description="EFFOcc distillation student: FlashOcc-R50 with a 512-ch BEV neck", bev_neck_channels=512)


def flashocc_tiny_distill() -> CameraLSSConfig:
    # Ours: flashocc-tiny-demo (same training aids, same recipe) as the student of effocc-fusion-tiny: its
    # BEV neck and head widths are the teacher's (64-ch fused BEV feature, 32-ch head), so the head can be
    # inherited (docs/few-labels.md).
    return replace(flashocc_tiny_demo(), name="flashocc-tiny-distill",
                   description="ours: flashocc-tiny-demo shaped as the student of effocc-fusion-tiny (64-ch BEV neck)",
                   bev_neck_channels=64, head_channels=32)


def flashocc_r50_m2() -> Stereo4DConfig:
    # BEVStereo4D (official flashocc-r50-4d-stereo.py): layer1 as the stride-4 stereo feature, SID bins,
    # 80 BEV channels, [prev, curr] concatenation (160 ch) into a 2x wider BEV encoder, depth loss 0.05.
    return Stereo4DConfig(name="flashocc-r50-m2", description="FlashOcc M2: R50, 4D stereo (t, t-1, t-2)",
                          backbone_out_indices=(0, 2, 3), sid=True, bev_channels=80,
                          encoder_channels=(160, 320, 640), depth_loss_weight=0.05)


def flashocc_swinb_m3() -> Stereo4DConfig:
    # flashocc-stbase-4d-stereo-512x1408: Swin-B (window 12) with an FPN_LSS image neck (1536 -> 512),
    # linear depth bins (sid=False), otherwise M2's temporal stereo layout.
    return replace(flashocc_r50_m2(), name="flashocc-swinb-m3", description="FlashOcc M3: Swin-B, 512x1408, 4D stereo",
                   backbone="swin-b", backbone_out_indices=(2, 3), img_neck="fpn_lss", img_neck_channels=512,
                   input_size=(512, 1408), sid=False, drop_path_rate=0.1)


def flashocc_tiny_m2() -> Stereo4DConfig:
    # Ours: M2's temporal stereo on a CPU-sized R18 at 128x352 (layer1 stereo feature, stride-16 image
    # features as the official cost-volume net expects, SID bins, depth loss 0.05), 32 BEV channels
    # per frame. Its single-frame twin (benchmarks/temporal_vs_single.py) is the same layers as a
    # CameraLSSConfig (configs.convert_family).
    return Stereo4DConfig(name="flashocc-tiny-m2", description="ours: R18, 128x352, 4D stereo (t, t-1, t-2)",
                          backbone="resnet18", backbone_out_indices=(0, 2, 3), img_neck_channels=128,
                          input_size=(128, 352), depth_bins=(1.0, 45.0, 1.0), bev_channels=32,
                          encoder_channels=(32, 64, 128), bev_neck_channels=64, head_channels=64, sid=True,
                          depth_loss_weight=0.05)


def bevdetocc_tiny() -> CameraLSSConfig:
    # Ours: flashocc-tiny's image side with the BEVDetOcc 3D encoder, neck and head (16 z cells), for the
    # paper's 2D-vs-3D comparison at CPU scale; 8 channels where the 3D baseline has 32.
    return replace(flashocc_tiny(), name="bevdetocc-tiny", description="ours: flashocc-tiny with the 3D-conv BEV encoder and head",
                   bev_channels=8, encoder_channels=(8, 16, 32), encoder_layers=(1, 2, 4), encoder_strides=(1, 2, 2),
                   bev_neck_channels=8, head_channels=8, head_3d=True)


# name -> (config function, exact parameter count of the official model, or None for ours)
PRESETS: dict[str, tuple] = {
    "flashocc-r50-m1": (flashocc_r50_m1, 44_744_312),
    "flashocc-r50-m0": (flashocc_r50_m0, 39_938_892),
    "bevdetocc-r50": (bevdetocc_r50, 29_021_482),
    "flashocc-tiny": (flashocc_tiny, None),
    "flashocc-tiny-demo": (flashocc_tiny_demo, None),
    "bevdetocc-tiny": (bevdetocc_tiny, None),
    "flashocc-r50-m2": (flashocc_r50_m2, 58_668_414),
    # No published count: M1's official 44_744_312 plus the wider neck and head of the official student
    # layout (FPN_LSS 640 -> 1024 -> 512, head conv 512 -> 256), counted layer by layer.
    "flashocc-r50-distill": (flashocc_r50_distill, 59_099_512),
    "flashocc-tiny-distill": (flashocc_tiny_distill, None),
    # The README gives 144.99 M only (no exact count); tests/models/test_swin.py checks the rounding.
    "flashocc-swinb-m3": (flashocc_swinb_m3, None),
    "flashocc-tiny-m2": (flashocc_tiny_m2, None),
    # EFFOcc (models/effocc/builder.py); r50 / swinb: no published count, ours counted from the official configs.
    "effocc-fusion-r18": (effocc.effocc_fusion_r18, 21_354_248),
    "effocc-lidar": (effocc.effocc_lidar, 8_730_352),
    "effocc-fusion-r50": (effocc.effocc_fusion_r50, None),
    "effocc-fusion-swinb": (effocc.effocc_fusion_swinb, None),
    "effocc-fusion-tiny": (effocc.effocc_fusion_tiny, None),
    "effocc-lidar-tiny": (effocc.effocc_lidar_tiny, None),
    # SparseOcc (models/sparseocc/builder.py); the panoptic config changes the GT segments and the merge only.
    "sparseocc-r50": (sparseocc.sparseocc_r50, 80_349_899),
    "sparseocc-r50-pano": (sparseocc.sparseocc_r50_pano, 80_349_899),
    "sparseocc-tiny": (sparseocc.sparseocc_tiny, None),
    # Panoptic-FlashOcc (models/panoptic/builder.py), counted from the official configs. The README's 45.32 M
    # (depth-tiny, also printed for depth-tiny-pano) is the count without the centre head; its 50.12 M
    # for depth / depth-pano is a numC_Trans=64 layout, not the configs' 80 (tests/models/test_panoptic_build.py).
    "panoptic-flashocc-depth-tiny": (panoptic.panoptic_flashocc_depth_tiny, 45_317_698),
    "panoptic-flashocc-depth-tiny-pano": (panoptic.panoptic_flashocc_depth_tiny_pano, 45_625_046),
    "panoptic-flashocc-depth": (panoptic.panoptic_flashocc_depth, 57_833_822),
    "panoptic-flashocc-depth-pano": (panoptic.panoptic_flashocc_depth_pano, 58_214_898),
    "panoptic-flashocc-tiny": (panoptic.panoptic_flashocc_tiny, None),
    # 4D (BEVDepth4DPano / BEVDepth4DOCC): no published parameter count; ours, counted from the official
    # depth4d configs (tests/models/test_panoptic_4d.py).
    "panoptic-flashocc-depth4d": (panoptic.panoptic_flashocc_depth4d, None),
    "panoptic-flashocc-depth4d-pano": (panoptic.panoptic_flashocc_depth4d_pano, None),
    "panoptic-flashocc-depth4d-longterm8f": (panoptic.panoptic_flashocc_depth4d_longterm8f, None),
    "panoptic-flashocc-depth4d-longterm8f-pano": (panoptic.panoptic_flashocc_depth4d_longterm8f_pano, None),
}


def get_config(name: str) -> FamilyConfig:
    if name not in PRESETS:
        import difflib

        # Closest name, ties broken by table order (get_close_matches would prefer the last, e.g. m2 over m1).
        scores = [(difflib.SequenceMatcher(None, name, p).ratio(), -i, p) for i, p in enumerate(PRESETS)]
        score, _, best = max(scores)
        hint = f"; did you mean '{best}'?" if score >= 0.6 else ""
        raise KeyError(f"unknown preset '{name}'{hint} Available: {', '.join(PRESETS)}")
    return PRESETS[name][0]()


def build_model(preset: str | FamilyConfig, pretrained: bool = False) -> nn.Module:
    """Build a model from a preset name or a config (weights randomly initialised). The config is
    checked first (``ModelConfig.check``): a field its family cannot honour is a ``ConfigError``.

    ``pretrained=True`` (a preset name only) loads the preset's bundled weights (models/pretrained.py)
    and returns the model in eval mode; a preset without them is a ``ConfigError``."""
    if pretrained and not isinstance(preset, str):
        raise ConfigError("build_model(pretrained=True) takes a preset name (bundled weights belong to a preset), "
                          f"got a {type(preset).__name__}")
    cfg = get_config(preset) if isinstance(preset, str) else preset
    if pretrained:
        require_bundled_weights(preset)  # before building: a preset without weights fails fast
    if not is_family_config(cfg):  # a ModelConfig or another family's config (models/family.py)
        raise ConfigError(f"build_model takes a preset name or a model config, got {type(cfg).__name__}")
    model = build_from_config(cfg)
    return load_bundled_weights(model, preset) if pretrained else model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_presets(with_flops: bool = True) -> list[dict]:
    """One row per preset: name, family, params, input_size, gflops, official parameter count, description,
    and ``bundled`` (whether it ships pretrained weights, models/pretrained.py)."""
    bundled = bundled_weights()
    rows = []
    for name, (make, official_params) in PRESETS.items():
        cfg = make()
        with torch.device("meta"):
            params = count_parameters(build_model(cfg))
        gflops = count_gflops(cfg) if with_flops else None
        rows.append({
            "name": name, "family": cfg.family, "params": params, "official_params": official_params,
            "input_size": list(cfg.input_size), "gflops": None if gflops is None else round(gflops, 2),
            # The official README's "FLOPs" (mmcv get_flops) count multiply-adds: gmacs compares to it.
            "gmacs": None if gflops is None else round(gflops / 2, 2),
            "gflops_note": gflops_unavailable(cfg) if with_flops else None,
            "description": cfg.description, "bundled": name in bundled, "config": _plain(asdict(cfg)),
        })
    return rows


def _plain(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k != "grid"}


__all__ = ["PRESETS", "ModelConfig", "CameraLSSConfig", "Stereo4DConfig", "get_config", "build_model",
           "count_parameters", "count_gflops", "describe_presets", "example_batch"]

"""Model presets: small functions returning frozen configs, one literal table, one builder.

| preset            | official config     | parameters |
| flashocc-r50-m1   | flashocc-r50.py     | 44,744,312 |
| flashocc-r50-m0   | flashocc-r50-M0.py  | 39,938,892 |
| bevdetocc-r50     | bevdet-occ-r50.py   | 29,021,482 |
| flashocc-tiny     | ours (CPU-trainable)|            |
| flashocc-r50-m2   | flashocc-r50-4d-stereo.py | 58,668,414 |
| flashocc-swinb-m3 | flashocc-stbase-4d-stereo-512x1408*.py | 144.99 M (README) |
| flashocc-tiny-m2  | ours (CPU-trainable, temporal stereo) | |
Temporal presets (``temporal=True``) build ``FlashOccStereo4D`` (flashocc/models/temporal.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from flashocc.grid import OCC3D_CLASS_FREQUENCIES, OCC3D_NUSCENES, OccGrid
from flashocc.models.bev_encoder import CustomResNet, CustomResNet3D
from flashocc.models.flashocc import FlashOcc
from flashocc.models.heads import BEVOCCHead2D, BEVOCCHead3D
from flashocc.models.losses import class_balance_weights
from flashocc.models.necks import FPN_LSS, LSSFPN3D, CustomFPN
from flashocc.models.resnet import ResNet
from flashocc.models.view_transformer import LSSViewTransformer


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model's shape. ``head_3d`` swaps the 2D BEV path and the
    channel-to-height head for the BEVDetOcc 3D encoder, neck and head."""

    name: str
    description: str = ""
    backbone_depth: int = 50
    backbone_out_indices: tuple[int, ...] = (2, 3)
    with_cp: bool = False                      # gradient checkpointing of the image backbone
    img_neck_channels: int = 256
    input_size: tuple[int, int] = (256, 704)   # (H, W) of the network input
    downsample: int = 16
    depth_bins: tuple[float, float, float] = (1.0, 45.0, 0.5)   # start, stop, step (metres)
    bev_channels: int = 64                     # numC_Trans
    encoder_channels: tuple[int, ...] = (128, 256, 512)
    encoder_layers: tuple[int, ...] = (2, 2, 2)
    encoder_strides: tuple[int, ...] = (2, 2, 2)
    bev_neck_channels: int = 256
    head_channels: int = 256
    head_3d: bool = False
    use_mask: bool = True
    class_balance: bool = False                # official 1/log(f) weights from the nuScenes frequencies
    class_weights: tuple[float, ...] = ()      # explicit per-class loss weights (override class_balance)
    depth_loss_weight: float = 0.0
    # Training aids, off in the official presets (flashocc/models/ray_targets.py): depth targets from the
    # first occupied voxel on each ray instead of LiDAR, and an auxiliary per-pixel class loss.
    depth_target: Literal["lidar", "occupancy"] = "lidar"
    semantic_loss_weight: float = 0.0
    affinity_loss_weight: float = 0.0          # per-class precision/recall/specificity terms (losses.affinity_loss)
    grid: OccGrid = field(default=OCC3D_NUSCENES)
    # Temporal stereo (BEVStereo4D, flashocc.md §1.3, §9); the defaults keep the single-frame models.
    temporal: bool = False                     # frames t, t-1 (BEV) and t-2 (stereo reference)
    backbone: str = "resnet"                   # "resnet" (backbone_depth) or a Swin layout ("swin-b")
    img_neck: str = "custom_fpn"               # "custom_fpn" or "fpn_lss" (Swin configs; no extra upsample)
    sid: bool = False                          # log-spaced (SID) depth bins
    aspp_channels: int = 96                    # DepthNet ASPP width (temporal models)
    drop_path_rate: float = 0.0                # Swin stochastic depth

    @property
    def num_depth_bins(self) -> int:
        start, stop, step = self.depth_bins
        return len(torch.arange(start, stop, step))


def flashocc_r50_m1() -> ModelConfig:
    return ModelConfig(name="flashocc-r50-m1", description="FlashOcc M1: R50, 256x704, channel-to-height head")


def flashocc_r50_m0() -> ModelConfig:
    # M0 = M1 with 1 m depth bins and a 128-channel BEV neck and head (flashocc.md §1.2).
    return replace(flashocc_r50_m1(), name="flashocc-r50-m0", description="FlashOcc M0: R50, 1 m depth bins, 128-ch neck/head",
                   depth_bins=(1.0, 45.0, 1.0), bev_neck_channels=128, head_channels=128)


def bevdetocc_r50() -> ModelConfig:
    # The 3D-conv baseline: 16 z cells of 0.4 m, 32 BEV channels, 3D encoder/neck/head (flashocc.md §1.4).
    return replace(flashocc_r50_m1(), name="bevdetocc-r50", description="BEVDetOcc baseline: 3D-conv BEV encoder and head",
                   bev_channels=32, encoder_channels=(32, 64, 128), encoder_layers=(1, 2, 4), encoder_strides=(1, 2, 2),
                   bev_neck_channels=32, head_channels=32, head_3d=True)


def flashocc_tiny() -> ModelConfig:
    # Ours, sized for training on 2 CPU cores (flashocc demo): ResNet-18 up to layer3 with stride-8
    # features (layer2 + layer3 into the FPN) at a 96x256 input, 1 m depth bins, a 16-channel BEV and
    # a 16-channel neck/head. Same 200x200x16 output on the same grid, so every tool treats it like the
    # others. Measured choices are in docs/benchmarks.md (flashocc demo).
    return ModelConfig(name="flashocc-tiny", description="ours: R18 (stride 8), 96x256, CPU-trainable; same 200x200x16 output",
                       backbone_depth=18, backbone_out_indices=(1, 2), downsample=8, img_neck_channels=64,
                       input_size=(96, 256), depth_bins=(1.0, 45.0, 1.0), bev_channels=16,
                       encoder_channels=(16, 32, 64), bev_neck_channels=16, head_channels=16)


def flashocc_r50_m2() -> ModelConfig:
    # BEVStereo4D (flashocc.md §1.3): layer1 as the stride-4 stereo feature, SID bins, 80 BEV channels,
    # [prev, curr] concatenation (160 ch) into a 2x wider BEV encoder, depth loss 0.05.
    return replace(flashocc_r50_m1(), name="flashocc-r50-m2", description="FlashOcc M2: R50, 4D stereo (t, t-1, t-2)",
                   temporal=True, backbone_out_indices=(0, 2, 3), sid=True, bev_channels=80,
                   encoder_channels=(160, 320, 640), depth_loss_weight=0.05)


def flashocc_swinb_m3() -> ModelConfig:
    # flashocc-stbase-4d-stereo-512x1408: Swin-B (window 12) with an FPN_LSS image neck (1536 -> 512),
    # linear depth bins (sid=False), otherwise M2's temporal stereo layout.
    return replace(flashocc_r50_m2(), name="flashocc-swinb-m3", description="FlashOcc M3: Swin-B, 512x1408, 4D stereo",
                   backbone="swin-b", backbone_out_indices=(2, 3), img_neck="fpn_lss", img_neck_channels=512,
                   input_size=(512, 1408), sid=False, drop_path_rate=0.1)


def flashocc_tiny_m2() -> ModelConfig:
    # Ours: M2's temporal stereo on a CPU-sized R18 at 128x352 (layer1 stereo feature, stride-16 image
    # features as the official cost-volume net expects, SID bins, depth loss 0.05), 32 BEV channels
    # per frame. Its single-frame twin (temporal_vs_single.py) is the same model with temporal=False.
    return ModelConfig(name="flashocc-tiny-m2", description="ours: R18, 128x352, 4D stereo (t, t-1, t-2)",
                       backbone_depth=18, backbone_out_indices=(0, 2, 3), img_neck_channels=128, input_size=(128, 352),
                       depth_bins=(1.0, 45.0, 1.0), bev_channels=32, encoder_channels=(32, 64, 128),
                       bev_neck_channels=64, head_channels=64, temporal=True, sid=True, depth_loss_weight=0.05)


def bevdetocc_tiny() -> ModelConfig:
    # Ours: flashocc-tiny's image side with the BEVDetOcc 3D encoder, neck and head (16 z cells), for the
    # paper's 2D-vs-3D comparison at CPU scale; 8 channels where the 3D baseline has 32.
    return replace(flashocc_tiny(), name="bevdetocc-tiny", description="ours: flashocc-tiny with the 3D-conv BEV encoder and head",
                   bev_channels=8, encoder_channels=(8, 16, 32), encoder_layers=(1, 2, 4), encoder_strides=(1, 2, 2),
                   bev_neck_channels=8, head_channels=8, head_3d=True)


# name -> (builder, exact parameter count of the official model, or None for ours)
PRESETS: dict[str, tuple] = {
    "flashocc-r50-m1": (flashocc_r50_m1, 44_744_312),
    "flashocc-r50-m0": (flashocc_r50_m0, 39_938_892),
    "bevdetocc-r50": (bevdetocc_r50, 29_021_482),
    "flashocc-tiny": (flashocc_tiny, None),
    "bevdetocc-tiny": (bevdetocc_tiny, None),
    "flashocc-r50-m2": (flashocc_r50_m2, 58_668_414),
    # The README gives 144.99 M only (no exact count); tests/models/test_swin.py checks the rounding.
    "flashocc-swinb-m3": (flashocc_swinb_m3, None),
    "flashocc-tiny-m2": (flashocc_tiny_m2, None),
}


def get_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        import difflib

        # Closest name, ties broken by table order (get_close_matches would prefer the last, e.g. m2 over m1).
        scores = [(difflib.SequenceMatcher(None, name, p).ratio(), -i, p) for i, p in enumerate(PRESETS)]
        score, _, best = max(scores)
        hint = f"; did you mean '{best}'?" if score >= 0.6 else ""
        raise KeyError(f"unknown preset '{name}'{hint} Available: {', '.join(PRESETS)}")
    return PRESETS[name][0]()


def build_model(preset: str | ModelConfig) -> FlashOcc:
    """Build a model from a preset name or a ``ModelConfig`` (weights randomly initialised)."""
    cfg = get_config(preset) if isinstance(preset, str) else preset
    if cfg.temporal:
        from flashocc.models.temporal import build_stereo4d  # imports this module's parts

        return build_stereo4d(cfg)
    grid = cfg.grid
    dx, dy, dz = grid.shape
    backbone = ResNet(cfg.backbone_depth, cfg.backbone_out_indices, with_cp=cfg.with_cp)
    img_neck = CustomFPN(backbone.out_channels, cfg.img_neck_channels)
    # 2D path: one pillar over the whole height; 3D path: the grid's own z cells.
    z_interval = grid.voxel_size[2] if cfg.head_3d else grid.upper[2] - grid.lower[2]
    pool_dz = dz if cfg.head_3d else 1
    view = LSSViewTransformer(cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample, cfg.depth_bins,
                              grid.lower, (grid.voxel_size[0], grid.voxel_size[1], z_interval), (dx, dy, pool_dz),
                              collapse_z=not cfg.head_3d)
    encoder_args = (cfg.bev_channels, cfg.encoder_channels, cfg.encoder_layers, cfg.encoder_strides)
    if cfg.head_3d:
        encoder: nn.Module = CustomResNet3D(*encoder_args)
        neck: nn.Module = LSSFPN3D(sum(cfg.encoder_channels), cfg.bev_neck_channels)
        head: nn.Module = BEVOCCHead3D(cfg.bev_neck_channels, cfg.head_channels, grid.num_classes)
    else:
        encoder = CustomResNet(*encoder_args)
        neck = FPN_LSS(cfg.encoder_channels[0] + cfg.encoder_channels[2], cfg.bev_neck_channels)
        head = BEVOCCHead2D(cfg.bev_neck_channels, cfg.head_channels, dz, grid.num_classes)
    if cfg.class_weights:
        if len(cfg.class_weights) != grid.num_classes:
            raise ValueError(f"class_weights has {len(cfg.class_weights)} values; the grid has {grid.num_classes} classes")
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    else:
        weights = class_balance_weights(OCC3D_CLASS_FREQUENCIES) if cfg.class_balance else None
    semantic_head = nn.Conv2d(cfg.bev_channels, grid.num_classes, 1) if cfg.semantic_loss_weight > 0 else None
    model = FlashOcc(backbone, img_neck, view, encoder, neck, head, use_mask=cfg.use_mask, class_weights=weights,
                     depth_loss_weight=cfg.depth_loss_weight, ignore_label=grid.ignore_label,
                     depth_target=cfg.depth_target, semantic_head=semantic_head,
                     semantic_loss_weight=cfg.semantic_loss_weight, grid=grid,
                     affinity_loss_weight=cfg.affinity_loss_weight)
    model.config = cfg
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_batch(cfg: ModelConfig, batch_size: int = 1, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A geometrically valid batch of random images on the nuScenes-like rig (for FLOPs, tests, benchmarks)."""
    from flashocc.geometry import image_aug_matrices

    h, w = cfg.input_size
    n = 6
    yaws = torch.tensor([55.0, 0.0, -55.0, 110.0, 180.0, -110.0]) * torch.pi / 180
    s2e = torch.zeros(n, 4, 4)
    for i, yaw in enumerate(yaws):
        # camera z (forward) along ego (cos yaw, sin yaw, 0); camera x right; camera y down.
        fwd = torch.tensor([torch.cos(yaw), torch.sin(yaw), 0.0])
        right = torch.tensor([torch.sin(yaw), -torch.cos(yaw), 0.0])
        down = torch.tensor([0.0, 0.0, -1.0])
        s2e[i, :3, :3] = torch.stack([right, down, fwd], dim=1)
        s2e[i, :3, 3] = torch.tensor([1.0, 0.0, 1.6])
        s2e[i, 3, 3] = 1
    scale = w / 1600
    post_rot, post_tran = image_aug_matrices(scale, (0, int(900 * scale) - h, w, int(900 * scale)), False, 0.0)
    k = torch.tensor([[1260.0, 0, 800], [0, 1260.0, 450], [0, 0, 1]])
    expand = lambda t: t.to(device).expand(batch_size, *t.shape).clone()  # noqa: E731
    return {
        "img": torch.randn(batch_size, n, 3, h, w, device=device),
        "sensor2ego": expand(s2e),
        "ego2global": expand(torch.eye(4).repeat(n, 1, 1)),
        "intrinsics": expand(k.repeat(n, 1, 1)),
        "post_rots": expand(torch.from_numpy(post_rot).repeat(n, 1, 1)),
        "post_trans": expand(torch.from_numpy(post_tran).repeat(n, 1)),
        "bda": torch.eye(3, device=device).repeat(batch_size, 1, 1),
    }


def count_gflops(cfg: ModelConfig) -> float:
    """Forward GFLOPs for one sample (6 cameras), counting a multiply-add as 2 FLOPs.

    Runs the dense stages on the meta device (shapes only, instant); BEV pooling is a gather/scatter
    with ~2 FLOPs per point and channel, added analytically.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if cfg.temporal:
        from flashocc.models.temporal import count_gflops_stereo4d

        return count_gflops_stereo4d(cfg)
    with torch.device("meta"):
        model = build_model(cfg).eval()
        batch = example_batch(cfg, device="meta")
    dx, dy, dz = cfg.grid.shape
    vt = model.img_view_transformer
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        feats = model.image_encoder(batch["img"])
        b, n, c, fh, fw = feats.shape
        vt.depth_net(feats.reshape(b * n, c, fh, fw))
        bev_z = dz if cfg.head_3d else 1
        bev = torch.zeros(b, cfg.bev_channels, bev_z, dy, dx, device="meta")
        bev = bev if cfg.head_3d else bev[:, :, 0]
        model.occ_head(model.bev_encoder(bev))
    pooling = 2 * n * vt.num_depth * fh * fw * cfg.bev_channels
    return (counter.get_total_flops() + pooling) / 1e9


def describe_presets(with_flops: bool = True) -> list[dict]:
    """One row per preset: name, params, input_size, gflops, official parameter count, description."""
    rows = []
    for name, (builder, official_params) in PRESETS.items():
        cfg = builder()
        with torch.device("meta"):
            params = count_parameters(build_model(cfg))
        gflops = count_gflops(cfg) if with_flops else None
        rows.append({
            "name": name, "params": params, "official_params": official_params,
            "input_size": list(cfg.input_size), "gflops": None if gflops is None else round(gflops, 2),
            # The official README's "FLOPs" (mmcv get_flops) count multiply-adds: gmacs compares to it.
            "gmacs": None if gflops is None else round(gflops / 2, 2),
            "description": cfg.description, "config": _plain(asdict(cfg)),
        })
    return rows


def _plain(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k != "grid"}

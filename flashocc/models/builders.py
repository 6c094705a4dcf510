"""One builder per model family, each reading every field of its config, and the dispatch between them.

``BUILDERS`` maps a config class to its builder; ``build_from_config`` checks the config
(``ModelConfig.check``) and calls the builder of its family. A builder is short and keyword-free in
the torchvision style: parts -> criterion -> model. Parts are built in a fixed order (it is the
order the random initialisation draws in, so a seed gives the same weights as before).

Families that come next get a config class in configs.py and a row in ``BUILDERS``; until then
there is no class for them, so nothing pretends to build them:
  * EFFOcc LiDAR-camera fusion / LiDAR-only: a LiDAR BEV source (voxelise -> sparse or pillar
    encoder -> BEV map) next to or instead of the camera lift-splat source, fused before the BEV
    encoder; the same BEV encoder, head and criterion.
  * Distilled students are no family of their own: a camera-LSS preset (flashocc-r50-distill,
    flashocc-tiny-distill) whose criterion gets the distillation terms (models/distill.py) from the
    trainer when the run has a teacher (engine/distill.py; docs/few-labels.md).
  * Panoptic-FlashOcc is in models/panoptic/ (``PanopticConfig`` -> ``build_panoptic``): the camera-LSS
    parts with the BEVDepth depth net plus an instance-centre head beside ``occ_head`` (docs/panoptic.md).
  * SparseOcc is in models/sparseocc/ (``SparseOccConfig`` -> ``build_sparseocc``, presets sparseocc-*).
What the tools read from any family's config is ``models/family.py``'s ``FamilyConfig``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flashocc.errors import ConfigError
from flashocc.grid import OCC3D_CLASS_FREQUENCIES
from flashocc.models.bev_encoder import CustomResNet, CustomResNet3D
from flashocc.models.configs import CameraLSSConfig, ModelConfig, Stereo4DConfig
from flashocc.models.criterion import OccupancyCriterion
from flashocc.models.depthnet import StereoViewTransformer
from flashocc.models.effocc import EFFOccConfig, build_effocc
from flashocc.models.flashocc import FlashOcc
from flashocc.models.heads import BEVOCCHead2D, BEVOCCHead3D
from flashocc.models.losses import class_balance_weights
from flashocc.models.necks import FPN_LSS, LSSFPN3D, CustomFPN
from flashocc.models.resnet import ResNet
from flashocc.models.panoptic import Panoptic4DConfig, PanopticConfig, build_panoptic, build_panoptic4d
from flashocc.models.sparseocc import SparseOccConfig, build_sparseocc
from flashocc.models.swin import ImageFPN_LSS, SwinTransformer
from flashocc.models.temporal import FlashOccStereo4D
from flashocc.models.view_transformer import LSSViewTransformer


# ---- shared parts ---------------------------------------------------------------------------------
def build_image_backbone(cfg: ModelConfig, stereo: bool) -> tuple[nn.Module, tuple[int, ...]]:
    """The image backbone and the channels of the stages its neck reads. With ``stereo`` its first
    output is the stride-4 stereo feature (ResNet: index 0 of ``backbone_out_indices``; Swin: stage 0)."""
    if cfg.backbone.startswith("resnet"):
        backbone = ResNet(int(cfg.backbone.removeprefix("resnet")), cfg.backbone_out_indices, with_cp=cfg.with_cp)
        return backbone, backbone.out_channels[1:] if stereo else backbone.out_channels
    backbone = SwinTransformer(cfg.backbone, cfg.backbone_out_indices, drop_path_rate=cfg.drop_path_rate,
                               return_stereo_feat=stereo, with_cp=cfg.with_cp)
    return backbone, backbone.out_channels


def build_image_neck(cfg: ModelConfig, in_channels: tuple[int, ...]) -> nn.Module:
    if cfg.img_neck == "custom_fpn":
        return CustomFPN(in_channels, cfg.img_neck_channels)
    return ImageFPN_LSS(sum(in_channels), cfg.img_neck_channels)


def class_weights(cfg: ModelConfig) -> torch.Tensor | None:
    """Explicit ``class_weights``, else the official class-balance weights when asked, else None."""
    if cfg.class_weights:
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    return class_balance_weights(OCC3D_CLASS_FREQUENCIES) if cfg.class_balance else None


def build_criterion(cfg: ModelConfig) -> OccupancyCriterion:
    """Every loss setting of ``cfg`` (models/criterion.py)."""
    return OccupancyCriterion(cfg.grid, depth_bins=cfg.depth_bins, downsample=cfg.downsample,
                              input_size=cfg.input_size, sid=cfg.sid, use_mask=cfg.use_mask,
                              class_weights=class_weights(cfg), depth_loss_weight=cfg.depth_loss_weight,
                              depth_target=cfg.depth_target, semantic_loss_weight=cfg.semantic_loss_weight,
                              affinity_loss_weight=cfg.affinity_loss_weight)


def build_semantic_head(cfg: ModelConfig) -> nn.Module | None:
    """The auxiliary per-pixel class head on the lifted context features, when its loss is on."""
    return nn.Conv2d(cfg.bev_channels, cfg.grid.num_classes, 1) if cfg.semantic_loss_weight > 0 else None


# ---- families -------------------------------------------------------------------------------------
def build_camera_lss(cfg: CameraLSSConfig) -> FlashOcc:
    """FlashOcc M0/M1, BEVDetOcc (``head_3d``) and the tiny presets."""
    grid = cfg.grid
    dx, dy, dz = grid.shape
    backbone, neck_in = build_image_backbone(cfg, stereo=False)
    img_neck = build_image_neck(cfg, neck_in)
    # 2D path: one pillar over the whole height; 3D path: the grid's own z cells.
    z_interval = grid.voxel_size[2] if cfg.head_3d else grid.upper[2] - grid.lower[2]
    view = LSSViewTransformer(cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample, cfg.depth_bins,
                              grid.lower, (grid.voxel_size[0], grid.voxel_size[1], z_interval),
                              (dx, dy, dz if cfg.head_3d else 1), collapse_z=not cfg.head_3d, sid=cfg.sid)
    encoder_args = (cfg.bev_channels, cfg.encoder_channels, cfg.encoder_layers, cfg.encoder_strides)
    if cfg.head_3d:
        encoder: nn.Module = CustomResNet3D(*encoder_args)
        neck: nn.Module = LSSFPN3D(sum(cfg.encoder_channels), cfg.bev_neck_channels)
        head: nn.Module = BEVOCCHead3D(cfg.bev_neck_channels, cfg.head_channels, grid.num_classes)
    else:
        encoder = CustomResNet(*encoder_args)
        neck = FPN_LSS(cfg.encoder_channels[0] + cfg.encoder_channels[2], cfg.bev_neck_channels)
        head = BEVOCCHead2D(cfg.bev_neck_channels, cfg.head_channels, dz, grid.num_classes)
    return FlashOcc(backbone, img_neck, view, encoder, neck, head, criterion=build_criterion(cfg),
                    semantic_head=build_semantic_head(cfg))


def build_stereo4d(cfg: Stereo4DConfig) -> FlashOccStereo4D:
    """FlashOcc M2 / M3 and flashocc-tiny-m2 (BEVStereo4D; see models/temporal.py)."""
    grid = cfg.grid
    dx, dy, dz = grid.shape
    backbone, neck_in = build_image_backbone(cfg, stereo=True)
    img_neck = build_image_neck(cfg, neck_in)
    view = StereoViewTransformer(cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample,
                                 cfg.depth_bins, grid.lower, (grid.voxel_size[0], grid.voxel_size[1],
                                                              grid.upper[2] - grid.lower[2]), (dx, dy, 1),
                                 sid=cfg.sid, aspp_mid_channels=cfg.aspp_channels)
    c = cfg.bev_channels
    pre_process = CustomResNet(c, (c,), (1,), (1,))
    # The BEV encoder takes the [t-1, t] concatenation.
    encoder = CustomResNet(2 * c, cfg.encoder_channels, cfg.encoder_layers, cfg.encoder_strides)
    bev_neck = FPN_LSS(cfg.encoder_channels[0] + cfg.encoder_channels[2], cfg.bev_neck_channels)
    head = BEVOCCHead2D(cfg.bev_neck_channels, cfg.head_channels, dz, grid.num_classes)
    return FlashOccStereo4D(backbone, img_neck, view, pre_process, encoder, bev_neck, head,
                            criterion=build_criterion(cfg), semantic_head=build_semantic_head(cfg))


# config class -> builder; a subclass of a config uses its parent's builder.
BUILDERS: dict[type[ModelConfig], Callable[..., nn.Module]] = {
    CameraLSSConfig: build_camera_lss,
    Stereo4DConfig: build_stereo4d,
    EFFOccConfig: build_effocc,  # models/effocc/ (LiDAR-camera fusion and LiDAR-only)
    SparseOccConfig: build_sparseocc,  # models/sparseocc/ (not a ModelConfig: no lift-splat fields)
    PanopticConfig: build_panoptic,  # models/panoptic/ (Panoptic-FlashOcc, BEVDepthPano)
    Panoptic4DConfig: build_panoptic4d,  # models/panoptic/temporal.py (BEVDepth4DPano)
}


def build_from_config(cfg: ModelConfig) -> FlashOcc:
    """Check ``cfg`` and build its family's model (random weights); ``model.config`` is ``cfg``."""
    builder = next((BUILDERS[k] for k in type(cfg).__mro__ if k in BUILDERS), None)
    if builder is None:
        raise ConfigError(f"no builder for {type(cfg).__name__}; model families: "
                          f"{', '.join(k.__name__ for k in BUILDERS)}")
    model = builder(cfg.check())
    model.config = cfg
    return model

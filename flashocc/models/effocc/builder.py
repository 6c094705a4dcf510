"""``build_effocc`` (reads every field of ``EFFOccConfig``) and the EFFOcc presets' config functions.

| preset              | official config (EFFOcc@9544ca0 configs/)                          | parameters |
| effocc-fusion-r18   | effocc_fusion_r18_data_scales/flashocc_fusion_r18_base_100%_seqs.py | 21,354,248 |
| effocc-lidar        | FlashLiDAROCC with the same sparse encoder, SECOND, FPN and head    | 8,730,352  |
| effocc-fusion-r50   | effocc_fusion_more_backbones/flashocc_fusion_r50_base_100%_seq.py   | counted from the config |
| effocc-fusion-swinb | effocc_fusion_more_backbones/flashocc_fusion_swinb_base_100%_seq.py | counted from the config |
| effocc-fusion-tiny  | ours: CPU-trainable fusion (dense height-binned LiDAR encoder)      |            |
| effocc-lidar-tiny   | ours: CPU-trainable LiDAR-only                                      |            |
"""
from __future__ import annotations

import itertools
from dataclasses import replace

import torch
from torch import nn

from flashocc.grid import OCC3D_CLASS_FREQUENCIES
from flashocc.models.criterion import OccupancyCriterion
from flashocc.models.effocc.config import EFFOccConfig
from flashocc.models.effocc.lidar import HardSimpleVFE, HeightBinnedEncoder, SparseEncoder, Voxelization
from flashocc.models.effocc.model import EFFOcc
from flashocc.models.effocc.trunk import SECOND, SECONDFPN, ConvFuser2D, LiDARAssistedViewTransformer
from flashocc.models.heads import BEVOCCHead2D
from flashocc.models.losses import class_balance_weights
from flashocc.models.necks import CustomFPN
from flashocc.models.resnet import ResNet
from flashocc.models.swin import ImageFPN_LSS, SwinTransformer
from flashocc.models.view_transformer import LSSViewTransformer


def build_criterion(cfg: EFFOccConfig) -> OccupancyCriterion:
    weights = (torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights
               else class_balance_weights(OCC3D_CLASS_FREQUENCIES) if cfg.class_balance else None)
    return OccupancyCriterion(cfg.grid, depth_bins=cfg.depth_bins, downsample=cfg.downsample,
                              input_size=cfg.input_size, sid=cfg.sid, use_mask=cfg.use_mask, class_weights=weights,
                              depth_loss_weight=cfg.depth_loss_weight if cfg.camera else 0.0,
                              depth_target=cfg.depth_target, semantic_loss_weight=cfg.semantic_loss_weight,
                              affinity_loss_weight=cfg.affinity_loss_weight)


def _camera_parts(cfg: EFFOccConfig) -> dict[str, nn.Module]:
    grid = cfg.grid
    if cfg.backbone.startswith("resnet"):
        backbone: nn.Module = ResNet(int(cfg.backbone.removeprefix("resnet")), cfg.backbone_out_indices,
                                     with_cp=cfg.with_cp)
    else:
        backbone = SwinTransformer(cfg.backbone, cfg.backbone_out_indices, drop_path_rate=cfg.drop_path_rate,
                                   return_stereo_feat=False, with_cp=cfg.with_cp)
    channels = backbone.out_channels
    neck: nn.Module = (CustomFPN(channels, cfg.img_neck_channels) if cfg.img_neck == "custom_fpn"
                       else ImageFPN_LSS(sum(channels), cfg.img_neck_channels))
    dx, dy, _ = grid.shape
    args = (cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample, cfg.depth_bins, grid.lower,
            (grid.voxel_size[0], grid.voxel_size[1], grid.upper[2] - grid.lower[2]), (dx, dy, 1))
    view = (LiDARAssistedViewTransformer(*args, sid=cfg.sid) if cfg.lidar_depth_input
            else LSSViewTransformer(*args, collapse_z=True, sid=cfg.sid))
    return {"img_backbone": backbone, "img_neck": neck, "img_view_transformer": view}


def _lidar_parts(cfg: EFFOccConfig) -> tuple[dict[str, nn.Module], int]:
    grid = cfg.grid
    if cfg.lidar_encoder == "height":
        enc = HeightBinnedEncoder(grid.lower, grid.voxel_size, grid.shape, cfg.lidar_channels, 2 * cfg.lidar_channels)
        return {"pts_middle_encoder": enc}, enc.out_channels
    enc = SparseEncoder(5, cfg.sparse_shape, cfg.lidar_channels, backend=cfg.sparse_backend)
    with torch.device("cpu"):  # no parameters; its grid check reads tensor values, which a meta build has not
        voxel_layer = Voxelization(cfg.voxel_size, cfg.point_range, cfg.max_points, cfg.max_voxels)
    return {"pts_voxel_layer": voxel_layer,
            "pts_voxel_encoder": HardSimpleVFE(5), "pts_middle_encoder": enc}, enc.bev_channels


def build_effocc(cfg: EFFOccConfig) -> EFFOcc:
    """Camera parts (fusion), LiDAR parts, fuser, SECOND + SECONDFPN, head, criterion."""
    parts: dict[str, nn.Module] = _camera_parts(cfg) if cfg.camera else {}
    lidar, lidar_channels = _lidar_parts(cfg)
    parts.update(lidar)
    trunk_in = lidar_channels
    if cfg.camera:
        parts["occ_fuser"] = ConvFuser2D((cfg.bev_channels, lidar_channels), cfg.fuser_channels)
        trunk_in = cfg.fuser_channels
    strides = tuple(itertools.accumulate(cfg.second_strides, lambda a, b: a * b))
    backbone = SECOND(trunk_in, cfg.second_channels, cfg.second_layers, cfg.second_strides)
    neck = SECONDFPN(cfg.second_channels, cfg.fpn_channels, strides)
    head = BEVOCCHead2D(neck.out_channels, cfg.head_channels, cfg.grid.shape[2], cfg.grid.num_classes)
    semantic = nn.Conv2d(cfg.bev_channels, cfg.grid.num_classes, 1) if cfg.semantic_loss_weight > 0 else None
    return EFFOcc(**parts, pts_backbone=backbone, pts_neck=neck, occ_head=head, criterion=build_criterion(cfg),
                  semantic_head=semantic)


# ---- presets --------------------------------------------------------------------------------------
def effocc_fusion_r18() -> EFFOccConfig:
    # EFFOcc-T: R18 (layers 2-4) + CustomFPN to one stride-8 128-ch map, LiDAR-assisted depth, 64-ch camera BEV,
    # 0.05x0.05x0.16 m sparse voxels, 256-ch LiDAR BEV, fuser to 256, SECOND [128, 256] x5, FPN to 512.
    return EFFOccConfig(name="effocc-fusion-r18", description="EFFOcc-T fusion: R18 + sparse LiDAR encoder (51.49 mIoU)",
                        with_cp=True)


def effocc_fusion_r50() -> EFFOccConfig:
    return replace(effocc_fusion_r18(), name="effocc-fusion-r50", description="EFFOcc fusion: R50 + sparse LiDAR encoder",
                   backbone="resnet50")


def effocc_fusion_swinb() -> EFFOccConfig:
    # Swin-B (window 12) with the FPN_LSS image neck 512+1024 -> 512 at stride 16, 512x1408, 256 camera BEV channels.
    return replace(effocc_fusion_r18(), name="effocc-fusion-swinb", description="EFFOcc-Base fusion: Swin-B, 512x1408 (54.08 mIoU)",
                   backbone="swin-b", backbone_out_indices=(2, 3), img_neck="fpn_lss", img_neck_channels=512,
                   input_size=(512, 1408), downsample=16, bev_channels=256, drop_path_rate=0.1)


def effocc_lidar() -> EFFOccConfig:
    # EFFOcc-L (FlashLiDAROCC): the same LiDAR branch, SECOND, FPN and head, no camera branch and no fuser.
    return EFFOccConfig(name="effocc-lidar", description="EFFOcc-L: LiDAR-only, sparse encoder (45.13 mIoU)",
                        camera=False)


def effocc_fusion_tiny() -> EFFOccConfig:
    # Ours, for 2 CPU cores: flashocc-tiny's R18 image side (stride 8 at 96x256, 1 m bins, 16-ch camera BEV)
    # with the LiDAR-assisted depth net, a dense height-binned LiDAR encoder (32 -> 64 ch) and a narrow trunk.
    return EFFOccConfig(name="effocc-fusion-tiny", description="ours: R18 96x256 + dense LiDAR encoder, CPU-trainable",
                        backbone_out_indices=(1, 2), img_neck_channels=64, input_size=(96, 256),
                        depth_bins=(1.0, 45.0, 1.0), bev_channels=16, lidar_encoder="height", lidar_channels=32,
                        fuser_channels=64, second_channels=(32, 64), second_layers=(2, 2), fpn_channels=(32, 32),
                        head_channels=32)


def effocc_lidar_tiny() -> EFFOccConfig:
    return EFFOccConfig(name="effocc-lidar-tiny", description="ours: LiDAR-only, dense LiDAR encoder, CPU-trainable",
                        camera=False, lidar_encoder="height", lidar_channels=32, second_channels=(32, 64),
                        second_layers=(2, 2), fpn_channels=(32, 32), head_channels=32)


__all__ = ["build_effocc", "build_criterion", "effocc_fusion_r18", "effocc_fusion_r50", "effocc_fusion_swinb",
           "effocc_lidar", "effocc_fusion_tiny", "effocc_lidar_tiny"]

"""``build_panoptic`` / ``build_panoptic4d``: every field of a ``PanopticConfig`` -> ``BEVDepthPano``, of a
``Panoptic4DConfig`` -> ``BEVDepth4DPano``; and the presets' configs."""
from __future__ import annotations

import torch
from torch import nn

from flashocc.grid import OCC3D_CLASS_FREQUENCIES
from flashocc.models.bev_encoder import CustomResNet
from flashocc.models.losses import class_balance_weights
from flashocc.models.necks import FPN_LSS, CustomFPN
from flashocc.models.panoptic.config import Panoptic4DConfig, PanopticConfig
from flashocc.models.panoptic.criterion import PanopticCriterion
from flashocc.models.panoptic.heads import BEVOCCHead2D_V2, CenternessHead
from flashocc.models.panoptic.model import BEVDepthPano, BEVDepthViewTransformer
from flashocc.models.panoptic.temporal import BEVDepth4DPano
from flashocc.models.resnet import ResNet
from flashocc.models.swin import ImageFPN_LSS, SwinTransformer


# The image side and the class weights as builders.py builds them for the camera-LSS family (that
# module imports this one for its BUILDERS row, so its helpers are not imported back).
def _image_encoder(cfg: PanopticConfig) -> tuple[nn.Module, nn.Module]:
    if cfg.backbone.startswith("resnet"):
        backbone: nn.Module = ResNet(int(cfg.backbone.removeprefix("resnet")), cfg.backbone_out_indices,
                                     with_cp=cfg.with_cp)
    else:
        backbone = SwinTransformer(cfg.backbone, cfg.backbone_out_indices, drop_path_rate=cfg.drop_path_rate,
                                   with_cp=cfg.with_cp)
    channels = backbone.out_channels
    neck = (CustomFPN(channels, cfg.img_neck_channels) if cfg.img_neck == "custom_fpn"
            else ImageFPN_LSS(sum(channels), cfg.img_neck_channels))
    return backbone, neck


def _class_weights(cfg: PanopticConfig) -> torch.Tensor | None:
    if cfg.class_weights:
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    return class_balance_weights(OCC3D_CLASS_FREQUENCIES) if cfg.class_balance else None


def _parts(cfg: PanopticConfig, encoder_in: int) -> tuple[dict[str, nn.Module], dict]:
    """The modules of ``BEVDepthPano`` in constructor order, and its keyword options."""
    grid = cfg.grid
    dx, dy, dz = grid.shape
    backbone, img_neck = _image_encoder(cfg)
    view = BEVDepthViewTransformer(cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample,
                                   cfg.depth_bins, grid.lower,
                                   (grid.voxel_size[0], grid.voxel_size[1], grid.upper[2] - grid.lower[2]),
                                   (dx, dy, 1), sid=cfg.sid, aspp_mid_channels=cfg.aspp_channels)
    encoder = CustomResNet(encoder_in, cfg.encoder_channels, cfg.encoder_layers, cfg.encoder_strides)
    neck = FPN_LSS(cfg.encoder_channels[0] + cfg.encoder_channels[2], cfg.bev_neck_channels)
    head = BEVOCCHead2D_V2(cfg.bev_neck_channels, cfg.head_channels, dz, grid.num_classes)
    # Without the centre head this is the official non-pano BEVDepthOCC (panoptic-flashocc-r50-depth*.py).
    centres = CenternessHead(cfg.bev_neck_channels, cfg.centre_channels) if cfg.centre_head else None
    criterion = PanopticCriterion(grid, depth_bins=cfg.depth_bins, downsample=cfg.downsample,
                                  input_size=cfg.input_size, sid=cfg.sid, use_mask=cfg.use_mask,
                                  class_weights=_class_weights(cfg), depth_loss_weight=cfg.depth_loss_weight,
                                  depth_target=cfg.depth_target, semantic_loss_weight=cfg.semantic_loss_weight,
                                  affinity_loss_weight=cfg.affinity_loss_weight, centres=cfg.centre_head)
    semantic = nn.Conv2d(cfg.bev_channels, grid.num_classes, 1) if cfg.semantic_loss_weight > 0 else None
    modules = {"img_backbone": backbone, "img_neck": img_neck, "img_view_transformer": view,
               "img_bev_encoder_backbone": encoder, "img_bev_encoder_neck": neck, "occ_head": head,
               "aux_centerness_head": centres, "criterion": criterion}
    options = dict(semantic_head=semantic, grid=grid, max_centres=cfg.max_centres,
                   score_threshold=cfg.centre_score_threshold, official_class_mapping=cfg.official_class_mapping,
                   assign_radius=cfg.assign_radius)
    return modules, options


def build_panoptic(cfg: PanopticConfig) -> BEVDepthPano:
    modules, options = _parts(cfg, cfg.bev_channels)
    return BEVDepthPano(*modules.values(), **options)


def build_panoptic4d(cfg: Panoptic4DConfig) -> BEVDepth4DPano:
    # The BEV encoder reads the [t, t-1, ..., t-num_adj] concatenation (numC_Trans x num_frames inputs).
    modules, options = _parts(cfg, cfg.bev_channels * cfg.num_frames)
    c = cfg.bev_channels
    pre_process = CustomResNet(c, (c,), (1,), (1,))  # official pre_process: one stride-1 stage of numC_Trans
    return BEVDepth4DPano(modules["img_backbone"], modules["img_neck"], modules["img_view_transformer"], pre_process,
                          modules["img_bev_encoder_backbone"], modules["img_bev_encoder_neck"], modules["occ_head"],
                          modules["aux_centerness_head"], modules["criterion"], num_adj=cfg.num_adj, **options)


# ---- presets (rows in models/presets.py) -------------------------------------------------------------
def panoptic_flashocc_depth_tiny_pano() -> PanopticConfig:
    # Official panoptic-flashocc-r50-depth-tiny-pano.py: numC_Trans 64, 1 m depth bins, 128-ch neck/head.
    return PanopticConfig(name="panoptic-flashocc-depth-tiny-pano",
                          description="Panoptic-FlashOcc depth-tiny-pano: R50, BEVDepth, 128-ch neck/head, centres",
                          depth_bins=(1.0, 45.0, 1.0), bev_neck_channels=128, head_channels=128)


def panoptic_flashocc_depth_tiny() -> PanopticConfig:
    # The README's non-pano depth-tiny row (BEVDepthOCC): the same layers without the centre head.
    return PanopticConfig(name="panoptic-flashocc-depth-tiny",
                          description="Panoptic-FlashOcc depth-tiny (BEVDepthOCC): R50, BEVDepth, 128-ch neck/head",
                          depth_bins=(1.0, 45.0, 1.0), bev_neck_channels=128, head_channels=128, centre_head=False)


def panoptic_flashocc_depth_pano() -> PanopticConfig:
    # Official panoptic-flashocc-r50-depth.py (a pano config despite its name): numC_Trans 80, 0.5 m bins.
    return PanopticConfig(name="panoptic-flashocc-depth-pano",
                          description="Panoptic-FlashOcc depth-pano: R50, BEVDepth, 80-ch BEV, centres",
                          bev_channels=80, encoder_channels=(160, 320, 640))


def panoptic_flashocc_depth() -> PanopticConfig:
    # The non-pano "depth" model built as BEVDepthOCC with the depth-pano settings (the official file of that
    # name is the pano config).
    return PanopticConfig(name="panoptic-flashocc-depth",
                          description="Panoptic-FlashOcc depth (BEVDepthOCC): R50, BEVDepth, 80-ch BEV",
                          bev_channels=80, encoder_channels=(160, 320, 640), centre_head=False)


def panoptic_flashocc_tiny() -> PanopticConfig:
    # Ours, CPU-trainable: flashocc-tiny's image side and BEV sizes with the BEVDepth depth net (narrow ASPP)
    # and a 16-channel centre head; official losses, no camera mask, LiDAR depth loss 1.
    return PanopticConfig(name="panoptic-flashocc-tiny",
                          description="ours: R18 (stride 8), 96x256, BEVDepth, centres; CPU-trainable",
                          backbone="resnet18", backbone_out_indices=(1, 2), downsample=8, img_neck_channels=64,
                          input_size=(96, 256), depth_bins=(1.0, 45.0, 1.0), bev_channels=16,
                          encoder_channels=(16, 32, 64), bev_neck_channels=16, head_channels=16, aspp_channels=16,
                          centre_channels=16)


# 4D (official panoptic-flashocc-r50-depth4d*.py): the depth-pano settings (numC_Trans 80, 0.5 m bins) over
# num_adj previous keyframes. The longterm configs differ in num_adj only (and a 0.1 centre score threshold).
def _depth4d(name: str, description: str, num_adj: int, pano: bool) -> Panoptic4DConfig:
    return Panoptic4DConfig(name=name, description=description, bev_channels=80, encoder_channels=(160, 320, 640),
                            num_adj=num_adj, centre_head=pano,
                            centre_score_threshold=0.1 if pano and num_adj > 1 else 0.3)


def panoptic_flashocc_depth4d_pano() -> Panoptic4DConfig:
    # Official panoptic-flashocc-r50-depth4d-pano.py: multi_adj_frame_id_cfg (1, 2, 1), one previous frame.
    return _depth4d("panoptic-flashocc-depth4d-pano", "Panoptic-FlashOcc depth4d-pano: R50, BEVDepth, t and t-1, "
                    "centres", 1, True)


def panoptic_flashocc_depth4d() -> Panoptic4DConfig:
    # The README's non-pano depth4d row (BEVDepth4DOCC): the same layers without the centre head.
    return _depth4d("panoptic-flashocc-depth4d", "Panoptic-FlashOcc depth4d (BEVDepth4DOCC): R50, BEVDepth, t and t-1",
                    1, False)


def panoptic_flashocc_depth4d_longterm8f_pano() -> Panoptic4DConfig:
    # The README's longterm8f-pano row: 8 previous keyframes. The config file the index holds is
    # panoptic-flashocc-r50-depth4d-longterm16f-pano.py (num_adj 16); model.num_adj=16 builds that one.
    return _depth4d("panoptic-flashocc-depth4d-longterm8f-pano", "Panoptic-FlashOcc depth4d-longterm8f-pano: R50, "
                    "BEVDepth, t and 8 previous keyframes, centres", 8, True)


def panoptic_flashocc_depth4d_longterm8f() -> Panoptic4DConfig:
    return _depth4d("panoptic-flashocc-depth4d-longterm8f", "Panoptic-FlashOcc depth4d-longterm8f (BEVDepth4DOCC): "
                    "R50, BEVDepth, t and 8 previous keyframes", 8, False)

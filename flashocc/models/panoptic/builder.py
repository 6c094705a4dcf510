"""``build_panoptic``: every field of a ``PanopticConfig`` -> ``BEVDepthPano``."""
from __future__ import annotations

from flashocc.models.bev_encoder import CustomResNet
from flashocc.models.necks import FPN_LSS
from flashocc.models.panoptic.config import PanopticConfig
from flashocc.models.panoptic.criterion import PanopticCriterion
from flashocc.models.panoptic.heads import BEVOCCHead2D_V2, CenternessHead
from flashocc.models.panoptic.model import BEVDepthPano, BEVDepthViewTransformer


def build_panoptic(cfg: PanopticConfig) -> BEVDepthPano:
    # Imported here: builders.py imports this module for its BUILDERS row.
    from flashocc.models.builders import build_image_backbone, build_image_neck, build_semantic_head, class_weights

    grid = cfg.grid
    dx, dy, dz = grid.shape
    backbone, neck_in = build_image_backbone(cfg, stereo=False)
    img_neck = build_image_neck(cfg, neck_in)
    view = BEVDepthViewTransformer(cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample,
                                   cfg.depth_bins, grid.lower,
                                   (grid.voxel_size[0], grid.voxel_size[1], grid.upper[2] - grid.lower[2]),
                                   (dx, dy, 1), sid=cfg.sid, aspp_mid_channels=cfg.aspp_channels)
    encoder = CustomResNet(cfg.bev_channels, cfg.encoder_channels, cfg.encoder_layers, cfg.encoder_strides)
    neck = FPN_LSS(cfg.encoder_channels[0] + cfg.encoder_channels[2], cfg.bev_neck_channels)
    head = BEVOCCHead2D_V2(cfg.bev_neck_channels, cfg.head_channels, dz, grid.num_classes)
    centres = CenternessHead(cfg.bev_neck_channels, cfg.centre_channels)
    criterion = PanopticCriterion(grid, depth_bins=cfg.depth_bins, downsample=cfg.downsample,
                                  input_size=cfg.input_size, sid=cfg.sid, use_mask=cfg.use_mask,
                                  class_weights=class_weights(cfg), depth_loss_weight=cfg.depth_loss_weight,
                                  depth_target=cfg.depth_target, semantic_loss_weight=cfg.semantic_loss_weight,
                                  affinity_loss_weight=cfg.affinity_loss_weight)
    return BEVDepthPano(backbone, img_neck, view, encoder, neck, head, centres, criterion,
                        semantic_head=build_semantic_head(cfg), grid=grid, max_centres=cfg.max_centres,
                        score_threshold=cfg.centre_score_threshold,
                        official_class_mapping=cfg.official_class_mapping, assign_radius=cfg.assign_radius)

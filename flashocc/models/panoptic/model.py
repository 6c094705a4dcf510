"""``BEVDepthPano``: FlashOcc with the BEVDepth view transformer, ``BEVOCCHead2D_V2`` and the instance-centre
head ``aux_centerness_head`` on the BEV encoder's output (FlashOCC@4084861
projects/mmdet3d_plugin/models/detectors/bevdet_occ.py, BEVDepthPano).

Eval-mode ``forward`` returns the occupancy logits like every FlashOcc model (the evaluation loop, the
ONNX export and the benchmarks need nothing else); ``predict_panoptic`` adds the instance ids.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from flashocc.batch import check_inputs
from flashocc.errors import ConfigError
from flashocc.geometry import frustum_to_ego, sensor_to_key_ego
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.models.criterion import OccOutputs
from flashocc.models.depthnet import DepthNet, camera_mlp_input
from flashocc.models.flashocc import FlashOcc
from flashocc.models.panoptic.assign import assign_instances, decode_centres
from flashocc.models.panoptic.criterion import PanopticCriterion
from flashocc.models.view_transformer import Lifted, LSSViewTransformer
from flashocc.ops.bev_pool import BevPoolIndices, bev_pool, prepare_bev_pool


class BEVDepthViewTransformer(LSSViewTransformer):
    """Lift-splat with the camera-aware ``DepthNet`` without the stereo branch (official
    ``LSSViewTransformerBEVDepth``, FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/view_transformer.py)."""

    def __init__(self, in_channels: int, out_channels: int, input_size: tuple[int, int], downsample: int,
                 depth_bins: tuple[float, float, float], lower: tuple[float, float, float],
                 interval: tuple[float, float, float], grid_size: tuple[int, int, int], sid: bool = False,
                 aspp_mid_channels: int = 96) -> None:
        super().__init__(in_channels, out_channels, input_size, downsample, depth_bins, lower, interval, grid_size,
                         collapse_z=True, sid=sid)
        self.depth_net = DepthNet(in_channels, in_channels, out_channels, self.num_depth, aspp_mid_channels,
                                  stereo=False)

    def lift(self, feats: torch.Tensor, mlp_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``LiftSplat.lift`` with the (B, N, 27) camera vector; zeros when none is given (FLOP counting
        on shapes only, models/flops.py)."""
        if mlp_input is None:
            mlp_input = feats.new_zeros(*feats.shape[:2], 27)
        return super().lift(feats, mlp_input)

    def forward(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                indices: BevPoolIndices | None = None) -> Lifted:
        s2k = sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])
        mlp_input = camera_mlp_input(s2k, batch["intrinsics"].float(), batch["post_rots"].float(),
                                     batch["post_trans"].float(), batch["bda"].float())
        depth, context = self.lift(feats, mlp_input)
        if indices is None:
            indices = self.pool_indices(batch)
        bev = self.splat(depth, context, feats.shape[:2], lambda d, c: bev_pool(d, c, indices))
        return Lifted(bev, depth, context)

    def forward_frame(self, feats: torch.Tensor, sensor2keyego: torch.Tensor, key_sensor2keyego: torch.Tensor,
                      geometry: Mapping[str, torch.Tensor]) -> Lifted:
        """One frame of a temporal batch: its cameras' ``sensor2keyego`` (B, N, 4, 4) in the current key-ego
        frame; the camera vector of the depth net is the key frame's (``key_sensor2keyego``), as in
        BEVDet4D.extract_img_feat. ``geometry``: the current frame's intrinsics, post_rots, post_trans, bda."""
        cam = [geometry[k].float() for k in ("intrinsics", "post_rots", "post_trans", "bda")]
        depth, context = self.lift(feats, camera_mlp_input(key_sensor2keyego, *cam))
        indices = prepare_bev_pool(frustum_to_ego(self.frustum, sensor2keyego, *cam), self.lower, self.interval,
                                   self.grid_size)
        bev = self.splat(depth, context, feats.shape[:2], lambda d, c: bev_pool(d, c, indices))
        return Lifted(bev, depth, context)


class BEVDepthPano(FlashOcc):
    """Semantic occupancy plus instance centres; ``predict_panoptic`` gives (labels, instance ids)."""

    def __init__(self, img_backbone: nn.Module, img_neck: nn.Module, img_view_transformer: nn.Module,
                 img_bev_encoder_backbone: nn.Module, img_bev_encoder_neck: nn.Module, occ_head: nn.Module,
                 aux_centerness_head: nn.Module | None, criterion: PanopticCriterion,
                 semantic_head: nn.Module | None = None,
                 *, grid: OccGrid = OCC3D_NUSCENES, max_centres: int = 500, score_threshold: float = 0.3,
                 official_class_mapping: bool = False, assign_radius: float = 0.0) -> None:
        super().__init__(img_backbone, img_neck, img_view_transformer, img_bev_encoder_backbone, img_bev_encoder_neck,
                         occ_head, criterion=criterion, semantic_head=semantic_head)
        self.aux_centerness_head = aux_centerness_head  # None: BEVDepthOCC (no instances)
        self.grid = grid
        self.max_centres, self.score_threshold = max_centres, score_threshold
        self.official_class_mapping, self.assign_radius = official_class_mapping, assign_radius

    def forward_panoptic(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None
                         ) -> tuple[OccOutputs, dict[str, torch.Tensor] | None]:
        """(what the occupancy criterion reads, the centre head's maps), from one pass."""
        check_inputs(batch)
        lifted = self.lift_to_bev(self.encode_images(batch), batch, indices)
        bev = self.bev_encoder(lifted.bev)
        logits = self.occ_head(bev)
        semantic = self.semantic_head(lifted.context) if self.semantic_head is not None and self.training else None
        outputs = OccOutputs(logits, lifted.depth, lifted.context, semantic, self.current_geometry(batch))
        head = self.aux_centerness_head
        return outputs, None if head is None else head(bev)

    def forward(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None):
        if not self.training:
            return self.forward_logits(batch, indices)[0]
        self.criterion.check_targets(batch)
        outputs, centres = self.forward_panoptic(batch, indices)
        return self.criterion(outputs, batch, centres)

    @torch.no_grad()
    def predict_panoptic(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B, Dx, Dy, Dz) uint8, instance ids (B, Dx, Dy, Dz) int64 in the official ``pano_inst``
        convention). Unlike upstream, every batch element gets its instances, not only the first."""
        if self.aux_centerness_head is None:
            raise ConfigError(f"model.centre_head: predicting instances needs the centre head; preset "
                              f"{getattr(getattr(self, 'config', None), 'name', '?')} was built without it "
                              "(a non-pano BEVDepthOCC preset)")
        outputs, centres = self.forward_panoptic(batch, indices)
        labels = outputs.logits.argmax(dim=-1)
        found = decode_centres(centres["heatmap"], centres["reg"], centres["height"], self.grid, self.max_centres,
                               self.score_threshold)
        ids = torch.stack([assign_instances(labels[i], found[i], self.grid, self.official_class_mapping,
                                            self.assign_radius) for i in range(labels.shape[0])])
        return labels.to(torch.uint8), ids

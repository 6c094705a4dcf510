"""``BEVDepth4DPano``: Panoptic-FlashOcc with the BEV maps of ``num_adj`` previous keyframes
(FlashOCC@4084861 projects/mmdet3d_plugin/models/detectors/bevdet_occ.py, BEVDepth4DPano / BEVDepth4DOCC,
on detectors/bevdet4d.py, BEVDet4D.extract_img_feat).

Every frame goes through the image encoder, the BEVDepth view transformer and ``pre_process_net``; the
previous frames without gradients. The earlier frames are lifted straight into the current key-ego frame
(``align_after_view_transfromation=False``, no BEV warping) and the maps are concatenated in the official
order **[t, t-1, ..., t-num_adj]** (BEVStereo4D's is [t-1, t]). The depth net's camera vector is the key
frame's for every frame, and only the current frame's depth is supervised.

Batch: the ``flashocc.batch`` keys with T = 1 + num_adj frames stacked frame-major along the view axis,
exactly what ``OccDataset`` yields with ``DataConfig(num_adjacent=num_adj)``; fewer frames fall back to
the current one (the official scene-start fallback). Frame splitting and the key-ego poses are
models/temporal.py's, shared with BEVStereo4D.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from flashocc.models.panoptic.model import BEVDepthPano, BEVDepthViewTransformer
from flashocc.models.temporal import key_ego_poses, split_frames
from flashocc.models.view_transformer import Lifted
from flashocc.ops.bev_pool import BevPoolIndices


class BEVDepth4DPano(BEVDepthPano):
    """``BEVDepthPano`` over [t, t-1, ..., t-num_adj]; ``pre_process_net`` is the official child name."""

    def __init__(self, img_backbone: nn.Module, img_neck: nn.Module, img_view_transformer: BEVDepthViewTransformer,
                 pre_process_net: nn.Module, img_bev_encoder_backbone: nn.Module, img_bev_encoder_neck: nn.Module,
                 occ_head: nn.Module, aux_centerness_head: nn.Module | None, criterion, *, num_adj: int,
                 num_cameras: int = 6, **kwargs) -> None:
        super().__init__(img_backbone, img_neck, img_view_transformer, img_bev_encoder_backbone,
                         img_bev_encoder_neck, occ_head, aux_centerness_head, criterion, **kwargs)
        self.pre_process_net = pre_process_net
        self.num_adj, self.num_cameras = num_adj, num_cameras

    def split_frames(self, batch: Mapping[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], dict]:
        return split_frames(batch, self.num_cameras, self.num_adj + 1)

    def encode_images(self, batch: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Image-neck features (B, N, C, fH, fW) of each frame; a fallback frame is encoded once."""
        frames, _ = self.split_frames(batch)
        feats = [self.image_encoder(frames[0]["img"])]
        with torch.no_grad():
            for f in frames[1:]:
                feats.append(feats[0] if f["img"] is frames[0]["img"] else self.image_encoder(f["img"]))
        return [feats[0]] + [x.detach() for x in feats[1:]]

    def lift_to_bev(self, encoded: list[torch.Tensor], batch: Mapping[str, torch.Tensor],
                    indices: BevPoolIndices | None = None) -> Lifted:
        if indices is not None:
            raise ValueError("temporal models compute pooling indices per frame (the previous frames move with the "
                             "ego vehicle); call without indices")
        frames, geometry = self.split_frames(batch)
        n = self.num_cameras
        s2k = key_ego_poses([f["sensor2ego"] for f in frames], [f["ego2global"] for f in frames])
        vt: BEVDepthViewTransformer = self.img_view_transformer

        def lift(i: int) -> Lifted:
            lifted = vt.forward_frame(encoded[i], s2k[:, i * n:(i + 1) * n], s2k[:, :n], geometry)
            return lifted._replace(bev=self.pre_process_net(lifted.bev)[0])

        current = lift(0)
        with torch.no_grad():
            # A fallback frame is the current one (same tensors): its map is the current map.
            previous = [current.bev.detach() if frames[i]["img"] is frames[0]["img"] else lift(i).bev
                        for i in range(1, len(frames))]
        return current._replace(bev=torch.cat([current.bev, *previous], dim=1))

    def current_geometry(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.num_cameras
        out = {k: batch[k][:, :n] for k in ("img", "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans")}
        out["bda"] = batch["bda"]
        return out


__all__ = ["BEVDepth4DPano"]

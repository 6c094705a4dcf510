"""FlashOcc: the composition image encoder -> view transform -> BEV encoder -> occupancy head.

The parts are built outside and passed in (torchvision ``GeneralizedRCNN`` style); ``builders.py``
builds them from a config. The child names are the official state-dict prefixes (``img_backbone``,
``img_neck``, ``img_view_transformer``, ``img_bev_encoder_backbone``, ``img_bev_encoder_neck``,
``occ_head``), so official checkpoints load strictly. The 3D-conv baseline (BEVDetOcc) is the same
class with 3D parts; the temporal stereo model (``temporal.FlashOccStereo4D``) overrides the two
image stages. Losses are the ``criterion``'s (models/criterion.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from flashocc.batch import check_inputs
from flashocc.device import autocast_enabled
from flashocc.models.criterion import OccOutputs, OccupancyCriterion
from flashocc.models.view_transformer import Lifted
from flashocc.ops.bev_pool import BevPoolIndices


class FlashOcc(nn.Module):
    """Multi-camera images -> semantic occupancy logits (B, Dx, Dy, Dz, K) indexed [x, y, z, class].

    ``forward(batch)``: in eval mode returns logits; in train mode returns the ``criterion``'s dict of
    named losses and needs the targets it names (``voxel_semantics``, ``mask_camera``, plus ``gt_depth``
    for a LiDAR depth loss).

    ``semantic_head`` (optional, a training aid off in the official presets): a 1x1 conv on the lifted
    context features whose per-pixel class logits the criterion supervises (models/ray_targets.py).
    It changes nothing at inference and adds ``semantic_head.*`` keys only when present.

    Stages, callable on their own for benchmarks and tests: ``encode_images`` -> ``lift_to_bev`` ->
    ``bev_encoder`` -> ``occ_head``; ``forward_outputs`` runs them in that order.
    """

    def __init__(
        self,
        img_backbone: nn.Module,
        img_neck: nn.Module,
        img_view_transformer: nn.Module,
        img_bev_encoder_backbone: nn.Module,
        img_bev_encoder_neck: nn.Module,
        occ_head: nn.Module,
        criterion: OccupancyCriterion | None = None,
        semantic_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.img_backbone = img_backbone
        self.img_neck = img_neck
        self.img_view_transformer = img_view_transformer
        self.img_bev_encoder_backbone = img_bev_encoder_backbone
        self.img_bev_encoder_neck = img_bev_encoder_neck
        self.occ_head = occ_head
        self.semantic_head = semantic_head  # None in the official layout: no extra state-dict keys
        if criterion is None:
            vt = img_view_transformer
            criterion = OccupancyCriterion(depth_bins=vt.depth_bins, downsample=vt.downsample,
                                           input_size=vt.input_size, sid=vt.sid)
        if (semantic_head is None) != (criterion.semantic_loss_weight == 0):
            raise ValueError("give a semantic_head exactly when the criterion has semantic_loss_weight > 0")
        self.criterion = criterion

    # ---- stages -----------------------------------------------------------------------------------
    def image_encoder(self, img: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) normalised BGR -> (B, N, C, H/ds, W/ds)."""
        b, n, c, h, w = img.shape
        x = self.img_neck(self.img_backbone(img.reshape(b * n, c, h, w)))
        return x.view(b, n, *x.shape[1:])

    def view_transform(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> Lifted:
        """Image features (B, N, C, fH, fW) -> ``Lifted`` (bev, depth, context)."""
        return self.img_view_transformer(feats, batch, indices)

    def encode_images(self, batch: Mapping[str, torch.Tensor]) -> Any:
        """Stage 1: everything the image backbone and neck compute for ``batch``."""
        return self.image_encoder(batch["img"])

    def lift_to_bev(self, encoded: Any, batch: Mapping[str, torch.Tensor],
                    indices: BevPoolIndices | None = None) -> Lifted:
        """Stage 2: the BEV map the BEV encoder takes, with the current frame's depth and context."""
        return self.view_transform(encoded, batch, indices)

    def bev_encoder(self, bev: torch.Tensor) -> torch.Tensor:
        # Official detail (FlashOCC@4084861 projects/mmdet3d_plugin/models/detectors/bevdet.py,
        # BEVDet.bev_encoder is @force_fp32): the BEV encoder runs in fp32 even under AMP.
        device_type = bev.device.type
        guard = torch.autocast(device_type, enabled=False) if autocast_enabled(device_type) else nullcontext()
        with guard:
            return self.img_bev_encoder_neck(self.img_bev_encoder_backbone(bev.float()))

    def current_geometry(self, batch: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """The current frame's camera inputs (the rays of the occupancy targets)."""
        return batch

    def forward_outputs(self, batch: Mapping[str, torch.Tensor],
                        indices: BevPoolIndices | None = None) -> OccOutputs:
        """The pipeline: images -> BEV -> BEV encoder -> head, with what the criterion needs."""
        check_inputs(batch)
        lifted = self.lift_to_bev(self.encode_images(batch), batch, indices)
        bev = self.bev_encoder(lifted.bev)
        logits = self.occ_head(bev)
        semantic = None
        if self.semantic_head is not None and self.training:
            # On the lifted context features: what is splatted into BEV is taught what each pixel sees.
            semantic = self.semantic_head(lifted.context)
        return OccOutputs(logits, lifted.depth, lifted.context, semantic, self.current_geometry(batch), bev)

    def forward_logits(self, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, Dx, Dy, Dz, K), depth probabilities (B·N, D, fH, fW))."""
        out = self.forward_outputs(batch, indices)
        return out.logits, out.depth

    # ---- public entry points ----------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None):
        if not self.training:
            return self.forward_logits(batch, indices)[0]
        self.criterion.check_targets(batch)  # before the forward pass, not after it
        return self.criterion(self.forward_outputs(batch, indices), batch)

    def fuse(self, channels_last: bool = True, compile: bool | str = False) -> nn.Module:
        """An inference-only copy (BatchNorm folded, channels-last, cached pooling indices, optional
        ``torch.compile``) with the same logits; this model is left as it is (models/fuse.py)."""
        from flashocc.models.fuse import fuse_for_inference

        return fuse_for_inference(self, channels_last=channels_last, compile=compile)

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None) -> torch.Tensor:
        """Class labels (B, Dx, Dy, Dz) uint8 (argmax of the logits; the official softmax is redundant).
        Call ``model.eval()`` first, as for any inference."""
        logits, _ = self.forward_logits(batch, indices)
        return logits.argmax(dim=-1).to(torch.uint8)

"""The Panoptic-FlashOcc criterion: the ``BEVOCCHead2D_V2`` occupancy losses, the centre-head losses and
the shared depth / training-aid terms of ``OccupancyCriterion``.

Terms and official weights (FlashOCC@4084861 projects/mmdet3d_plugin/models/dense_heads/bev_occ_head.py,
BEVOCCHead2D_V2.loss; dense_heads/bev_centerpoint_head.py, Centerness_Head.loss):
  loss_occ               100 x sigmoid focal (gamma 2, alpha 0.25), class-balance and distance weights
  loss_voxel_sem_scal    1 x scene-class affinity per class
  loss_voxel_geo_scal    1 x the same for occupied vs free
  loss_voxel_lovasz      1 x Lovász-softmax over the present classes
  task0.loss_heatmap     Gaussian focal loss on the centre heatmap
  task0.loss_xy/loss_z   0.25 x L1 of the sub-cell offset / the centre height at the objects' cells
  loss_affinity, loss_depth, loss_semantic   as in models/criterion.py
The dim/rot/vel branches are weighted 0 upstream and emit nothing here. ``use_mask`` restricts every
occupancy term to the camera-visible voxels (off in the official pano configs).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from flashocc.models.criterion import OccOutputs, OccupancyCriterion
from flashocc.models.panoptic import losses as L
from flashocc.models.panoptic.targets import centre_targets

FOCAL_WEIGHT = 100.0
SCAL_WEIGHT = 1.0
LOVASZ_WEIGHT = 1.0
BOX_WEIGHT = 0.25
INSTANCES_KEY = "voxel_instances"


class PanopticCriterion(OccupancyCriterion):
    """``forward(outputs, batch, centres)``: ``centres`` is the centre head's dict of maps."""

    def __init__(self, *args, centres: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.centres = centres  # False: no centre head (BEVDepthOCC), no centre terms, no instance targets
        dx, dy, _ = self.grid.shape
        self.register_buffer("distance", L.distance_weights(dx, dy), persistent=False)

    def required_targets(self) -> tuple[str, ...]:
        return super().required_targets() + ((INSTANCES_KEY,) if self.centres else ())

    def check_targets(self, batch: Mapping[str, torch.Tensor]) -> None:
        if self.centres and INSTANCES_KEY not in batch:
            raise ValueError(f"train mode needs '{INSTANCES_KEY}' (Occ3D-panoptic instance ids: "
                             "data.load_instances=true) for the centre targets; call model.eval() for logits")
        super().check_targets(batch)

    def occupancy_terms(self, logits: torch.Tensor, labels: torch.Tensor,
                        mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        keep = labels != self.grid.ignore_label
        if mask is not None:
            keep = keep & (mask > 0)
        out = {"loss_occ": FOCAL_WEIGHT * L.focal_occupancy_loss(logits, labels, keep, self.class_weights,
                                                                 self.distance.to(logits.device))}
        all_kept = bool(keep.all())
        probs = L.kept(logits, keep, all_kept).float().softmax(dim=-1)
        kept = L.kept(labels, keep, all_kept).long()
        out["loss_voxel_sem_scal"] = SCAL_WEIGHT * L.sem_scal_loss(probs, kept)
        out["loss_voxel_geo_scal"] = SCAL_WEIGHT * L.geo_scal_loss(probs, kept, self.grid.free_label)
        out["loss_voxel_lovasz"] = LOVASZ_WEIGHT * L.lovasz_softmax(probs, kept)
        return out

    def centre_terms(self, centres: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
        t = centre_targets(batch[INSTANCES_KEY], batch["voxel_semantics"], self.grid)
        heatmap = centres["heatmap"]
        out = {"task0.loss_heatmap": L.gaussian_focal_loss(heatmap, t.heatmap.to(heatmap.device))}
        num = t.cells.shape[0] + 1e-4
        bi, row, col = t.cells.to(heatmap.device).unbind(1)
        reg = centres["reg"].float()[bi, :, row, col]              # (M, 2)
        height = centres["height"].float()[bi, 0, row, col]        # (M,)
        out["task0.loss_xy"] = BOX_WEIGHT * (reg - t.reg.to(reg.device)).abs().sum() / num
        out["task0.loss_z"] = BOX_WEIGHT * (height - t.height.to(height.device)).abs().sum() / num
        return out

    def forward(self, outputs: OccOutputs, batch: Mapping[str, torch.Tensor],
                centres: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        self.check_targets(batch)
        if self.centres and centres is None:
            raise ValueError("the panoptic criterion needs the centre head's outputs")
        labels = batch["voxel_semantics"]
        mask = batch["mask_camera"] if self.use_mask else None
        out = self.occupancy_terms(outputs.logits, labels, mask)
        if self.centres:
            out.update(self.centre_terms(centres, batch))
        out.update(self.auxiliary_terms(outputs, batch, labels, mask))
        return out

    def extra_repr(self) -> str:
        return f"{FOCAL_WEIGHT}·focal + scal + lovasz + centres; " + super().extra_repr()

"""The training criterion: every loss term of the occupancy models and its weight, in one module.

A model's forward gives ``OccOutputs`` (logits, the current frame's depth probabilities and lifted
context, the auxiliary per-pixel class logits when it has a ``semantic_head``, and the camera inputs
of the current frame); ``OccupancyCriterion(outputs, batch)`` turns them into the named losses that
``model(batch)`` returns in train mode. The model holds the criterion as its child ``criterion`` so
that ``model(batch)`` keeps returning losses; the criterion has no parameters and its class-weight
buffer is not persistent, so checkpoints do not change.

Terms, in this order (the order of the returned dict, so their sum is reproducible):
  loss_occ       occupancy cross-entropy over the camera-visible voxels, optional class weights
                 (FlashOCC@4084861 projects/mmdet3d_plugin/models/dense_heads/bev_occ_head.py, BEVOCCHead2D.loss)
  loss_affinity  per-class precision/recall/specificity (``losses.affinity_loss``; ours, off officially)
  loss_depth     depth BCE on LiDAR depth (view_transformer.py, LSSViewTransformerBEVDepth.get_depth_loss)
                 or on the first occupied voxel of each ray (``ray_targets``; ours)
  loss_semantic  per-pixel class of the first occupied voxel of each ray (ours)
  loss_distill_* with a teacher's outputs in the batch: the distillation terms (models/distill.py)

A batch with ``labeled`` (B,) bool (a run on part of the labels) computes the supervised terms above
on its labelled samples only (``_labeled_only``). A batch with ``active_mask`` (B, Dx, Dy, Dz) bool
(voxel-level active learning) is supervised by its selected voxels only (``selected_voxels``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from flashocc.batch import TARGET_KEYS
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.models.losses import affinity_loss, cell_depth_loss, depth_loss, occupancy_loss, semantic_loss
from flashocc.models.ray_targets import ray_targets

# The selected voxels of voxel-level active learning (flashocc.data.active_masks.BATCH_KEY).
ACTIVE_MASK_KEY = "active_mask"


@dataclass
class OccOutputs:
    """What one forward pass gives the criterion (all of the current frame)."""

    logits: torch.Tensor                 # (B, Dx, Dy, Dz, K)
    depth: torch.Tensor                  # (B·N, D, fH, fW) softmax probabilities
    context: torch.Tensor                # (B·N, C, fH, fW) context features lifted into BEV
    semantic: torch.Tensor | None        # (B·N, K, fH, fW) logits of the semantic_head, or None
    geometry: Mapping[str, torch.Tensor]  # the current frame's camera inputs (flashocc.batch.INPUT_KEYS)
    bev: torch.Tensor | None = None      # BEV feature the head reads (B, C, Dy, Dx): what distillation compares


class OccupancyCriterion(nn.Module):
    """Named losses from ``OccOutputs`` and the batch targets.

    ``depth_bins``/``sid``/``downsample``/``input_size`` describe the view transform whose depth is
    supervised. ``class_weights`` weigh the occupancy and semantic cross-entropies (None: unweighted).
    """

    def __init__(self, grid: OccGrid = OCC3D_NUSCENES, *, depth_bins: tuple[float, float, float],
                 downsample: int, input_size: tuple[int, int], sid: bool = False, use_mask: bool = True,
                 class_weights: torch.Tensor | None = None, depth_loss_weight: float = 0.0,
                 depth_target: str = "lidar", semantic_loss_weight: float = 0.0,
                 affinity_loss_weight: float = 0.0) -> None:
        super().__init__()
        if depth_target not in ("lidar", "occupancy"):
            raise ValueError(f"depth_target must be 'lidar' or 'occupancy', got {depth_target!r}")
        self.grid = grid
        self.depth_bins, self.sid = tuple(depth_bins), sid
        self.downsample, self.input_size = downsample, tuple(input_size)
        self.use_mask = use_mask
        self.depth_loss_weight = depth_loss_weight
        self.depth_target = depth_target
        self.semantic_loss_weight = semantic_loss_weight
        self.affinity_loss_weight = affinity_loss_weight
        # Not a checkpoint entry in the official code, so not in our state dict either.
        self.register_buffer("class_weights", class_weights, persistent=False)
        # Distillation terms (models/distill.py DistillLoss), set by flashocc.engine.distill for a run with
        # a teacher; they are added when the batch carries the teacher's outputs.
        self.distill: nn.Module | None = None

    @property
    def uses_ray_targets(self) -> bool:
        return self.semantic_loss_weight > 0 or (self.depth_loss_weight > 0 and self.depth_target == "occupancy")

    def required_targets(self) -> tuple[str, ...]:
        """Batch keys the losses read (``gt_depth`` only for a LiDAR depth loss)."""
        lidar_depth = self.depth_loss_weight > 0 and self.depth_target == "lidar"
        return TARGET_KEYS + (("gt_depth",) if lidar_depth else ())

    def check_targets(self, batch: Mapping[str, torch.Tensor]) -> None:
        missing = [k for k in self.required_targets() if k not in batch]
        if missing:
            raise ValueError(f"train mode needs targets {missing} in the batch; call model.eval() for logits")

    def forward(self, outputs: OccOutputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.check_targets(batch)
        out = self._supervised(*_labeled_only(outputs, batch)) if "labeled" in batch else self._supervised(outputs, batch)
        if self.distill is not None and "teacher_logits" in batch:
            if outputs.bev is None:
                raise ValueError("distillation needs the student's BEV feature (OccOutputs.bev)")
            out.update(self.distill(outputs.bev, outputs.logits, batch))
        return out

    def _supervised(self, outputs: OccOutputs | None, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if outputs is None:  # no labelled sample in the batch: every term is 0 (batch["zero"] keeps the graph)
            names = ["loss_occ"] + (["loss_affinity"] if self.affinity_loss_weight > 0 else [])
            names += (["loss_depth"] if self.depth_loss_weight > 0 else []) + (
                ["loss_semantic"] if self.semantic_loss_weight > 0 else [])
            return {name: batch["zero"] for name in names}
        labels = batch["voxel_semantics"]
        mask = batch["mask_camera"] if self.use_mask else None
        ignore = self.grid.ignore_label
        if ACTIVE_MASK_KEY in batch:
            labels, mask = selected_voxels(labels, mask, batch[ACTIVE_MASK_KEY], ignore)
        out = {"loss_occ": occupancy_loss(outputs.logits, labels, mask, self.class_weights, ignore)}
        out.update(self.auxiliary_terms(outputs, batch, labels, mask))
        return out

    def auxiliary_terms(self, outputs: OccOutputs, batch: Mapping[str, torch.Tensor], labels: torch.Tensor,
                        mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The affinity, depth and per-pixel class terms, shared by every family built on this criterion."""
        ignore = self.grid.ignore_label
        out: dict[str, torch.Tensor] = {}
        if self.affinity_loss_weight > 0:
            out["loss_affinity"] = self.affinity_loss_weight * affinity_loss(
                outputs.logits, labels, mask, self.grid.free_label, ignore)
        rays = None
        if self.uses_ray_targets:
            start, stop, _ = self.depth_bins
            # The rays of the occupancy targets stop where the depth bins do.
            rays = ray_targets({**outputs.geometry, "voxel_semantics": labels}, self.input_size, self.downsample,
                               (float(start), float(stop)), self.grid)
        if self.depth_loss_weight > 0:
            if self.depth_target == "occupancy":
                loss = cell_depth_loss(outputs.depth, rays[0], self.depth_bins, self.sid)
            else:
                loss = depth_loss(outputs.depth, batch["gt_depth"], self.downsample, self.depth_bins, self.sid)
            out["loss_depth"] = self.depth_loss_weight * loss
        if self.semantic_loss_weight > 0:
            if outputs.semantic is None:
                raise ValueError("semantic_loss_weight > 0 needs the model's semantic_head logits "
                                 "(OccOutputs.semantic); build the model with the same config")
            out["loss_semantic"] = self.semantic_loss_weight * semantic_loss(outputs.semantic, rays[1],
                                                                             self.class_weights, ignore)
        return out

    def extra_repr(self) -> str:
        terms = [f"occ(mask={self.use_mask}, weighted={self.class_weights is not None})"]
        if self.affinity_loss_weight > 0:
            terms.append(f"{self.affinity_loss_weight}·affinity")
        if self.depth_loss_weight > 0:
            terms.append(f"{self.depth_loss_weight}·depth({self.depth_target})")
        if self.semantic_loss_weight > 0:
            terms.append(f"{self.semantic_loss_weight}·semantic")
        return " + ".join(terms)


def selected_voxels(labels: torch.Tensor, mask: torch.Tensor | None, selected: torch.Tensor, ignore_label: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, mask) where only the ``selected`` voxels supervise: every other voxel's label becomes
    ``ignore_label``, so no term built on the labels (the ray targets of the depth and per-pixel class
    terms included) reads it, and it leaves the mask, so the cross-entropy is averaged over the selected
    voxels (inside the camera mask when it is used). EFFOcc passes its selection as the loss mask
    (EFFOcc@9544ca0 mmdet3d/models/detectors/active_fusionocc.py, ActiveFlashFusionOCC, ``activate_al``)."""
    selected = selected.to(labels.device).bool()
    labels = torch.where(selected, labels, torch.full_like(labels, ignore_label))
    return labels, selected if mask is None else (mask > 0) & selected


def reads_voxel_selection(criterion: nn.Module) -> bool:
    """Whether ``criterion`` honours ``active_mask`` (criteria that override ``forward`` do not)."""
    return isinstance(criterion, OccupancyCriterion) and type(criterion).forward is OccupancyCriterion.forward


def _labeled_only(outputs: OccOutputs, batch: Mapping[str, torch.Tensor]
                  ) -> tuple[OccOutputs | None, Mapping[str, torch.Tensor]]:
    """The outputs and batch of the samples whose scene is labelled (``labeled`` (B,) bool, set by the
    data pipeline for a run on a fraction of the labels). The supervised terms are computed on these
    alone, so nothing of an unlabelled sample (its label file may hold anything) reaches them; the
    normalisers are those of the labelled samples, as if the others were not in the batch (EFFOcc@9544ca0
    mmdet3d/models/detectors/distill_occ2d.py, DistillFlashBEVDetOCC: ``use_with_label``). No labelled
    sample: (None, {"zero": 0 with the graph}).
    """
    labeled = batch["labeled"].reshape(-1).bool()
    b = labeled.shape[0]
    if bool(labeled.all()):
        return outputs, {k: v for k, v in batch.items() if k != "labeled"}
    if not bool(labeled.any()):
        return None, {"zero": outputs.logits.sum() * 0.0}
    idx = labeled.nonzero().squeeze(1)

    def take(value):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == b:
            return value.index_select(0, idx.to(value.device))
        if isinstance(value, list) and len(value) == b:
            return [value[i] for i in idx.tolist()]
        return value

    def take_views(value):  # (B·N, ...) per-camera tensors
        if value is None:
            return None
        views = value.reshape(b, -1, *value.shape[1:]).index_select(0, idx.to(value.device))
        return views.reshape(-1, *value.shape[1:])

    sub = OccOutputs(take(outputs.logits), take_views(outputs.depth), take_views(outputs.context),
                     take_views(outputs.semantic), {k: take(v) for k, v in outputs.geometry.items()},
                     None if outputs.bev is None else take(outputs.bev))
    return sub, {k: take(v) for k, v in batch.items() if k != "labeled"}

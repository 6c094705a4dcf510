"""SparseOcc's 21 loss terms (SparseOcc@af4d9df models/sparseocc_head.py, SparseOccHead.loss_single, and
loaders/pipelines/loading.py, LoadOccGTFromFile for the GT segments).

* Voxel decoder, per level i: ``loss_sem_lovasz_i`` (all kept fine voxels, 255 included), then without
  255: ``loss_geo_scal_i``, ``loss_sem_scal_i``, ``loss_sem_ce_i`` (1/ln(f + 0.001) class weights). Each
  kept cell passes its logits to every full-resolution voxel under it (the GT is not downsampled).
* Mask decoder, per prediction set i: ``loss_mask_i``, ``loss_dice_mask_i``, ``loss_class_i`` against the
  GT segments on the final voxels, after Hungarian matching.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flashocc.grid import OCC3D_CLASS_FREQUENCIES, OccGrid
from flashocc.models.sparseocc.config import PANO_INSTANCE_CLASSES
from flashocc.models.sparseocc.losses import (class_loss, geo_scal_loss, lovasz_softmax, mask_losses,
                                              sem_scal_loss, weighted_ce)
from flashocc.models.sparseocc.matching import hungarian_match
from flashocc.models.sparseocc.voxel_decoder import VoxelLevel


def sparseocc_class_weights(frequencies: tuple[int, ...] = OCC3D_CLASS_FREQUENCIES) -> torch.Tensor:
    """1 / ln(f + 0.001) in float64, cast to the logits' dtype where used (upstream NUSC_CLASS_FREQ)."""
    return 1.0 / torch.log(torch.tensor(frequencies, dtype=torch.float64) + 0.001)


def fine_voxels(level: VoxelLevel, grid_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's kept cells (K, 3) at ``level.scale`` -> the full-resolution voxels under them (K·s³, 3)
    and, per voxel, the index of its cell; in x-major order like upstream's dense boolean indexing."""
    s = level.scale
    coords = level.coords
    offsets = torch.stack(torch.meshgrid(*[torch.arange(s, device=coords.device)] * 3, indexing="ij"), -1).reshape(-1, 3)
    fine = (coords[:, None, :] * s + offsets[None]).reshape(-1, 3)
    cell = torch.arange(coords.shape[0], device=coords.device).repeat_interleave(offsets.shape[0])
    _, dy, dz = grid_shape
    order = torch.argsort((fine[:, 0] * dy + fine[:, 1]) * dz + fine[:, 2])
    return fine[order], cell[order]


def gt_segments(semantics: torch.Tensor, instances: torch.Tensor | None, free_label: int,
                instance_classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments of one sample's voxels (any shape, e.g. the K final voxels): (ids like ``semantics``, −1 =
    none; classes (M,)). Numbered in class order; a class in ``instance_classes`` gives one segment per
    instance id ≥ 1 (ascending), any other present class one segment (upstream LoadOccGTFromFile).
    Official bug (LoadOccGTFromFile stores ids as uint8 with 255 = free): a 256th segment collides with
    free; ours are int64 without a limit."""
    ids = torch.full_like(semantics, -1, dtype=torch.long)
    classes = []
    for c in range(free_label):
        where = semantics == c
        if not bool(where.any()):
            continue
        if c in instance_classes and instances is not None:
            for inst in torch.unique(instances[where]).tolist():
                if inst <= 0:
                    continue  # thing voxels outside every instance belong to no segment
                ids[where & (instances == inst)] = len(classes)
                classes.append(c)
        else:
            ids[where] = len(classes)
            classes.append(c)
    return ids, torch.tensor(classes, dtype=torch.long, device=semantics.device)


class SparseOccCriterion(nn.Module):
    def __init__(self, grid: OccGrid, panoptic: bool = False, loss_mask_weight: float = 5.0,
                 loss_dice_weight: float = 5.0, loss_class_weight: float = 2.0, cost_class: float = 2.0,
                 cost_mask: float = 5.0, cost_dice: float = 5.0) -> None:
        super().__init__()
        self.grid = grid
        self.instance_classes = PANO_INSTANCE_CLASSES if panoptic else ()
        self.loss_mask_weight, self.loss_dice_weight, self.loss_class_weight = (loss_mask_weight, loss_dice_weight,
                                                                                 loss_class_weight)
        self.costs = (cost_class, cost_mask, cost_dice)
        self._class_weights = sparseocc_class_weights()  # not a buffer: official checkpoints have no such key

    def voxel_level_losses(self, level: VoxelLevel, semantics: torch.Tensor) -> dict[str, torch.Tensor]:
        """One sample's four terms for one voxel-decoder level; semantics (Dx, Dy, Dz)."""
        fine, cell = fine_voxels(level, self.grid.shape)
        logits = level.logits[cell]
        gt = semantics[fine[:, 0], fine[:, 1], fine[:, 2]].long()
        out = {"loss_sem_lovasz": lovasz_softmax(torch.softmax(logits, dim=1), gt)}
        keep = gt != self.grid.ignore_label
        logits, gt = logits[keep], gt[keep]
        out["loss_geo_scal"] = geo_scal_loss(logits, gt, self.grid.free_label)
        out["loss_sem_scal"] = sem_scal_loss(logits, gt)
        out["loss_sem_ce"] = weighted_ce(logits, gt, self._class_weights)
        return out

    def forward(self, outs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if "voxel_semantics" not in batch:
            raise KeyError("SparseOcc training needs batch['voxel_semantics'] (B, Dx, Dy, Dz) labels, 255 = ignore")
        semantics = batch["voxel_semantics"]
        instances = batch.get("voxel_instances")
        if self.instance_classes and instances is None:
            raise KeyError("panoptic SparseOcc training needs batch['voxel_instances'] (B, Dx, Dy, Dz) instance "
                           "ids (0 = none), the Occ3D-panoptic 'instances'")
        levels: list[VoxelLevel] = outs["voxel_levels"]
        b = semantics.shape[0]
        losses: dict[str, torch.Tensor] = {}
        for i, level in enumerate(levels):
            for j in range(b):
                one = VoxelLevel(level.coords[j], level.logits[j], level.feats[j], level.scale)
                for key, value in self.voxel_level_losses(one, semantics[j]).items():
                    name = f"{key}_{i}"
                    losses[name] = losses.get(name, 0) + value / b
        # GT segments on the final voxels; segments without a kept voxel are dropped (upstream drops and
        # compacts them after gathering).
        occ_loc = levels[-1].coords
        segments = []
        for j in range(b):
            loc = occ_loc[j]
            sem_k = semantics[j][loc[:, 0], loc[:, 1], loc[:, 2]].long()
            inst_k = instances[j][loc[:, 0], loc[:, 1], loc[:, 2]].long() if instances is not None else None
            segments.append(gt_segments(sem_k, inst_k, self.grid.free_label, self.instance_classes))
        # A = number of segments in the batch, at least 1 (upstream also averages it over GPUs).
        avg = max(float(sum(len(c) for _, c in segments)), 1.0)
        for i, (mask_pred, class_pred) in enumerate(zip(outs["mask_preds"], outs["class_preds"])):
            total = {"mask": 0, "dice": 0, "class": 0}
            for j, (ids, classes) in enumerate(segments):
                q_idx, s_idx = hungarian_match(mask_pred[j], class_pred[j], ids, classes, *self.costs)
                q_idx, s_idx = q_idx.to(ids.device), s_idx.to(ids.device)
                targets = ids[None, :] == s_idx[:, None]  # (M, K)
                bce, dice = mask_losses(mask_pred[j][q_idx], targets, avg)
                target_classes = torch.full((class_pred.shape[1],), class_pred.shape[2], dtype=torch.long,
                                            device=ids.device)
                target_classes[q_idx] = classes[s_idx]
                # mmdet FocalLoss(loss_weight=2.0) inside, loss_cls_weight outside: 4x with the official 2.
                cls = 2.0 * class_loss(class_pred[j], target_classes, avg)
                total["mask"] = total["mask"] + bce * self.loss_mask_weight
                total["dice"] = total["dice"] + dice * self.loss_dice_weight
                total["class"] = total["class"] + cls * self.loss_class_weight
            losses[f"loss_mask_{i}"] = total["mask"]
            losses[f"loss_dice_mask_{i}"] = total["dice"]
            losses[f"loss_class_{i}"] = total["class"]
        return losses


__all__ = ["SparseOccCriterion", "gt_segments", "fine_voxels", "sparseocc_class_weights"]

"""From mask-transformer outputs to labels: the semantic (MaskFormer) and panoptic (Mask2Former) merges,
and the dense grid where every voxel not kept by the voxel decoder is free.

Upstream: SparseOcc@af4d9df models/sparseocc_head.py, SparseOccHead.merge_semseg / merge_panoseg_single;
models/sparseocc.py, SparseOcc.forward_test (coordinates and labels stored as uint8).
"""
from __future__ import annotations

import torch

from flashocc.grid import OccGrid

THING_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "motorcycle", "bicycle", "pedestrian")


def merge_semantic(class_logits: torch.Tensor, mask_logits: torch.Tensor, free_label: int,
                   score_threshold: float = 0.3) -> torch.Tensor:
    """(B, Q, C) class logits, (B, Q, K) mask logits -> (B, K) labels: s[c, n] = Σ_q P[q, c]·σ(m[q, n]) with
    P = σ(class) zeroed for queries whose best P ≤ threshold; argmax, or free where max s < 0.01."""
    prob = class_logits.sigmoid()
    prob = torch.where((prob.max(dim=-1).values > score_threshold)[..., None], prob, torch.zeros_like(prob))
    scores = torch.einsum("bqc,bqn->bcn", prob, mask_logits.sigmoid())
    best, label = scores.max(dim=1)
    return torch.where(best < 0.01, torch.full_like(label, free_label), label)


def merge_panoptic(class_logits: torch.Tensor, mask_logits: torch.Tensor, grid: OccGrid,
                   score_threshold: float = 0.3, overlap_threshold: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """-> instance ids (B, K) int16 (0 = none) and semantics (B, K) uint8 (free where unassigned).

    Each voxel goes to argmax_q(score_q·σ(m_q)) over the queries scoring > threshold; a query's segment is
    its argmax voxels with σ ≥ 0.5, skipped if they are < ``overlap_threshold`` of its σ ≥ 0.5 voxels.
    Things get new ids 1, 2, ...; a stuff class's later segments join its first segment's id.
    """
    insts, sems = [], []
    things = {grid.class_names.index(n) for n in THING_CLASSES if n in grid.class_names}
    for cls_b, mask_b in zip(class_logits.sigmoid(), mask_logits.sigmoid()):
        scores, labels = cls_b.max(dim=-1)
        keep = (labels != grid.free_label) & (scores > score_threshold)
        cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_b[keep]
        k = mask_b.shape[-1]
        inst = torch.zeros(k, dtype=torch.int32, device=mask_b.device)
        sem = torch.full((k,), grid.free_label, dtype=torch.int32, device=mask_b.device)
        segment, stuff_ids = 0, {grid.free_label: 0}
        if cur_masks.shape[0]:
            owner = (cur_scores[:, None] * cur_masks).argmax(dim=0)
            for j, cls in enumerate(cur_classes.tolist()):
                mine = owner == j
                strong = cur_masks[j] >= 0.5
                mask = mine & strong
                area, original = int(mine.sum()), int(strong.sum())
                if not (area > 0 and original > 0 and bool(mask.any())) or area / original < overlap_threshold:
                    continue
                if cls not in things:
                    if cls in stuff_ids:
                        # Official quirk (merge_panoseg_single): a stuff class's later segment takes the
                        # first segment's id but keeps semantics free (the `continue` skips the label).
                        inst[mask] = stuff_ids[cls]
                        continue
                    stuff_ids[cls] = segment + 1
                segment += 1
                inst[mask] = segment
                sem[mask] = cls
        insts.append(inst)
        sems.append(sem)
    return torch.stack(insts).to(torch.int16), torch.stack(sems).to(torch.uint8)


def to_dense(occ_loc: torch.Tensor, values: torch.Tensor, grid_shape: tuple[int, int, int], fill: int) -> torch.Tensor:
    """Scatter (B, K) values at (B, K, 3) voxel indices into (B, Dx, Dy, Dz) filled with ``fill``."""
    b = occ_loc.shape[0]
    dense = values.new_full((b, *grid_shape), fill)
    bi = torch.arange(b, device=occ_loc.device)[:, None].expand_as(occ_loc[..., 0])
    dense[bi, occ_loc[..., 0], occ_loc[..., 1], occ_loc[..., 2]] = values
    return dense


__all__ = ["merge_semantic", "merge_panoptic", "to_dense", "THING_CLASSES"]

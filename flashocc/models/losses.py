"""Losses: masked occupancy cross-entropy, the depth losses and the training aids; ``criterion.py``
combines them. Official behaviour: FlashOCC@4084861 projects/mmdet3d_plugin/models/dense_heads/bev_occ_head.py,
BEVOCCHead2D.loss, and models/necks/view_transformer.py, LSSViewTransformerBEVDepth.get_depth_loss
(docs/official-behaviour.md, "Occupancy loss" and "LiDAR depth targets").
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def class_balance_weights(frequencies: Sequence[int]) -> torch.Tensor:
    """w_c = 1 / log(f_c + 0.001) from per-class voxel counts (official class_balance of BEVOCCHead2D)."""
    return torch.tensor([1.0 / math.log(f + 0.001) for f in frequencies], dtype=torch.float32)


def occupancy_loss(
    logits: torch.Tensor,
    voxel_semantics: torch.Tensor,
    mask_camera: torch.Tensor | None,
    class_weights: torch.Tensor | None = None,
    ignore_label: int = 255,
) -> torch.Tensor:
    """Cross-entropy over voxels, averaged over the camera-visible voxels of the *whole batch*.

    logits (B, Dx, Dy, Dz, K); voxel_semantics (B, Dx, Dy, Dz) labels; mask_camera 0/1 or None (all
    voxels count). With ``class_weights`` the normaliser is Σ_c count_c·w_c over the counted voxels,
    as the official head computes it.
    """
    num_classes = logits.shape[-1]
    flat = logits.reshape(-1, num_classes)
    weight = class_weights.to(flat.device) if class_weights is not None else None
    visible, counted, counted_labels = _counted_voxels(voxel_semantics, mask_camera, ignore_label)
    loss_sum = F.cross_entropy(flat.index_select(0, counted).float(), counted_labels, weight=weight, reduction="sum")
    # Ignored voxels inside the mask count in the unweighted normaliser, as in the official head.
    normaliser = visible.sum() if weight is None else weight[counted_labels].sum()
    return loss_sum / (normaliser + torch.finfo(torch.float32).eps)


def _counted_voxels(voxel_semantics: torch.Tensor, mask_camera: torch.Tensor | None, ignore_label: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(visible mask, flat indices, labels) of the voxels a loss counts: visible and not ignored.

    Only these go through the softmax (a quarter of the grid under the camera mask on the demo data):
    the same sum as masking afterwards, at a fraction of the cost.
    """
    labels = voxel_semantics.reshape(-1).long()
    visible = torch.ones_like(labels, dtype=torch.bool) if mask_camera is None else mask_camera.reshape(-1) > 0
    counted = (visible & (labels != ignore_label)).nonzero().squeeze(1)
    return visible, counted, labels[counted]


def affinity_loss(
    logits: torch.Tensor,
    voxel_semantics: torch.Tensor,
    mask_camera: torch.Tensor | None,
    free_label: int,
    ignore_label: int = 255,
) -> torch.Tensor:
    """Scene-class affinity: per-class soft precision, recall and specificity pushed towards 1.

    The idea of MonoScene's ``sem_scal`` + ``geo_scal`` losses (Cao & de Charette, CVPR 2022),
    written from the paper: cross-entropy scores each voxel alone, while mIoU is set-level per class;
    these terms see a whole class at once, so a class smeared over many free voxels (low precision)
    is penalised as a class. Averaged over the classes present in the counted voxels of the whole
    batch, plus the same three terms for occupied-vs-free.
    """
    num_classes = logits.shape[-1]
    _, counted, labels = _counted_voxels(voxel_semantics, mask_camera, ignore_label)
    if counted.numel() == 0:
        return logits.sum() * 0.0
    probs = torch.softmax(logits.reshape(-1, num_classes).index_select(0, counted).float(), dim=1)
    onehot = F.one_hot(labels, num_classes).float()
    present = onehot.sum(0) > 0
    semantic = _affinity_terms(probs[:, present], onehot[:, present]).mean()
    occupied_prob = 1.0 - probs[:, free_label:free_label + 1]
    geometric = _affinity_terms(occupied_prob, (labels != free_label).float()[:, None])
    return semantic + geometric.squeeze(0)


def _affinity_terms(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(V, C) probabilities and 0/1 targets -> (C,) sum of -log precision, recall and specificity."""
    eps = 1e-5
    hit = (p * t).sum(0)
    precision = hit / (p.sum(0) + eps)
    recall = hit / (t.sum(0) + eps)
    negatives = (1 - t).sum(0)
    specificity = ((1 - p) * (1 - t)).sum(0) / (negatives + eps)
    loss = -torch.log(precision.clamp_min(eps)) - torch.log(recall.clamp_min(eps))
    # A class covering every counted voxel has no negatives: its specificity is undefined, not 0.
    return loss - torch.where(negatives > 0, torch.log(specificity.clamp_min(eps)), torch.zeros_like(loss))


def downsample_gt_depth(gt_depth: torch.Tensor, downsample: int) -> torch.Tensor:
    """(B, N, H, W) metres -> (B·N, H/ds, W/ds): the nearest non-zero depth per ds x ds patch (0 = none)."""
    b, n, h, w = gt_depth.shape
    x = gt_depth.reshape(b * n, h // downsample, downsample, w // downsample, downsample)
    x = x.permute(0, 1, 3, 2, 4).reshape(b * n, h // downsample, w // downsample, downsample * downsample)
    x = torch.where(x == 0, torch.full_like(x, 1e5), x).min(dim=-1).values
    return torch.where(x >= 1e5, torch.zeros_like(x), x)


def depth_bin_targets(depth: torch.Tensor, start: float, stop: float, step: float, num_bins: int, sid: bool) -> torch.Tensor:
    """One-hot (…, D) targets; rows of zeros where there is no valid depth (official
    LSSViewTransformerBEVDepth.get_downsampled_gt_depth).

    Official quirk: the bin index is truncated with .long(), so bin k covers [start + k·step, start + (k+1)·step).
    """
    if sid:
        idx = (torch.log(depth) - math.log(start)) * (num_bins - 1) / math.log((stop - 1) / start) + 1
    else:
        idx = (depth - (start - step)) / step
    idx = torch.where((idx < num_bins + 1) & (idx >= 0) & (depth > 0), idx, torch.zeros_like(idx)).long()
    return F.one_hot(idx, num_classes=num_bins + 1)[..., 1:].float()


def depth_loss(depth_probs: torch.Tensor, gt_depth: torch.Tensor, downsample: int,
               bins: tuple[float, float, float], sid: bool) -> torch.Tensor:
    """BCE between predicted depth probabilities (B·N, D, fH, fW) and one-hot LiDAR depth bins,
    over foreground pixels only, summed over D and divided by max(1, #foreground)."""
    return cell_depth_loss(depth_probs, downsample_gt_depth(gt_depth, downsample), bins, sid)


def cell_depth_loss(depth_probs: torch.Tensor, cell_depth: torch.Tensor, bins: tuple[float, float, float],
                    sid: bool) -> torch.Tensor:
    """``depth_loss`` with one depth per feature cell (B·N, fH, fW) already given (0 = none)."""
    num_bins = depth_probs.shape[1]
    target = depth_bin_targets(cell_depth, *bins, num_bins=num_bins, sid=sid)
    target = target.reshape(-1, num_bins)
    probs = depth_probs.permute(0, 2, 3, 1).reshape(-1, num_bins).float()
    foreground = target.max(dim=1).values > 0
    with torch.autocast(device_type=probs.device.type, enabled=False):
        loss = F.binary_cross_entropy(probs[foreground], target[foreground], reduction="sum")
    return loss / max(1.0, float(foreground.sum()))


def semantic_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None,
                  ignore_label: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy of the auxiliary image head: logits (B·N, K, fH, fW), labels (B·N, fH, fW)."""
    weight = class_weights.to(logits.device) if class_weights is not None else None
    if not (labels != ignore_label).any():  # the mean over no pixels would be NaN
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore_label)

"""SparseOcc loss terms, one sample at a time as upstream computes them.

Upstream: SparseOcc@af4d9df models/loss_utils.py (lovasz_softmax_flat, compute_scal_loss, GeoScalLoss,
SemScalLoss, CE_ssc_loss, dice_loss, sigmoid_ce_loss, Mask2FormerLoss) and mmdet 2.28's sigmoid
``FocalLoss`` that Mask2FormerLoss builds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
_MMDET_EPS = torch.finfo(torch.float32).eps  # mmdet weight_reduce_loss: sum / (avg_factor + eps)


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax over the classes present in ``labels`` (no ignore: any other label, e.g. 255, is
    background for every class). probs (P, C), labels (P,)."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        intersection = gts - fg_sorted.cumsum(0)
        union = gts + (1 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        if len(jaccard) > 1:
            jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors_sorted, jaccard))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def _bce_one(x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(x, torch.ones_like(x))


def scal_term(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MonoScene scal for one class: BCE(precision, 1) + BCE(recall, 1) + BCE(specificity, 1), each only
    when its denominator is > 0; zero unless the class is present (upstream compute_scal_loss)."""
    t = target.to(p.dtype)
    loss = p.sum() * 0.0
    if t.sum() == 0:
        return loss
    nominator = (p * t).sum()
    if p.sum() > 0:
        loss = loss + _bce_one(nominator / p.sum())
    loss = loss + _bce_one(nominator / t.sum())
    if (1 - t).sum() > 0:
        loss = loss + _bce_one(((1 - p) * (1 - t)).sum() / (1 - t).sum())
    return loss


def geo_scal_loss(logits: torch.Tensor, gt: torch.Tensor, free_label: int) -> torch.Tensor:
    """Geometry scal: non-empty = 1 − p_free, target gt ≠ free. logits (K, C), gt (K,) without 255."""
    p = 1 - F.softmax(logits, dim=1)[:, free_label]
    return scal_term(p, gt != free_label)


def sem_scal_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Semantic scal averaged over the classes present in ``gt``."""
    probs = F.softmax(logits, dim=1)
    present = [c for c in range(logits.shape[1]) if bool((gt == c).any())]
    if not present:
        # Official bug (SemScalLoss.forward divides by a zero count): NaN; no voxels, no loss here.
        return logits.sum() * 0.0
    return torch.stack([scal_term(probs[:, c], gt == c) for c in present]).sum() / len(present)


def weighted_ce(logits: torch.Tensor, gt: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted CE, mean normalised by the weights (nn.CrossEntropyLoss(weight=...))."""
    if gt.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, gt, weight=weights.to(logits))


def sigmoid_focal(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Elementwise mmdet sigmoid focal loss (α 0.25, γ 2)."""
    p = logits.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    weight = (FOCAL_ALPHA * onehot + (1 - FOCAL_ALPHA) * (1 - onehot)) * pt.pow(FOCAL_GAMMA)
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none") * weight


def mask_losses(src_masks: torch.Tensor, tgt_masks: torch.Tensor, avg_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Matched (M, K) mask logits and binary targets -> (Σ mean_K BCE / A, Σ dice / A)."""
    t = tgt_masks.to(src_masks.dtype)
    bce = F.binary_cross_entropy_with_logits(src_masks, t, reduction="none").mean(dim=1).sum() / avg_factor
    p = src_masks.sigmoid()
    dice = 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)
    return bce, dice.sum() / avg_factor


def class_loss(class_logits: torch.Tensor, target_classes: torch.Tensor, avg_factor: float) -> torch.Tensor:
    """Sigmoid focal over all (Q, C) logits; ``target_classes`` (Q,) with C = "no class" (all-zero row);
    summed and divided by A as mmdet's FocalLoss with avg_factor."""
    c = class_logits.shape[-1]
    onehot = F.one_hot(target_classes, c + 1)[:, :c].to(class_logits.dtype)
    return sigmoid_focal(class_logits, onehot).sum() / (avg_factor + _MMDET_EPS)


__all__ = ["lovasz_softmax", "scal_term", "geo_scal_loss", "sem_scal_loss", "weighted_ce", "sigmoid_focal",
           "mask_losses", "class_loss"]

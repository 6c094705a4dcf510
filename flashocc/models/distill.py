"""Fusion -> camera distillation (EFFOcc ``fgbg_bev``): its settings and its loss terms.

A frozen teacher (any model that gives a fused BEV feature before its head and occupancy logits,
e.g. the EFFOcc LiDAR-camera model) runs on the same batch as a camera-only student; the engine
(``flashocc.engine.distill``) puts the teacher's outputs into the batch as ``teacher_bev`` (B, C, Dy, Dx)
and ``teacher_logits`` (B, Dx, Dy, Dz, K), and ``DistillLoss`` turns them into named terms beside the
student's own supervised losses (EFFOcc@9544ca0 mmdet3d/models/detectors/distill_occ2d.py,
DistillFlashBEVDetOCC.forward_train with ``distill_type='fgbg_bev'``):

  loss_distill_bev_{fg,bg,empty}    squared error of the BEV features over foreground / background /
                                    empty BEV columns, each divided by (#columns x C)
  loss_distill_logit_{fg,bg,empty}  1 - cosine of the per-voxel class-logit vectors, averaged over the
                                    foreground / background / empty voxels

A column is foreground when one of its voxels is an object class (id < ``foreground_classes``),
background when one is a stuff class (the rest but free), empty when all are free; a column can be
both foreground and background. The regions come from the ground truth for labelled samples and
from the teacher's argmax for unlabelled ones (``labeled`` batch key), which is how unlabelled
scenes teach the student. The student's supervised losses never see unlabelled samples
(``OccupancyCriterion``). This module only reads tensors: models never import the engine.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flashocc.errors import ConfigError

TEACHER_KEYS: tuple[str, ...] = ("teacher_bev", "teacher_logits")
REGIONS: tuple[str, ...] = ("fg", "bg", "empty")


@dataclass(frozen=True)
class DistillConfig:
    """The ``distill`` section of a run: the teacher and the weight of every distillation term.

    ``teacher`` is a preset name or a run-config YAML; empty means no distillation. ``inherit_head``
    starts the student's occupancy head from the teacher's (the official students widen their BEV
    neck to the teacher's 512 channels for this: preset ``flashocc-r50-distill``).
    """

    teacher: str = ""
    teacher_checkpoint: str = ""
    inherit_head: bool = True
    foreground_classes: int = 11        # ids below are objects (Occ3D: others .. truck); the rest but free: stuff
    bev_fg_weight: float = 1.0
    bev_bg_weight: float = 1.0
    bev_empty_weight: float = 1.0
    logit_fg_weight: float = 1.0
    logit_bg_weight: float = 1.0
    logit_empty_weight: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            ("teacher", isinstance(self.teacher, str), "a preset name or a run-config YAML ('' = no teacher)"),
            ("teacher_checkpoint", isinstance(self.teacher_checkpoint, str), "a checkpoint path"),
            ("inherit_head", isinstance(self.inherit_head, bool), "true or false"),
            ("foreground_classes", isinstance(self.foreground_classes, int) and not isinstance(self.foreground_classes, bool)
             and self.foreground_classes >= 1, "an integer >= 1 (class ids below it are foreground)"),
        ]
        checks += [(name, _weight(getattr(self, name)), "a finite weight >= 0") for name in self.weight_names()]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"distill.{name}: expected {expected}, found {getattr(self, name)!r}")

    def check(self) -> DistillConfig:
        """The two fields that go together (checked when a run starts: overrides set them one at a time)."""
        if self.teacher and not self.teacher_checkpoint:
            raise ConfigError(f"distill.teacher_checkpoint: expected the trained checkpoint of teacher "
                              f"{self.teacher!r} (a randomly initialised teacher teaches nothing), found ''")
        if self.teacher_checkpoint and not self.teacher:
            raise ConfigError(f"distill.teacher: expected the config (preset or run-config YAML) of the teacher "
                              f"in {self.teacher_checkpoint}, found ''")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)

    @staticmethod
    def weight_names() -> tuple[str, ...]:
        return tuple(f"{kind}_{region}_weight" for kind in ("bev", "logit") for region in REGIONS)


def _weight(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def region_classes(voxel_semantics: torch.Tensor, teacher_logits: torch.Tensor,
                   labeled: torch.Tensor | None) -> torch.Tensor:
    """(B, Dx, Dy, Dz) class ids the regions are read from: the ground truth of labelled samples, the
    teacher's argmax elsewhere (``labeled`` None: every sample is labelled)."""
    predicted = teacher_logits.argmax(dim=-1)
    if labeled is None:
        return voxel_semantics.long()
    keep = labeled.bool().view(-1, *([1] * (predicted.dim() - 1)))
    # torch.where never reads the unselected side's values into the result.
    return torch.where(keep, voxel_semantics.long(), predicted)


def voxel_regions(classes: torch.Tensor, foreground_classes: int, free_label: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean (B, Dx, Dy, Dz) foreground / background / empty voxels (ignored ids: none of them)."""
    fg = classes < foreground_classes
    bg = (classes >= foreground_classes) & (classes < free_label)
    return fg, bg, classes == free_label


def column_regions(classes: torch.Tensor, foreground_classes: int, free_label: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean (B, Dx, Dy) BEV columns: any foreground voxel / any background voxel / all voxels free."""
    fg, bg, empty = voxel_regions(classes, foreground_classes, free_label)
    return fg.any(dim=3), bg.any(dim=3), empty.all(dim=3)


def masked_feature_mse(student: torch.Tensor, teacher: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Σ (s − t)² over the columns / (#columns · C); student/teacher (B, C, Dy, Dx), columns (B, Dx, Dy).
    No column: 0 (with the graph kept)."""
    mask = columns.transpose(1, 2).unsqueeze(1).to(student.dtype)           # (B, 1, Dy, Dx)
    squared = (student.float() - teacher.float()) ** 2
    return (squared * mask).sum() / (mask.sum() * student.shape[1]).clamp(min=1.0)


def masked_cosine_distance(student: torch.Tensor, teacher: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """Mean of 1 − cos(student, teacher) over the masked voxels; logits (B, Dx, Dy, Dz, K). None: 0."""
    distance = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    mask = voxels.to(distance.dtype)
    return (distance * mask).sum() / mask.sum().clamp(min=1.0)


class DistillLoss(nn.Module):
    """The six weighted ``fgbg_bev`` terms from the student's outputs and the teacher keys of the batch.
    No parameters and no buffers: attaching it to a criterion changes no checkpoint."""

    def __init__(self, config: DistillConfig, free_label: int) -> None:
        super().__init__()
        self.config = config
        self.free_label = free_label

    def forward(self, student_bev: torch.Tensor, student_logits: torch.Tensor,
                batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        teacher_bev, teacher_logits = batch["teacher_bev"], batch["teacher_logits"]
        if student_bev.shape != teacher_bev.shape or student_logits.shape != teacher_logits.shape:
            raise ValueError(f"distillation needs the student's BEV feature and logits in the teacher's shapes: "
                             f"student {tuple(student_bev.shape)} / {tuple(student_logits.shape)}, teacher "
                             f"{tuple(teacher_bev.shape)} / {tuple(teacher_logits.shape)} (there is no adapter "
                             f"layer: give the student the teacher's BEV neck channels)")
        cfg = self.config
        classes = region_classes(batch["voxel_semantics"], teacher_logits, batch.get("labeled"))
        columns = column_regions(classes, cfg.foreground_classes, self.free_label)
        voxels = voxel_regions(classes, cfg.foreground_classes, self.free_label)
        out = {}
        for region, mask in zip(REGIONS, columns):
            out[f"loss_distill_bev_{region}"] = getattr(cfg, f"bev_{region}_weight") * masked_feature_mse(
                student_bev, teacher_bev, mask)
        for region, mask in zip(REGIONS, voxels):
            out[f"loss_distill_logit_{region}"] = getattr(cfg, f"logit_{region}_weight") * masked_cosine_distance(
                student_logits, teacher_logits, mask)
        return out

    def extra_repr(self) -> str:
        return f"teacher={self.config.teacher!r}"


__all__ = ["DistillConfig", "DistillLoss", "TEACHER_KEYS", "region_classes", "voxel_regions", "column_regions",
           "masked_feature_mse", "masked_cosine_distance"]

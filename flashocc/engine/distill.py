"""Training a camera student from a frozen teacher (EFFOcc ``fgbg_bev`` distillation).

``flashocc train STUDENT --teacher TEACHER --teacher-checkpoint CKPT`` (or ``distill.teacher`` /
``distill.teacher_checkpoint`` in the config): the trainer calls ``setup_distillation`` once, which
builds the teacher from its config, loads its weights (the EMA weights of a flashocc run when present),
freezes it, optionally copies its occupancy head into the student (``distill.inherit_head``) and gives
the student's criterion the distillation terms (``flashocc.models.distill.DistillLoss``). Every step,
``teacher_targets`` runs the teacher in eval mode under ``no_grad`` on the student's batch (LiDAR
included: ``with_teacher_data`` makes the data pipeline load what the teacher reads) and adds its
BEV feature and logits to the batch, so the training loop itself stays one loop (EFFOcc@9544ca0
mmdet3d/models/detectors/distill_occ2d.py, DistillFlashBEVDetOCC.init_weights and forward_train).

The teacher interface is small, so any model can teach: a ``distill_features(batch) -> (bev, logits)``
method, else ``forward_outputs(batch)`` giving ``OccOutputs`` with ``bev`` (B, C, Dy, Dx) and
``logits`` (B, Dx, Dy, Dz, K). The student must produce the same two shapes (no adapter layer).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import nn

from flashocc.config import RunConfig, load_run_config
from flashocc.engine.checkpoint import unwrap_model
from flashocc.engine.evaluate import load_model_for_inference
from flashocc.errors import ConfigError
from flashocc.models.configs import ModelConfig
from flashocc.models.distill import DistillLoss

log = logging.getLogger(__name__)


def teacher_config(cfg: RunConfig) -> ModelConfig:
    """The teacher's model config: ``distill.teacher`` is a preset name or a run-config YAML (a teacher
    run's own ``config.yaml``)."""
    return load_run_config(cfg.distill.teacher).model


def with_teacher_data(cfg: RunConfig, teacher: ModelConfig | None = None) -> RunConfig:
    """``cfg`` whose data pipeline also loads what the teacher reads (LiDAR points, depth images): both
    models run on one batch. Switches are OR-ed, the frame count is the larger; any other requirement
    (the input size above all) must be the same for both, else a ConfigError names the field."""
    if not cfg.distill.enabled:
        return cfg
    teacher = teacher or teacher_config(cfg)
    student_needs = cfg.model.data_requirements()
    merged = {}
    for key, value in teacher.data_requirements().items():
        mine = getattr(cfg.data, key)
        if isinstance(value, bool):
            merged[key] = mine or value
        elif key == "num_adjacent":
            merged[key] = max(mine, value)
        elif key in student_needs and _plain(student_needs[key]) != _plain(value):
            raise ConfigError(f"data.{key}: the student {cfg.model.name} needs {student_needs[key]!r} and the teacher "
                              f"{teacher.name} needs {value!r}; both run on the same batch, so give them the same "
                              f"(e.g. model.{key} of the student)")
        else:
            merged[key] = value
    return replace(cfg, data=replace(cfg.data, **merged))


def _plain(value: object) -> object:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def teacher_features(teacher: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(BEV feature before the head (B, C, Dy, Dx), occupancy logits (B, Dx, Dy, Dz, K)) of any teacher."""
    own = getattr(teacher, "distill_features", None)
    if callable(own):
        return own(batch)
    out = teacher.forward_outputs(batch)
    if out.bev is None:
        raise ValueError(f"{type(teacher).__name__} gives no BEV feature (OccOutputs.bev); a teacher needs one, or a "
                         f"distill_features(batch) method")
    return out.bev, out.logits


@torch.no_grad()
def teacher_targets(teacher: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher's outputs on ``batch`` as batch entries (frozen: eval mode, no graph)."""
    teacher.eval()  # a trainer's model.train() must not reach it (BN statistics, dropout)
    bev, logits = teacher_features(teacher, batch)
    return {"teacher_bev": bev.detach().float(), "teacher_logits": logits.detach().float()}


def load_teacher(cfg: RunConfig, device: torch.device, teacher: ModelConfig | None = None) -> nn.Module:
    """The frozen teacher: built from its config, its checkpoint loaded strictly (EMA weights first)."""
    cfg.distill.check()
    teacher = teacher or teacher_config(cfg)
    run = replace(cfg, model=teacher)
    model = load_model_for_inference(run, cfg.distill.teacher_checkpoint, device, use_ema=True)
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("teacher %s from %s (frozen)", teacher.name, cfg.distill.teacher_checkpoint)
    return model.eval()


def inherit_head(student: nn.Module, teacher: nn.Module) -> None:
    """Copy the teacher's ``occ_head`` into the student's (DistillFlashBEVDetOCC ``inherit_head=True``)."""
    mine, theirs = unwrap_model(student).occ_head.state_dict(), teacher.occ_head.state_dict()
    wrong = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
    if wrong or set(theirs) != set(mine):
        shapes = {k: tuple(theirs[k].shape) if k in theirs else None for k in wrong[:3]}
        raise ConfigError(f"distill.inherit_head: expected a student head shaped like the teacher's, but "
                          f"{wrong[:3]} differ (teacher: {shapes}); widen the student's BEV neck to the teacher's "
                          f"channels (preset flashocc-r50-distill: 512) or set distill.inherit_head=false")
    unwrap_model(student).occ_head.load_state_dict(theirs)


def setup_distillation(cfg: RunConfig, student: nn.Module, device: torch.device) -> nn.Module:
    """Load the teacher, give the student its head (``inherit_head``) and the distillation terms; returns
    the teacher for ``teacher_targets``. The student's checkpoints stay plain (nothing of the teacher)."""
    teacher_cfg = teacher_config(cfg)
    if teacher_cfg.grid != cfg.model.grid:
        raise ConfigError(f"distill.teacher: expected a teacher on the student's grid {cfg.model.grid.shape}, "
                          f"{teacher_cfg.name} has {teacher_cfg.grid.shape}")
    teacher = load_teacher(cfg, device, teacher_cfg)
    if cfg.distill.inherit_head:
        inherit_head(student, teacher)
    core = unwrap_model(student)
    core.criterion.distill = DistillLoss(cfg.distill, cfg.model.grid.free_label)
    return teacher


__all__ = ["teacher_config", "with_teacher_data", "teacher_features", "teacher_targets", "load_teacher",
           "inherit_head", "setup_distillation"]

"""Checkpoint I/O: official mmdet3d/mmcv checkpoints, EMA files and our own, written atomically.

Accepted layouts (FlashOCC@4084861 projects/mmdet3d_plugin/core/hook/ema.py, MEGVIIEMAHook.save_checkpoint;
docs/official-behaviour.md#checkpoint-layouts): ``{'state_dict': ...}`` (mmcv; also EMA files
``epoch_N_ema.pth`` with ``updates``), ``{'model': ...}`` (ours), or a bare state dict. Prefixes
``module.`` (DDP) and ``_orig_mod.`` (torch.compile) are stripped.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from flashocc.atomic import atomic_write
from flashocc.errors import CheckpointError, CheckpointMismatchError
from flashocc.safe_load import torch_load

log = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Official distilled students (EFFOcc@9544ca0 mmdet3d/models/detectors/distill_occ2d.py, DistillFlashBEVDetOCC)
# save their frozen teacher as teacher_model.*: not part of the student, so not loaded into it.
TEACHER_PREFIX = "teacher_model."


@dataclass
class LoadReport:
    """What a load matched: keys that loaded, were missing, unexpected, or had another shape."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, ckpt, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        for title, keys in (("missing in checkpoint", self.missing), ("unexpected in checkpoint", self.unexpected)):
            if keys:
                lines.append(f"{title} ({len(keys)}):")
                lines += [f"  {k}" for k in _group(keys)[:limit]]
        if self.mismatched:
            lines.append(f"shape mismatch ({len(self.mismatched)}):")
            lines += [f"  {k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:limit]]
        return "\n".join(lines)


def _group(keys: list[str]) -> list[str]:
    """Collapse many keys of one module into 'prefix.* (n keys)' so the list stays readable."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.rsplit(".", 2)[0] if k.count(".") >= 2 else k, []).append(k)
    return [v[0] if len(v) == 1 else f"{p}.* ({len(v)} keys)" for p, v in groups.items()]


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu", trusted: bool = False) -> dict[str, torch.Tensor]:
    """Read the model tensors of any supported checkpoint layout, with wrapper prefixes stripped.

    ``trusted=False`` (default) loads with ``weights_only=True``: tensors and plain containers only.
    """
    return extract_state_dict(read_checkpoint(path, map_location, trusted), source=str(path))


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", trusted: bool = False) -> object:
    """The whole checkpoint object (``weights_only`` unless ``trusted``).

    Raises ``MissingFileError`` for a missing file and ``CheckpointError`` naming the file otherwise:
    for a file that asks for a global weights-only loading refuses (the message names it and says how
    to load a file you trust), or for a corrupt, truncated or non-checkpoint file. The loader is shared
    with the bundled weights (flashocc/safe_load.py).
    """
    return torch_load(path, map_location, trusted, what="checkpoint")


def extract_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model tensors of a checkpoint object with wrapper prefixes stripped; ``CheckpointError`` otherwise."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "ema", "model_ema"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj)
            or not all(isinstance(v, torch.Tensor) for v in obj.values())):
        found = type(obj).__name__ if not isinstance(obj, Mapping) else f"a mapping of {len(obj)} entries"
        raise CheckpointError(f"{source}: no state dict found (expected a mapping of names to tensors, or one under "
                              f"'state_dict' / 'model'); found {found}")
    out = {}
    for key, value in obj.items():
        if key.startswith(TEACHER_PREFIX):
            continue
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers (save its state_dict, not the wrapper's)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def convert_official_layout(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Compatibility shim: a model whose official checkpoints store some weights in another layout
    (EFFOcc's spconv kernels) converts them with its ``convert_official_state_dict``; others unchanged."""
    convert = getattr(unwrap_model(model), "convert_official_state_dict", None)
    return convert(state) if callable(convert) else state


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> LoadReport:
    own = unwrap_model(model).state_dict()
    report = LoadReport()
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            report.loaded.append(key)
    report.missing = [k for k in own if k not in state]
    return report


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                    map_location: str | torch.device = "cpu", trusted: bool = False) -> LoadReport:
    """Load official (mmdet3d/mmcv, EMA) or flashocc checkpoints into ``model``.

    ``strict=True``: any missing, unexpected or mis-shaped key raises ``CheckpointMismatchError`` (a
    ``KeyError``) with a readable list and nothing is loaded. ``strict=False``: loads what matches (e.g.
    a BEVDet detection pretrain: its ``pts_bbox_head.*`` is unexpected and its depth_net has another
    shape) and returns the report of what was skipped.
    """
    state = convert_official_layout(model, read_state_dict(path, map_location, trusted))
    report = match_state_dict(model, state)
    if strict and not report.ok:
        raise CheckpointMismatchError(f"{path} does not match the model:\n{report.summary()}")
    unwrap_model(model).load_state_dict({k: state[k] for k in report.loaded}, strict=strict)
    log.info("loaded %s: %s", path, report.summary())
    return report


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves a torn file."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **extra: object) -> Path:
    """Save ``{'model': state_dict, 'preset'/config..., **extra}`` atomically (our format)."""
    core = unwrap_model(model)
    payload = {"model": core.state_dict(), **extra}
    cfg = getattr(core, "config", None)
    if cfg is not None and "model_config" not in payload:
        from dataclasses import asdict

        payload["model_config"] = {k: v for k, v in asdict(cfg).items() if k != "grid"}
    return atomic_torch_save(payload, path)

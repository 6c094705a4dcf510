"""Run configuration: typed dataclasses, YAML files and dotted ``key=value`` overrides.

A run is ``RunConfig(model, data, train, eval)``. ``flashocc train PRESET|CONFIG.yaml key=value ...``
resolves to one: a preset name gives the model section; a YAML file may name a ``preset`` and
override any field. Values of overrides are Python literals (``ast.literal_eval``; never ``eval``),
bare words stay strings. Unknown keys fail with the closest valid key.
"""
from __future__ import annotations

import ast
import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from flashocc.atomic import atomic_write
from flashocc.data.dataset import DataConfig
from flashocc.models.presets import ModelConfig, get_config


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation; defaults are the official schedule (flashocc.md §1.1, §1.6)."""

    epochs: int = 24
    max_iters: int = 0                   # > 0: stop after this many optimiser steps (overrides epochs)
    max_minutes: float = 0.0             # > 0: stop (and checkpoint) after this much training time
    batch_size: int = 4                  # per process and micro-step
    grad_accum_steps: int = 1            # micro-steps per optimiser step
    workers: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 5.0               # max L2 norm; 0 disables
    warmup_iters: int = 200
    warmup_ratio: float = 0.001
    schedule: Literal["step", "cosine", "constant"] = "step"   # cosine + max_minutes: ends at the budget
    lr_steps: tuple[int, ...] = (24,)    # "step": epochs at which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    min_lr_ratio: float = 0.0            # "cosine": final lr / lr
    ema: bool = True
    ema_decay: float = 0.999
    ema_ramp: float = 2000.0             # d = decay · (1 − exp(−updates / ramp))
    ema_init_updates: int = 10560        # official MEGVIIEMAHook init_updates
    amp: Literal["none", "bf16", "fp16"] = "none"   # autocast on CUDA; ignored on CPU
    grad_checkpoint: bool = False        # checkpoint the image backbone blocks
    channels_last: bool = False
    sync_bn: bool = False                # CUDA only (torch SyncBatchNorm has no CPU kernel)
    checkpoint_every_iters: int = 0      # > 0: also save every N optimiser steps
    log_every: int = 10
    seed: int = 0
    init_from: str = ""                  # checkpoint to initialise from (non-strict, reported)
    eval_every_epochs: int = 0           # > 0: evaluate on the val split every N epochs (mIoU)


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 1
    workers: int = 2
    metrics: tuple[str, ...] = ("miou", "rayiou")
    use_ema: bool = True                 # evaluate the EMA weights when the checkpoint has them


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train_infos: str = "infos_train.pkl"   # relative to --data unless absolute
    val_infos: str = "infos_val.pkl"


def default_run_config(preset: str) -> RunConfig:
    model = get_config(preset)
    return RunConfig(model=model, data=data_config_for(model, DataConfig()))


def data_config_for(model: ModelConfig, data: DataConfig) -> DataConfig:
    """The data settings a model needs: its input size, the adjacent frames of temporal models and
    the LiDAR depth maps of a depth loss."""
    from flashocc.models.temporal import data_requirements

    return replace(data, input_size=model.input_size, **data_requirements(model))


def load_run_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A preset name or a YAML file, then ``key=value`` overrides; data.input_size follows the model."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
        preset = raw.pop("preset", None) or raw.get("model", {}).get("name")
        if not preset:
            raise ValueError(f"{path}: name the model with 'preset: <name>' (see 'flashocc models')")
        cfg = default_run_config(preset)
        cfg = apply_overrides(cfg, _flatten(raw), source=str(path))
    else:
        cfg = default_run_config(spec)
    cfg = apply_overrides(cfg, parse_overrides(overrides), source="command line")
    # Model overrides (input size, temporal, depth loss) decide what the data must provide.
    return replace(cfg, data=data_config_for(cfg.model, cfg.data))


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.lr=2e-4", "train.amp = bf16"]`` -> {"train.lr": 2e-4, "train.amp": "bf16"}."""
    out: dict[str, Any] = {}
    for item in _merge_spaced_equals(list(items)):
        if "=" not in item:
            raise ValueError(f"override '{item}' is not key=value (e.g. train.lr=2e-4)")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _literal(value)
    return out


def _merge_spaced_equals(items: list[str]) -> list[str]:
    # Tolerate "key = value" split by the shell into three words.
    merged: list[str] = []
    i = 0
    while i < len(items):
        if i + 2 < len(items) and items[i + 1] == "=":
            merged.append(f"{items[i]}={items[i + 2]}")
            i += 3
        else:
            merged.append(items[i])
            i += 1
    return merged


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as bf16 or a path


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "grid":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str = "override") -> Any:
    for key, value in overrides.items():
        cfg = _set(cfg, key.split("."), value, key, source)
    return cfg


def _set(obj: Any, path: list[str], value: Any, full_key: str, source: str) -> Any:
    names = {f.name: f for f in fields(obj)}
    head = path[0]
    if head not in names:
        prefix = full_key[: len(full_key) - len(".".join(path))]
        candidates = [prefix + n for n in names]
        close = difflib.get_close_matches(full_key, candidates, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(candidates)}"
        raise KeyError(f"unknown key '{full_key}' ({source}){hint}")
    current = getattr(obj, head)
    if len(path) > 1:
        if not is_dataclass(current):
            raise KeyError(f"'{full_key}' ({source}): '{head}' is a value, not a section")
        return replace(obj, **{head: _set(current, path[1:], value, full_key, source)})
    value = _coerce(current, value, full_key, source)
    hint = get_type_hints(type(obj)).get(head)
    if get_origin(hint) is Literal and value not in get_args(hint):
        raise ValueError(f"'{full_key}' ({source}) must be one of {list(get_args(hint))}, got {value!r}")
    return replace(obj, **{head: value})


def _coerce(current: Any, value: Any, key: str, source: str) -> Any:
    if is_dataclass(current):
        raise ValueError(f"'{key}' ({source}) is a section; set its fields, e.g. {key}.<field>=...")
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(current, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(current, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    elif isinstance(current, str) and isinstance(value, (str, int, float)):
        return str(value)
    elif current is None:
        return value
    raise ValueError(f"'{key}' ({source}) expects {type(current).__name__} like {current!r}, got {value!r}")


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON; the grid stays its preset default."""
    def plain(v):
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v) if f.name != "grid"}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


def save_run_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_write(path, "w") as f:
        yaml.safe_dump({"preset": cfg.model.name, **config_to_dict(cfg)}, f, sort_keys=False)
    return path


def run_config_from_dict(data: dict) -> RunConfig:
    """Inverse of ``config_to_dict`` (used when resuming from a run folder)."""
    data = dict(data)
    preset = data.pop("preset", None) or data["model"]["name"]
    return apply_overrides(default_run_config(preset), _flatten(data), source="saved run config")


__all__ = ["RunConfig", "TrainConfig", "EvalConfig", "DataConfig", "ModelConfig", "load_run_config",
           "parse_overrides", "apply_overrides", "config_to_dict", "save_run_config", "run_config_from_dict"]

"""Run configuration: typed dataclasses, YAML files and dotted ``key=value`` overrides.

A run is ``RunConfig(model, data, train, eval)``. ``flashocc train PRESET|CONFIG.yaml key=value ...``
resolves to one: a preset name gives the model section; a YAML file may name a ``preset`` and
override any field. Values of overrides are Python literals (``ast.literal_eval``; never ``eval``),
bare words stay strings. Unknown keys fail with the closest valid key.
"""
from __future__ import annotations

import ast
import difflib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from flashocc.atomic import atomic_write
from flashocc.data.dataset import DataConfig
from flashocc.errors import ConfigError, MissingFileError, UnknownConfigKeyError
from flashocc.metrics.scorer import check_score_fields
from flashocc.models.configs import upgrade_model_fields
from flashocc.models.distill import DistillConfig
from flashocc.models.presets import ModelConfig, get_config


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation; defaults are the official schedule (FlashOCC@4084861
    projects/configs/flashocc/flashocc-r50.py; docs/official-behaviour.md#training-schedule)."""

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
    # (pattern, multiplier): a parameter whose state-dict name contains the pattern trains at lr x multiplier;
    # the longest matching pattern wins (mmcv paramwise_cfg custom_keys). A pattern matching nothing is an error.
    lr_multipliers: tuple[tuple[str, float], ...] = ()
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
    amp: Literal["none", "bf16", "fp16"] = "none"   # autocast on accelerators; the CPU trains in fp32 (logged)
    grad_checkpoint: bool = False        # checkpoint the image backbone blocks
    channels_last: bool = False
    sync_bn: bool = False                # CUDA only (torch SyncBatchNorm has no CPU kernel)
    checkpoint_every_iters: int = 0      # > 0: also save every N optimiser steps
    log_every: int = 10
    seed: int = 0
    init_from: str = ""                  # checkpoint to initialise from (non-strict, reported)
    eval_every_epochs: int = 0           # > 0: evaluate on the val split every N epochs (mIoU)
    # Non-finite losses or gradients: "skip" drops that step (the weights do not move) and stops the run
    # after max_bad_steps in a row; "stop" ends at the first one. The last good checkpoint is never replaced.
    on_nonfinite: Literal["skip", "stop"] = "skip"
    max_bad_steps: int = 10

    def __post_init__(self) -> None:
        # A YAML run config gives the pairs as lists.
        pairs = self.lr_multipliers
        if isinstance(pairs, (list, tuple)) and all(isinstance(p, (list, tuple)) for p in pairs):
            object.__setattr__(self, "lr_multipliers", tuple(tuple(p) for p in pairs))
        _check_ranges(self, "train", [
            ("lr_multipliers", _lr_multipliers_ok(self.lr_multipliers),
             "(name pattern, multiplier) pairs: distinct non-empty patterns, finite multipliers >= 0"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("max_iters", self.max_iters >= 0, "an integer >= 0 (0: use epochs)"),
            ("max_minutes", math.isfinite(self.max_minutes) and self.max_minutes >= 0, "minutes >= 0 (0: no budget)"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1 (samples per process and micro-step)"),
            ("grad_accum_steps", self.grad_accum_steps >= 1, "an integer >= 1"),
            ("workers", self.workers >= 0, "an integer >= 0 (0: load in the main process)"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite learning rate > 0"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a finite value >= 0"),
            ("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1)"),
            ("grad_clip", math.isfinite(self.grad_clip) and self.grad_clip >= 0, "a max L2 norm >= 0 (0: off)"),
            ("warmup_iters", self.warmup_iters >= 0, "an integer >= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio <= 1, "a fraction in [0, 1]"),
            ("lr_steps", all(isinstance(e, int) and e >= 0 for e in self.lr_steps)
             and list(self.lr_steps) == sorted(self.lr_steps), "ascending epoch numbers >= 0"),
            ("lr_gamma", math.isfinite(self.lr_gamma) and self.lr_gamma > 0, "a finite factor > 0"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "a fraction in [0, 1]"),
            ("ema_decay", 0 <= self.ema_decay < 1, "a decay in [0, 1)"),
            ("ema_ramp", math.isfinite(self.ema_ramp) and self.ema_ramp > 0, "updates > 0"),
            ("ema_init_updates", self.ema_init_updates >= 0, "an integer >= 0"),
            ("amp", self.amp in get_args(get_type_hints(TrainConfig)["amp"]), "one of none, bf16, fp16"),
            ("schedule", self.schedule in ("step", "cosine", "constant"), "one of step, cosine, constant"),
            ("checkpoint_every_iters", self.checkpoint_every_iters >= 0, "an integer >= 0 (0: at epoch ends only)"),
            ("log_every", self.log_every >= 1, "an integer >= 1"),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("eval_every_epochs", self.eval_every_epochs >= 0, "an integer >= 0 (0: off)"),
            ("on_nonfinite", self.on_nonfinite in ("skip", "stop"), "one of skip, stop"),
            ("max_bad_steps", self.max_bad_steps >= 1, "an integer >= 1"),
        ])


def _lr_multipliers_ok(pairs: Any) -> bool:
    if not isinstance(pairs, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        return False
    names = [p[0] for p in pairs]
    return (all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
            and all(isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m >= 0
                    for _, m in pairs))


def _check_ranges(cfg: Any, section: str, checks: list[tuple[str, bool, str]]) -> None:
    """Refuse the first out-of-range field, naming it as the user writes it (``train.lr``)."""
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{section}.{name}: expected {expected}, found {getattr(cfg, name)!r}")


@dataclass(frozen=True)
class EvalConfig:
    """``flashocc eval`` and per-epoch validation (which scores mIoU only, with this mask)."""

    batch_size: int = 1
    workers: int = 2                     # data-loader processes (0: load in the main process)
    metrics: tuple[str, ...] = ("miou", "rayiou")   # of miou, rayiou, fscore; --metrics overrides
    use_ema: bool = True                 # evaluate the EMA weights when the checkpoint has them; --no-ema: off
    mask: str = "camera"                 # voxels scored by mIoU / F-score: camera (official), lidar or none
    backend: str = "auto"                # RayIoU ray caster: auto (numba when installed), numba or torch
    inference: str = "eager"             # eager, fused (models/fuse.py: same logits, less work) or compiled
                                         # (fused + torch.compile); --fuse / --compile

    def __post_init__(self) -> None:
        _check_ranges(self, "eval", [
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("workers", isinstance(self.workers, int) and self.workers >= 0,
             "an integer >= 0 (0: load in the main process)"),
            ("use_ema", isinstance(self.use_ema, bool), "True or False"),
            ("inference", self.inference in INFERENCE_MODES, f"one of {', '.join(INFERENCE_MODES)}"),
        ])
        problem = check_score_fields(self.metrics, self.mask, self.backend)
        if problem:
            raise ConfigError(f"eval.{problem[0]}: expected {problem[1]}, found {getattr(self, problem[0])!r}")


INFERENCE_MODES = ("eager", "fused", "compiled")


@dataclass(frozen=True)
class ActiveConfig:
    """Voxel-level active learning (flashocc.engine.active; docs/few-labels.md, "Active learning")."""

    # A folder of per-sample voxel masks from 'flashocc active select' ('' = off): the occupancy CE of a
    # sample with a mask counts its selected voxels only. The run keeps a copy in OUT/active_masks.
    masks: str = ""

    def __post_init__(self) -> None:
        _check_ranges(self, "active", [("masks", isinstance(self.masks, str), "a folder of masks, or '' (off)")])


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)   # a frozen teacher (engine/distill.py)
    active: ActiveConfig = field(default_factory=ActiveConfig)      # voxel-level active learning (engine/active.py)
    train_infos: str = "infos_train.pkl"   # relative to --data unless absolute
    val_infos: str = "infos_val.pkl"


@dataclass(frozen=True)
class Recipe:
    """A preset's own training and data settings in place of the official defaults. ``default_run_config``
    applies it, so ``--print-config`` shows it and ``train.*`` / ``data.*`` overrides change it."""

    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def sparseocc_recipe() -> Recipe:
    """The SparseOcc presets (SparseOcc@af4d9df configs/r50_nuimg_704x256_8f.py): AdamW 5e-4, clip 35, 500
    warm-up iterations from 1/3, x0.2 at epochs 22 and 24, total batch 8, no EMA, the backbone and the voxel
    decoder's sampling offsets at x0.1 lr (paramwise_cfg custom_keys); images resized, cropped and flipped
    without rotation.
    Evaluation is RayIoU first, which never uses the camera mask (the official protocol); mIoU (camera mask)
    is reported for reference."""
    train = replace(TrainConfig(), lr=5e-4, weight_decay=0.01, grad_clip=35.0, warmup_iters=500,
                    warmup_ratio=1 / 3, lr_steps=(22, 24), lr_gamma=0.2, batch_size=8, ema=False,
                    lr_multipliers=(("img_backbone", 0.1), ("sampling_offset", 0.1)))
    data = replace(DataConfig(), rot=(0.0, 0.0))
    return Recipe(train=train, data=data, eval=replace(EvalConfig(), metrics=("rayiou", "miou")))


def demo_recipe() -> Recipe:
    """``flashocc-tiny-demo``: training from scratch on a small synthetic set within minutes
    (docs/benchmarks.md, "Training and flashocc demo"). A higher lr after a short warmup, a cosine
    that ends with the time budget, EMA that follows the recent weights, and no image or BEV
    augmentation: within 15 minutes the model underfits (train and held-out mIoU are close), so
    augmentation only slows it down (+2.0 mIoU without it, measured)."""
    train = replace(TrainConfig(), max_minutes=15.0, batch_size=2, workers=1, epochs=10000, lr=2e-3, warmup_iters=20,
                    schedule="cosine", ema_init_updates=0, ema_ramp=200.0, checkpoint_every_iters=50, log_every=10)
    data = replace(DataConfig(), resize=(0.0, 0.0), rot=(0.0, 0.0), flip=False, flip_dx_ratio=0.0, flip_dy_ratio=0.0)
    return Recipe(train=train, data=data)


def effocc_recipe() -> Recipe:
    """The EFFOcc fusion and LiDAR presets (EFFOcc@9544ca0 configs/effocc_fusion_r18_data_scales/flashocc_fusion_r18_base_100%_seqs.py;
    docs/official-behaviour.md#training-schedule): AdamW 4e-4, wd 0.01, clip 5, 200 warm-up iterations,
    x0.1 at epoch 24 of 48, 8 samples per GPU, EMA. The official 51.49 is the epoch-42 EMA checkpoint."""
    train = replace(TrainConfig(), lr=4e-4, epochs=48, lr_steps=(24,), batch_size=8)
    return Recipe(train=train)


def effocc_tiny_recipe() -> Recipe:
    """``effocc-fusion-tiny`` / ``effocc-lidar-tiny``: the demo's short-budget recipe (``demo_recipe``), so
    the 15-minute comparison with ``flashocc-tiny-demo`` trains all three the same way."""
    return demo_recipe()


# preset -> its recipe; presets not listed train with the official defaults (Recipe()). Our CPU-sized
# camera presets share the demo's short-budget recipe so their benchmarks compare like with like.
RECIPES: dict[str, Callable[[], Recipe]] = {
    "flashocc-tiny-demo": demo_recipe, "flashocc-tiny-distill": demo_recipe, "panoptic-flashocc-tiny": demo_recipe,
    "sparseocc-r50": sparseocc_recipe, "sparseocc-r50-pano": sparseocc_recipe, "sparseocc-tiny": sparseocc_recipe,
    "effocc-fusion-r18": effocc_recipe, "effocc-fusion-r50": effocc_recipe, "effocc-fusion-swinb": effocc_recipe,
    "effocc-lidar": effocc_recipe, "effocc-fusion-tiny": effocc_tiny_recipe, "effocc-lidar-tiny": effocc_tiny_recipe}


def default_run_config(preset: str) -> RunConfig:
    """The preset's model, its recipe (``RECIPES``, else the official defaults) and the data it needs."""
    model = get_config(preset)
    recipe = RECIPES[preset]() if preset in RECIPES else Recipe()
    return RunConfig(model=model, data=data_config_for(model, recipe.data), train=recipe.train, eval=recipe.eval)


def data_config_for(model: ModelConfig, data: DataConfig) -> DataConfig:
    """``data`` with what the model needs (``ModelConfig.data_requirements``: its input size, the frames it
    reads, LiDAR depth maps for a LiDAR depth loss), once the model config is checked as a whole
    (``ModelConfig.check``: a field its builder cannot honour is refused here, before any work)."""
    return replace(data, **model.check().data_requirements())


def load_run_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A preset name or a YAML file, then ``key=value`` overrides; data.input_size follows the model."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        raw = read_yaml_mapping(path)
        model = raw.get("model", {})
        preset = raw.pop("preset", None) or (model.get("name") if isinstance(model, dict) else None)
        if not preset or not isinstance(preset, str):
            raise ConfigError(f"{path}: name the model with 'preset: <name>' (see 'flashocc models'), "
                              f"found {preset!r}")
        cfg = _with_source(lambda: _config_from_mapping(preset, raw, str(path)), str(path))
    else:
        cfg = _with_source(lambda: default_run_config(spec), "command line")
    cfg = _with_source(lambda: apply_overrides(cfg, parse_overrides(overrides), source="command line"),
                       "command line")
    # Model overrides (input size, temporal, depth loss) decide what the data must provide.
    return _with_source(lambda: replace(cfg, data=data_config_for(cfg.model, cfg.data)), str(spec))


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file's top-level mapping (``yaml.safe_load``: no Python tags); errors name the file."""
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}" if not path.exists()
                               else f"config path is not a file: {path}")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text YAML file (byte {exc.start} is not UTF-8)") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, yaml.constructor.ConstructorError):  # e.g. !!python/object: never built
            raise ConfigError(f"{path}: YAML tag refused{at}: {problem}; config files hold plain values only") from None
        raise ConfigError(f"{path}: YAML syntax error{at}: {problem}") from None
    except (OSError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    bad = [k for k in _walk_keys(raw) if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{path}: config keys must be text, found {bad[0]!r}")
    return raw


def _walk_keys(d: dict):
    for k, v in d.items():
        yield k
        if isinstance(v, dict):
            yield from _walk_keys(v)


def _with_source(build, source: str):
    """Run ``build``; a ValueError/TypeError from a config class becomes a ConfigError naming the source."""
    try:
        return build()
    except ConfigError:
        raise
    except KeyError as exc:
        raise UnknownConfigKeyError(f"{source}: {exc.args[0] if exc.args else exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.lr=2e-4", "train.amp = bf16"]`` -> {"train.lr": 2e-4, "train.amp": "bf16"}."""
    out: dict[str, Any] = {}
    for item in _merge_spaced_equals(list(items)):
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. train.lr=2e-4)")
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
    model = getattr(cfg, "model", None)
    if model is not None and "model.name" in overrides and overrides["model.name"] != model.name:
        # The name is the preset the run was resolved from; renaming it would save a config that names a
        # model it does not describe (and that cannot be resumed).
        raise ConfigError(f"'model.name' ({source}): the preset is chosen by the config argument (or 'preset:' "
                          f"in a YAML file), not by an override; found {overrides['model.name']!r} for preset "
                          f"{model.name!r}")
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
        why = getattr(obj, "field_hint", None)  # a model family explains keys of other families / old layouts
        why = why(head) if callable(why) else None
        raise UnknownConfigKeyError(f"unknown key '{full_key}' ({source}){f': {why}' if why else hint}")
    current = getattr(obj, head)
    if len(path) > 1:
        if not is_dataclass(current):
            raise UnknownConfigKeyError(f"'{full_key}' ({source}): '{head}' is a value, not a section")
        return replace(obj, **{head: _set(current, path[1:], value, full_key, source)})
    value = _coerce(current, value, full_key, source)
    hint = get_type_hints(type(obj)).get(head)
    if get_origin(hint) is Literal and value not in get_args(hint):
        raise ConfigError(f"'{full_key}' ({source}) must be one of {list(get_args(hint))}, got {value!r}")
    try:
        return replace(obj, **{head: value})
    except ConfigError as exc:  # a range check in the section's __post_init__
        raise ConfigError(f"{exc} ({source})") from None


def _coerce(current: Any, value: Any, key: str, source: str) -> Any:
    if is_dataclass(current):
        raise ConfigError(f"'{key}' ({source}) is a section; set its fields, e.g. {key}.<field>=...")
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(current, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(current, tuple) and isinstance(value, (list, tuple)):
        kinds = {type(v) for v in current}
        if len(kinds) == 1 and kinds <= {int, float, str}:  # (24,) stays ints, betas stay floats
            return tuple(_coerce(current[0], v, key, source) for v in value)
        return tuple(value)
    elif isinstance(current, str) and isinstance(value, (str, int, float)):
        return str(value)
    elif current is None:
        return value
    raise ConfigError(f"'{key}' ({source}) expects {type(current).__name__} like {current!r}, got {value!r}")


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
    cfg = _config_from_mapping(preset, data, "saved run config")
    return replace(cfg, data=data_config_for(cfg.model, cfg.data))


def _config_from_mapping(preset: str, raw: dict, source: str) -> RunConfig:
    """The preset's run config with a YAML / saved mapping applied. A ``model`` section written before the
    per-family model configs (``temporal``, ``backbone_depth`` keys) is converted to the model it built
    (``flashocc.models.configs.upgrade_model_fields``)."""
    cfg = default_run_config(preset)
    raw = dict(raw)
    if isinstance(raw.get("model"), dict):
        model, raw["model"] = upgrade_model_fields(cfg.model, raw["model"], source)
        cfg = replace(cfg, model=model)
    return apply_overrides(cfg, _flatten(raw), source=source)


__all__ = ["RunConfig", "TrainConfig", "EvalConfig", "ActiveConfig", "DataConfig", "ModelConfig", "load_run_config",
           "parse_overrides", "apply_overrides", "config_to_dict", "save_run_config", "run_config_from_dict"]

"""The training loop: one readable function, nanoGPT style, with exact resume.

``train(cfg, data_root, out_dir)`` builds the model and data, then loops: forward -> losses ->
backward (with accumulation and DDP) -> clip -> AdamW step -> EMA. Rank 0 writes ``last.pt``
atomically (model, optimizer, EMA, counters, RNG states, config) every N steps, at every epoch end
and when the time budget runs out; ``resume=True`` continues bit-for-bit: the batch order and the
augmentation are pure functions of (seed, epoch, step), so a run killed with ``kill -9`` and resumed
ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from flashocc.batch import to_device
from flashocc.config import RunConfig, TrainConfig, config_to_dict, save_run_config
from flashocc.data.dataset import OccDataset, collate_batch
from flashocc.device import accelerator_rng_state, amp_plan, collective_device, set_accelerator_rng_state, use_pin_memory
from flashocc.atomic import atomic_write, clean_orphan_temps
from flashocc.engine.checkpoint import atomic_torch_save, load_checkpoint, read_checkpoint, unwrap_model
from flashocc.errors import CheckpointError, ConfigError, RunFolderError, TrainingDivergedError
from flashocc.data.active_masks import MASKS_DIR
from flashocc.engine.active import check_training_masks, stage_training_masks, training_masks
from flashocc.engine.distill import setup_distillation, teacher_targets, with_teacher_data
from flashocc.engine.distributed import DistInfo, setup_distributed
from flashocc.engine.ema import ModelEMA
from flashocc.engine.sampler import GlobalBatchSampler
from flashocc.models.presets import build_model

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.pt"
# What a run folder holds; an existing one is never replaced without --overwrite.
RUN_FILES = (CHECKPOINT_NAME, "config.yaml", "metrics.jsonl", "train.log", "tensorboard", "labeled_scenes.txt",
             MASKS_DIR)
# With a time budget and the cosine schedule, the measured speed sizes the schedule: first over the 20
# steps from step 10 (past the start-up), then again every 20 steps over the last BUDGET_WINDOW steps.
# Re-measuring matters: one slow start (a cold disk cache, another job) once planned 699 steps for a
# budget that held 1,123, and the last 38 % of the run trained at learning rate 0 (docs/benchmarks.md).
BUDGET_CALIBRATION = (10, 20)   # (first step, steps between measurements)
BUDGET_WINDOW = 100


@dataclass
class TrainState:
    step: int = 0              # optimiser steps done
    epoch: int = 0
    step_in_epoch: int = 0
    samples_seen: int = 0      # over all processes
    train_seconds: float = 0.0
    planned_steps: int = 0     # cosine under a time budget: steps expected to fit, re-measured as it runs


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (a pure function, so resume needs no scheduler state)."""
    if cfg.schedule == "cosine":
        progress = min(1.0, step / max(1, total_steps))
        lr = cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    elif cfg.schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        lr = cfg.lr * cfg.lr_gamma ** sum(epoch >= e for e in cfg.lr_steps)
    else:
        lr = cfg.lr
    if step < cfg.warmup_iters:  # mmcv linear warmup from warmup_ratio · lr
        lr *= 1 - (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
    return lr


def lr_param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW parameter groups, one per ``train.lr_multipliers`` multiplier (key ``lr_mult``) plus the rest at
    1. A parameter takes the longest pattern contained in its state-dict name, ties alphabetical (mmcv
    DefaultOptimizerConstructor's custom_keys order); a pattern that matches no parameter is an error."""
    patterns = sorted(sorted(dict(cfg.lr_multipliers)), key=len, reverse=True)
    mult = dict(cfg.lr_multipliers)
    groups: dict[str, list[torch.nn.Parameter]] = {p: [] for p in patterns}
    rest: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        hit = next((p for p in patterns if p in name), None)
        (groups[hit] if hit is not None else rest).append(param)
    unused = [p for p in patterns if not groups[p]]
    if unused:
        first = next((name for name, _ in model.named_parameters()), "")
        raise ConfigError(f"train.lr_multipliers: pattern(s) {unused} match no parameter name of "
                          f"{type(model).__name__} (names look like {first!r})")
    out = [{"params": groups[p], "lr_mult": float(mult[p]), "lr": cfg.lr * mult[p]} for p in patterns]
    return out + ([{"params": rest, "lr_mult": 1.0, "lr": cfg.lr}] if rest else [])


def _rng_state() -> dict:
    """All RNG states as tensors and plain values, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    state.update(accelerator_rng_state())  # {"cuda": [...]}, {"npu": [...]}; nothing on a CPU-only host
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    set_accelerator_rng_state(state)


def _setup_logging(out_dir: Path, info: DistInfo) -> None:
    if not info.is_main:
        return
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("flashocc")
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == handler.baseFilename for h in root.handlers):
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _tensorboard(out_dir: Path, info: DistInfo):
    if not info.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed (pip install 'flashocc[train]'): scalars go to metrics.jsonl only")
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def build_train_model(cfg: RunConfig, info: DistInfo) -> torch.nn.Module:
    model_cfg = replace(cfg.model, with_cp=cfg.model.with_cp or cfg.train.grad_checkpoint)
    model = build_model(model_cfg)
    if cfg.train.init_from:
        report = load_checkpoint(model, cfg.train.init_from, strict=False)
        log.info("initialised from %s:\n%s", cfg.train.init_from, report.summary())
    model = model.to(info.device)
    if cfg.train.channels_last and not cfg.model.bev_is_3d:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.sync_bn and info.enabled and info.device.type == "cpu":
        log.warning("train.sync_bn is not applied on the CPU (SyncBatchNorm has no CPU kernel): each process "
                    "keeps its own BatchNorm statistics")
    elif cfg.train.sync_bn and info.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def save_training_state(path: Path, model, optimizer, ema, state: TrainState, cfg: RunConfig) -> Path:
    """Write ``last.pt`` atomically; refuses non-finite weights so the last good checkpoint survives."""
    bad = _first_nonfinite(unwrap_model(model)) or (_first_nonfinite(ema.module) if ema is not None else None)
    if bad is not None:
        raise TrainingDivergedError(
            f"training diverged at step {state.step}: weight '{bad}' is not finite; {path} was not replaced "
            f"and holds the last good state. Lower train.lr (now {cfg.train.lr:g}) or keep train.grad_clip > 0")
    payload = {"model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
               "ema": ema.state_dict() if ema is not None else None, "train_state": asdict(state),
               "rng": _rng_state(), "run_config": config_to_dict(cfg), "preset": cfg.model.name}
    return atomic_torch_save(payload, path)


def _first_nonfinite(module: torch.nn.Module) -> str | None:
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def prepare_run_folder(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to touch an existing run unless asked: ``resume`` continues it, ``overwrite`` replaces it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"--out {out_dir} is a file, not a folder; choose a folder for the run")
    existing = [name for name in RUN_FILES if (out_dir / name).exists()]
    if resume and overwrite:
        raise RunFolderError("--resume continues a run and --overwrite replaces it: choose one")
    if existing and not (resume or overwrite):
        raise RunFolderError(
            f"{out_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it, --overwrite to "
            f"replace it, or choose a new --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {out_dir}: {exc.strerror or exc}") from None
    clean_orphan_temps(out_dir)


def _clear_run(out_dir: Path) -> None:
    """--overwrite: remove the old run's files (only those a run writes), once the new run has been set up."""
    for name in RUN_FILES:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def read_resume_state(ckpt_path: Path, cfg: RunConfig) -> dict | None:
    """The saved training state of ``ckpt_path`` after checking that it is this run's; None when absent."""
    if not ckpt_path.exists():
        return None
    saved = read_checkpoint(ckpt_path)  # weights_only; a corrupt file is a CheckpointError naming it
    missing = [k for k in ("model", "optimizer", "train_state", "rng") if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise CheckpointError(f"{ckpt_path}: not a flashocc training checkpoint (no {', '.join(missing)}); "
                              f"--resume needs the last.pt that 'flashocc train' wrote")
    if saved.get("preset") != cfg.model.name:
        raise RunFolderError(f"{ckpt_path} is a run of preset {saved.get('preset')!r}, but the config is "
                             f"{cfg.model.name!r}; resume with the run's own config ({ckpt_path.parent / 'config.yaml'})")
    return saved


def train(cfg: RunConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False,
          device: str = "auto", progress: bool = True, overwrite: bool = False) -> dict:
    """Train ``cfg`` on ``data_root`` (holding cfg.train_infos); returns a summary dict.

    An existing run in ``out_dir`` is refused unless ``resume`` (continue from its ``last.pt``) or
    ``overwrite`` (delete its files first). Nothing in the folder changes before a resume checkpoint has
    been read and checked, so a failed ``--resume`` leaves the run as it was.
    """
    info = setup_distributed(device)
    # A student reads what its teacher reads too (LiDAR): one batch feeds both.
    cfg.distill.check()
    cfg = with_teacher_data(cfg)
    tc = cfg.train
    out_dir, data_root = Path(out_dir), Path(data_root)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if info.is_main:
        prepare_run_folder(out_dir, resume, overwrite)
    saved = read_resume_state(ckpt_path, cfg) if resume else None
    masks = training_masks(cfg, out_dir, resume)  # voxel-level active learning (active.masks), checked first
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)

    model = build_train_model(cfg, info)
    teacher = setup_distillation(cfg, model, info.device) if cfg.distill.enabled else None
    ema = ModelEMA(model, tc.ema_decay, tc.ema_ramp, tc.ema_init_updates) if tc.ema else None
    optimizer = torch.optim.AdamW(lr_param_groups(unwrap_model(model), tc), lr=tc.lr, betas=tc.betas,
                                  weight_decay=tc.weight_decay)
    infos = Path(cfg.train_infos) if Path(cfg.train_infos).is_absolute() else data_root / cfg.train_infos
    # Part of the labels (data.labeled_fraction / labeled_scenes): a student with a teacher reads every scene,
    # flagged; any other run trains on the labelled scenes only.
    # With active.masks, a sample outside the labelled scenes that has a mask is read too (its selected voxels).
    dataset = OccDataset(data_root, infos, cfg.data, train=True, aug_seed=tc.seed,
                         keep_unlabeled=teacher is not None or masks is not None, active_masks=masks)
    if masks is not None:
        check_training_masks(masks, model, dataset, cfg)
    sampler = GlobalBatchSampler(len(dataset), tc.batch_size, info.world_size, info.rank, tc.grad_accum_steps, tc.seed)
    total_steps = tc.max_iters if tc.max_iters > 0 else tc.epochs * sampler.steps_per_epoch

    state = TrainState()
    if saved is not None:
        try:
            unwrap_model(model).load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if ema is not None and saved.get("ema"):
                ema.load_state_dict(saved["ema"])
            state = TrainState(**saved["train_state"])
            _set_rng_state(saved["rng"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{ckpt_path}: cannot resume from it ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0]}); it does not match this run's config") from None
    if info.is_main:
        # Only now that the model, the data and any resume checkpoint have loaded does the folder change.
        if overwrite:
            _clear_run(out_dir)
        save_run_config(cfg, out_dir / "config.yaml")
        if masks is not None:  # the run keeps its masks: a resume reads them, the next cycle grows them
            dataset.active_masks = stage_training_masks(masks, out_dir)
        if dataset.labeled_scene_names is not None:
            with atomic_write(out_dir / "labeled_scenes.txt", "w") as f:
                f.write("".join(f"{name}\n" for name in dataset.labeled_scene_names))
        _truncate_metrics(out_dir / "metrics.jsonl", state.step)
    _setup_logging(out_dir, info)
    if dataset.labeled_scene_names is not None:
        log.info("labelled scenes: %d (%s; data.label_subset=%s, data.label_seed=%d)%s", len(dataset.labeled_scene_names),
                 out_dir / "labeled_scenes.txt", cfg.data.label_subset, cfg.data.label_seed,
                 "; the others are read unlabelled" if teacher is not None else "")
    if masks is not None:
        log.info("active learning: %d samples train on their selected voxels (%s)", len(masks.tokens),
                 out_dir / MASKS_DIR)
    if saved is not None:
        log.info("resumed from %s at step %d (epoch %d)", ckpt_path, state.step, state.epoch)
    elif resume:
        log.info("no %s yet: starting from scratch", ckpt_path)

    ddp = DistributedDataParallel(model) if info.enabled else model
    amp = amp_plan(tc.amp, info.device)
    if amp.note and info.is_main:
        log.warning(amp.note)
    scaler = amp.grad_scaler()
    writer = _tensorboard(out_dir, info)
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        if tc.max_minutes > 0:  # a time budget: the bar counts seconds, so its ETA is the budget's end
            bar = tqdm(total=round(tc.max_minutes * 60), initial=min(round(state.train_seconds), round(tc.max_minutes * 60)),
                       unit="s", dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total}s [{elapsed}<{remaining}{postfix}]")
        else:
            bar = tqdm(total=total_steps, initial=state.step, unit="step", dynamic_ncols=True)
    log.info("training %s: %d samples, %d steps/epoch, %d steps, %d process(es), device %s", cfg.model.name,
             len(dataset), sampler.steps_per_epoch, total_steps, info.world_size, info.device)

    started = time.perf_counter() - state.train_seconds
    first_step = state.step
    speed_marks: deque[tuple[int, float]] = deque(maxlen=BUDGET_WINDOW // BUDGET_CALIBRATION[1] + 1)
    stop = False
    bad_steps = 0  # non-finite steps in a row
    model.train()
    while state.step < total_steps and not stop:
        if state.step_in_epoch >= sampler.steps_per_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        sampler.set_epoch(state.epoch, state.step_in_epoch)
        dataset.set_epoch(state.epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=tc.workers,
                                             collate_fn=collate_batch, pin_memory=use_pin_memory(info.device))
        batches = iter(loader)
        while state.step_in_epoch < sampler.steps_per_epoch and state.step < total_steps:
            t0 = time.perf_counter()
            since = state.step - first_step - BUDGET_CALIBRATION[0]
            if tc.max_minutes > 0 and tc.schedule == "cosine" and since >= 0 and since % BUDGET_CALIBRATION[1] == 0:
                speed_marks.append((state.step, state.train_seconds))
                if len(speed_marks) > 1:
                    planned = _planned_steps(state, speed_marks[0], tc.max_minutes, info)
                    if abs(planned - state.planned_steps) > 0.05 * planned:
                        log.info("time budget: %.1f min at the measured speed is about %d steps; the cosine ends "
                                 "there", tc.max_minutes, planned)
                    state.planned_steps = planned
            lr = lr_at(state.step, tc, sampler.steps_per_epoch, state.planned_steps or total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            totals: dict[str, float] = {}
            for micro in range(tc.grad_accum_steps):
                batch = to_device(next(batches), info.device)
                if teacher is not None:  # frozen, no_grad: its BEV feature and logits join the batch
                    batch.update(teacher_targets(teacher, batch))
                sync = nullcontext() if not info.enabled or micro == tc.grad_accum_steps - 1 else ddp.no_sync()
                with sync, amp.autocast():
                    losses = ddp(batch)
                    loss = sum(losses.values()) / tc.grad_accum_steps
                scaler.scale(loss).backward() if scaler.is_enabled() else loss.backward()
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) / tc.grad_accum_steps
            if scaler.is_enabled():
                scaler.unscale_(optimizer)
            # The norm is needed even without clipping: a non-finite one must not reach the weights.
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
            # fp16 loss scaling makes inf gradients on purpose now and then; its scaler skips those steps itself.
            finite_here = math.isfinite(sum(totals.values())) and (scaler.is_enabled() or math.isfinite(float(grad_norm)))
            finite = not _all_agree(not finite_here, info)  # every rank skips together
            if finite:
                scaler.step(optimizer) if scaler.is_enabled() else optimizer.step()
                if scaler.is_enabled():
                    scaler.update()
                if ema is not None:
                    ema.update(model)
                bad_steps = 0
            else:
                bad_steps += 1
                what = ", ".join(f"{k} {v:.4g}" for k, v in totals.items()) + f", grad norm {float(grad_norm):.4g}"
                log.warning("step %d: non-finite loss or gradient (%s); step skipped, weights unchanged "
                            "(%d in a row)", state.step + 1, what, bad_steps)
                if tc.on_nonfinite == "stop" or bad_steps >= tc.max_bad_steps:
                    optimizer.zero_grad(set_to_none=True)
                    raise TrainingDivergedError(
                        f"training diverged at step {state.step + 1}: {what} ({bad_steps} step(s) in a row, "
                        f"train.on_nonfinite={tc.on_nonfinite}, train.max_bad_steps={tc.max_bad_steps}). "
                        f"{ckpt_path} was not replaced: it holds the last good state. Lower train.lr (now {tc.lr:g}), keep "
                        f"train.grad_clip > 0 (now {tc.grad_clip:g}), or check the data")
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.step_in_epoch += 1
            state.samples_seen += sampler.samples_per_step
            state.train_seconds = time.perf_counter() - started
            step_time = time.perf_counter() - t0
            totals["loss"] = sum(totals.values())
            if info.is_main:
                record = {"step": state.step, "epoch": state.epoch, "lr": lr,
                          **{k: v if math.isfinite(v) else None for k, v in totals.items()},
                          "samples_per_s": sampler.samples_per_step / step_time,
                          "train_seconds": round(state.train_seconds, 2), "samples_seen": state.samples_seen}
                norm = float(grad_norm)
                record["grad_norm"] = norm if math.isfinite(norm) else None
                if not finite:
                    record["skipped"] = True
                with open(out_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k, v in record.items():
                        if k not in ("step", "epoch", "skipped") and v is not None:
                            writer.add_scalar(f"train/{k}", v, state.step)
                if state.step % max(1, tc.log_every) == 0 or state.step == total_steps:
                    log.info("step %d/%d epoch %d lr %.2e loss %.4f %.2f samples/s", state.step, total_steps,
                             state.epoch, lr, totals["loss"], record["samples_per_s"])
                if bar is not None:
                    bar.set_postfix(step=state.step, loss=f"{totals['loss']:.4f}", sps=f"{record['samples_per_s']:.2f}")
                    bar.update(min(step_time, bar.total - bar.n) if tc.max_minutes > 0 else 1)
            stop = tc.max_minutes > 0 and _all_agree(state.train_seconds > tc.max_minutes * 60, info)
            periodic = tc.checkpoint_every_iters > 0 and state.step % tc.checkpoint_every_iters == 0
            if info.is_main and (periodic or stop) and bad_steps == 0:
                save_training_state(ckpt_path, model, optimizer, ema, state, cfg)
            if stop:
                break
        del batches, loader
        # Weights whose last loss was non-finite are not "good": the checkpoint before them is kept.
        if info.is_main and not stop and bad_steps == 0:
            save_training_state(ckpt_path, model, optimizer, ema, state, cfg)
        epoch_done = state.step_in_epoch >= sampler.steps_per_epoch
        if not stop and epoch_done and tc.eval_every_epochs > 0 and (state.epoch + 1) % tc.eval_every_epochs == 0:
            _evaluate_epoch(cfg, data_root, ema.module if ema is not None else unwrap_model(model), state, info,
                            out_dir, writer)
            model.train()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    summary = {"checkpoint": str(ckpt_path), "steps": state.step, "epochs": state.epoch + 1,
               "samples_seen": state.samples_seen, "train_minutes": state.train_seconds / 60,
               "stopped_by_time": stop, "world_size": info.world_size}
    log.info("finished: %s", summary)
    return summary


def _evaluate_epoch(cfg: RunConfig, data_root: Path, model, state: TrainState, info: DistInfo, out_dir: Path,
                    writer) -> None:
    """mIoU on the val split (every rank scores its share; totals are summed), logged by rank 0."""
    from flashocc.engine.evaluate import eval_dataset, eval_infos_path, evaluate_model

    # mIoU only (RayIoU would add minutes per epoch); the mask and grid are the run's, as in 'flashocc eval'.
    result = evaluate_model(model, eval_dataset(cfg, data_root), info.device, ("miou",), cfg.eval.batch_size,
                            cfg.eval.workers, info, mask=cfg.eval.mask, grid=cfg.model.grid,
                            split=str(eval_infos_path(cfg, data_root)))
    if info.is_main:
        log.info("epoch %d val mIoU %.2f", state.epoch, result["mIoU"])
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": state.step, "epoch": state.epoch, "val_mIoU": result["mIoU"]}) + "\n")
        if writer is not None:
            writer.add_scalar("val/mIoU", result["mIoU"], state.step)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint being resumed (a kill leaves them behind), so the file keeps
    one row per step; a fresh run (step 0) starts an empty file."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row_step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            continue  # a torn last line from a kill
        if isinstance(row_step, int) and row_step <= step:
            kept.append(line)
    with atomic_write(path, "w") as f:
        f.write("".join(f"{line}\n" for line in kept))


def _planned_steps(state: TrainState, since: tuple[int, float], max_minutes: float, info: DistInfo) -> int:
    """Optimiser steps a time budget holds at the speed measured since ``since`` (step, seconds); the
    slowest process decides. Kept in the checkpoint, so a resumed run follows it until it re-measures."""
    per_step = (state.train_seconds - since[1]) / (state.step - since[0])
    estimate = torch.tensor([state.step + (max_minutes * 60 - state.train_seconds) / max(per_step, 1e-6)],
                            device=collective_device(info.device))  # NCCL/HCCL reduce device tensors only
    if info.enabled:
        torch.distributed.all_reduce(estimate, op=torch.distributed.ReduceOp.MIN)
    return max(state.step + 1, int(estimate.item()))


def _all_agree(flag: bool, info: DistInfo) -> bool:
    """Every rank stops together when any rank's clock says so."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=collective_device(info.device))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)

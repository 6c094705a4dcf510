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
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from flashocc.config import RunConfig, TrainConfig, config_to_dict, save_run_config
from flashocc.data.dataset import OccDataset, collate_batch
from flashocc.engine.checkpoint import atomic_torch_save, load_checkpoint, unwrap_model
from flashocc.engine.distributed import DistInfo, setup_distributed
from flashocc.engine.ema import ModelEMA
from flashocc.engine.sampler import GlobalBatchSampler
from flashocc.models.presets import build_model

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.pt"
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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _rng_state() -> dict:
    """All RNG states as tensors and plain values, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    if cfg.train.channels_last and not cfg.model.head_3d:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.sync_bn and info.enabled and info.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def save_training_state(path: Path, model, optimizer, ema, state: TrainState, cfg: RunConfig) -> Path:
    payload = {"model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
               "ema": ema.state_dict() if ema is not None else None, "train_state": asdict(state),
               "rng": _rng_state(), "run_config": config_to_dict(cfg), "preset": cfg.model.name}
    return atomic_torch_save(payload, path)


def train(cfg: RunConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False,
          device: str = "auto", progress: bool = True) -> dict:
    """Train ``cfg`` on ``data_root`` (holding cfg.train_infos); returns a summary dict."""
    info = setup_distributed(device)
    tc = cfg.train
    out_dir, data_root = Path(out_dir), Path(data_root)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(cfg, out_dir / "config.yaml")
    _setup_logging(out_dir, info)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)

    model = build_train_model(cfg, info)
    ema = ModelEMA(model, tc.ema_decay, tc.ema_ramp, tc.ema_init_updates) if tc.ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    infos = Path(cfg.train_infos) if Path(cfg.train_infos).is_absolute() else data_root / cfg.train_infos
    dataset = OccDataset(data_root, infos, cfg.data, train=True, aug_seed=tc.seed)
    sampler = GlobalBatchSampler(len(dataset), tc.batch_size, info.world_size, info.rank, tc.grad_accum_steps, tc.seed)
    total_steps = tc.max_iters if tc.max_iters > 0 else tc.epochs * sampler.steps_per_epoch

    state = TrainState()
    ckpt_path = out_dir / CHECKPOINT_NAME
    if resume and ckpt_path.is_file():
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        unwrap_model(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None and saved.get("ema"):
            ema.load_state_dict(saved["ema"])
        state = TrainState(**saved["train_state"])
        _set_rng_state(saved["rng"])
        log.info("resumed from %s at step %d (epoch %d)", ckpt_path, state.step, state.epoch)
    elif resume:
        log.info("no %s yet: starting from scratch", ckpt_path)

    ddp = DistributedDataParallel(model) if info.enabled else model
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.amp)
    use_amp = amp_dtype is not None and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
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
    model.train()
    while state.step < total_steps and not stop:
        if state.step_in_epoch >= sampler.steps_per_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        sampler.set_epoch(state.epoch, state.step_in_epoch)
        dataset.set_epoch(state.epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=tc.workers,
                                             collate_fn=collate_batch, pin_memory=info.device.type == "cuda")
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
                group["lr"] = lr
            totals: dict[str, float] = {}
            for micro in range(tc.grad_accum_steps):
                batch = to_device(next(batches), info.device)
                sync = nullcontext() if not info.enabled or micro == tc.grad_accum_steps - 1 else ddp.no_sync()
                autocast = torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext()
                with sync, autocast:
                    losses = ddp(batch)
                    loss = sum(losses.values()) / tc.grad_accum_steps
                scaler.scale(loss).backward() if scaler.is_enabled() else loss.backward()
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) / tc.grad_accum_steps
            if scaler.is_enabled():
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
            scaler.step(optimizer) if scaler.is_enabled() else optimizer.step()
            if scaler.is_enabled():
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            state.step += 1
            state.step_in_epoch += 1
            state.samples_seen += sampler.samples_per_step
            state.train_seconds = time.perf_counter() - started
            step_time = time.perf_counter() - t0
            totals["loss"] = sum(totals.values())
            if info.is_main:
                record = {"step": state.step, "epoch": state.epoch, "lr": lr, **totals,
                          "samples_per_s": sampler.samples_per_step / step_time,
                          "train_seconds": round(state.train_seconds, 2), "samples_seen": state.samples_seen}
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                with open(out_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k, v in record.items():
                        if k not in ("step", "epoch"):
                            writer.add_scalar(f"train/{k}", v, state.step)
                if state.step % max(1, tc.log_every) == 0 or state.step == total_steps:
                    log.info("step %d/%d epoch %d lr %.2e loss %.4f %.2f samples/s", state.step, total_steps,
                             state.epoch, lr, totals["loss"], record["samples_per_s"])
                if bar is not None:
                    bar.set_postfix(step=state.step, loss=f"{totals['loss']:.4f}", sps=f"{record['samples_per_s']:.2f}")
                    bar.update(min(step_time, bar.total - bar.n) if tc.max_minutes > 0 else 1)
            stop = tc.max_minutes > 0 and _all_agree(state.train_seconds > tc.max_minutes * 60, info)
            periodic = tc.checkpoint_every_iters > 0 and state.step % tc.checkpoint_every_iters == 0
            if info.is_main and (periodic or stop):
                save_training_state(ckpt_path, model, optimizer, ema, state, cfg)
            if stop:
                break
        del batches, loader
        if info.is_main and not stop:
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
    from flashocc.engine.evaluate import eval_dataset, evaluate_model

    result = evaluate_model(model, eval_dataset(cfg, data_root), info.device, ("miou",), cfg.eval.batch_size,
                            cfg.eval.workers, info)
    if info.is_main:
        log.info("epoch %d val mIoU %.2f", state.epoch, result["mIoU"])
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": state.step, "epoch": state.epoch, "val_mIoU": result["mIoU"]}) + "\n")
        if writer is not None:
            writer.add_scalar("val/mIoU", result["mIoU"], state.step)


def _planned_steps(state: TrainState, since: tuple[int, float], max_minutes: float, info: DistInfo) -> int:
    """Optimiser steps a time budget holds at the speed measured since ``since`` (step, seconds); the
    slowest process decides. Kept in the checkpoint, so a resumed run follows it until it re-measures."""
    per_step = (state.train_seconds - since[1]) / (state.step - since[0])
    estimate = torch.tensor([state.step + (max_minutes * 60 - state.train_seconds) / max(per_step, 1e-6)])
    if info.enabled:
        torch.distributed.all_reduce(estimate, op=torch.distributed.ReduceOp.MIN)
    return max(state.step + 1, int(estimate.item()))


def _all_agree(flag: bool, info: DistInfo) -> bool:
    """Every rank stops together when any rank's clock says so."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device if info.device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)

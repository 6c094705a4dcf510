"""``flashocc bench`` for the EFFOcc presets: per-stage latency and memory of the LiDAR(-camera) models.

Stages (``flashocc.deploy.effocc_export.STAGES``), timed one after another as ``EFFOcc.forward_outputs``
calls them, so their sum is one forward pass: ``voxelize`` (hard voxelization + ``HardSimpleVFE`` for the
sparse encoder; the voxel statistics of the dense encoder), ``lidar_encoder`` (sparse convs or the
dense encoder's convs), ``camera`` (image encoder + LiDAR-assisted lift-splat; fusion only), ``fuser``
(fusion only), ``bev_encoder`` (SECOND + SECONDFPN) and ``head``. onnxruntime rows (dense-encoder presets)
take their stages from its profiler by node scope (``effocc_export.node_stage``); the sparse presets get
a skipped onnxruntime row with the reason (no static ONNX form of their rulebooks).

Input: one synthetic LiDAR cloud per sample (``synthetic_cloud``: a ground plane plus upright
structures, ``BenchConfig.points`` points) and, for fusion, random images on the example rig with a
sparse LiDAR depth image. Returns plain dicts (``BenchRow`` fields): ``flashocc.deploy.bench`` wraps
them, so this module does not import it (it imports this one).
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flashocc.deploy.effocc_export import (STAGES, calibrate_random_effocc, check_exportable, example_effocc_batch,
                                           node_stage)
from flashocc.deploy.timing import PeakMemory, isolated, sync, time_call
from flashocc.device import autocast_available
from flashocc.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_POINTS = 34_000  # about one nuScenes LiDAR keyframe sweep (32-beam, ~34k points)


def synthetic_cloud(cfg: Any, num_points: int, seed: int = 0) -> torch.Tensor:
    """(num_points, 5): 70 % on a slightly noisy ground plane, 30 % on upright box walls, x/y over the
    grid (a uniform cloud would leave every voxel without neighbours, which flatters sparse convs)."""
    g = torch.Generator().manual_seed(seed)
    lower, upper = cfg.grid.lower, cfg.grid.upper
    n_ground = int(0.7 * num_points)
    xy = torch.rand(num_points, 2, generator=g) * torch.tensor([upper[0] - lower[0], upper[1] - lower[1]]) \
        + torch.tensor(lower[:2])
    z = torch.empty(num_points)
    z[:n_ground] = -0.3 + 0.05 * torch.randn(n_ground, generator=g)
    n_wall = num_points - n_ground
    # Walls: snap x or y of the remaining points to one of 64 lines, heights up to 3 m.
    lines = torch.rand(64, generator=g) * (upper[0] - lower[0]) + lower[0]
    pick = lines[torch.randint(0, 64, (n_wall,), generator=g)]
    axis = torch.randint(0, 2, (n_wall,), generator=g)
    xy[n_ground:, 0] = torch.where(axis == 0, pick, xy[n_ground:, 0])
    xy[n_ground:, 1] = torch.where(axis == 1, pick, xy[n_ground:, 1])
    z[n_ground:] = -0.3 + torch.rand(n_wall, generator=g) * 3.0
    extra = torch.rand(num_points, 2, generator=g) * torch.tensor([1.0, 0.45])  # intensity, Δt
    return torch.cat([xy, z.unsqueeze(1), extra], dim=1)


def bench_batch(cfg: Any, batch_size: int, num_points: int, seed: int) -> dict[str, Any]:
    batch = example_effocc_batch(cfg, batch_size, seed=seed)
    batch["points"] = [synthetic_cloud(cfg, num_points, seed + i) for i in range(batch_size)]
    return batch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: [p.to(device) for p in v] if k == "points" else v.to(device) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def bench_stages(model: nn.Module) -> list[str]:
    """The timed stages of ``model``: LiDAR-only models have no camera branch and no fuser."""
    return [s for s in STAGES if model.has_camera or s not in ("camera", "fuser")]


def torch_stage_times(model: nn.Module, batch: dict, repeats: int, warmup: int, device: torch.device
                      ) -> dict[str, float]:
    """Median ms per stage (the stages of the module docstring; LiDAR-only models have no camera/fuser)."""
    stages = bench_stages(model)
    per_stage: dict[str, list[float]] = {s: [] for s in stages}
    points = model.points_of(batch)
    dense = model.pts_voxel_layer is None
    with torch.no_grad():
        for i in range(warmup + repeats):
            marks = {"start": time.perf_counter()}

            def mark(stage: str) -> None:
                sync(device)
                marks[stage] = time.perf_counter()

            enc = model.pts_middle_encoder
            voxelized = enc.rasterize(points) if dense else model.voxelize(batch)
            if not dense:
                voxels, coords, counts = voxelized
                voxelized = (model.pts_voxel_encoder(voxels, counts, coords), coords)
            mark("voxelize")
            pts_bev = enc.convs(voxelized) if dense else enc(*voxelized, len(points))
            mark("lidar_encoder")
            img_bev = None
            if model.has_camera:
                img_bev = model.lift_to_bev(model.encode_images(batch), batch).bev
                mark("camera")
            bev = model.fuse_bev(img_bev, pts_bev)
            if model.has_camera:
                mark("fuser")
            x = model.bev_encoder(bev)
            mark("bev_encoder")
            model.occ_head(x)
            mark("head")
            if i >= warmup:
                order = ["start", *stages]
                for a, b in zip(order, order[1:]):
                    per_stage[b].append((marks[b] - marks[a]) * 1e3)
    return {s: statistics.median(v) for s, v in per_stage.items()}


def _row(backend: str, precision: str, **kw: Any) -> dict[str, Any]:
    return {"backend": backend, "precision": precision, **kw}


def _skip(backend: str, precision: str, reason: str) -> dict[str, Any]:
    return _row(backend, precision, status="skipped", reason=reason)


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((logits.argmax(-1) == reference.argmax(-1)).mean())


def _torch_row(preset: str, state_path: Path, batch: dict, held_out: dict, reference: np.ndarray, precision: str,
               device: str, repeats: int, warmup: int, threads: int | None) -> dict[str, Any]:
    """One torch row from saved weights (the body of an isolated measurement)."""
    from flashocc.models.presets import build_model

    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device)
    if precision == "fp16" and (device.type == "cpu" or not autocast_available(device.type)):
        return _skip("torch", precision, f"fp16 autocast is an accelerator path; none on {device}")
    model = build_model(preset)
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    model.eval().to(device)
    batch, held_out = to_device(batch, device), to_device(held_out, device)
    autocast = torch.autocast(device.type, dtype=torch.float16) if precision == "fp16" else nullcontext()
    with torch.no_grad(), autocast:
        stages = torch_stage_times(model, batch, repeats, warmup, device)
        with PeakMemory(device) as mem:
            times = time_call(lambda: model(batch), repeats, warmup, device)
        agreement = _agreement(model(held_out).float().cpu().numpy(), reference)
    total = statistics.median(times)
    return _row("torch", precision, stages_ms=stages, total_ms=total, fps=1e3 * len(batch["points"]) / total,
                peak_mem_mib=mem.peak_mib, agreement=agreement)


def ort_stage_times(path: Path, feed: dict, threads: int | None, has_camera: bool, runs: int = 2) -> dict[str, float]:
    """Median per-stage kernel time (ms) from onnxruntime's profiler, the warm-up run dropped."""
    from flashocc.deploy.runtime import OnnxOccModel

    runner = OnnxOccModel(path, threads=threads, profile=True, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        runner.run_feed(feed)
    trace_path = runner.end_profiling()
    trace = json.loads(trace_path.read_text())
    trace_path.unlink(missing_ok=True)
    stages = [s for s in STAGES if has_camera or s not in ("camera", "fuser")]
    per_run, current = [], {s: 0.0 for s in stages}
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            current[node_stage(event["name"], has_camera)] += event["dur"] / 1e3
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            per_run.append(current)
            current = {s: 0.0 for s in stages}
    per_run = per_run[1:] or per_run or [current]
    return {s: statistics.median(r[s] for r in per_run) for s in stages}


def _ort_row(path: Path, batch: dict, held_out: dict, reference: np.ndarray, threads: int | None,
             repeats: int, warmup: int, has_camera: bool) -> dict[str, Any]:
    from flashocc.deploy.runtime import OnnxOccModel

    if threads is not None:
        torch.set_num_threads(threads)
    runner = OnnxOccModel(path, threads=threads, providers=["CPUExecutionProvider"])
    feeds = runner.feeds(batch)
    run = (lambda: runner.run_feed(feeds[0])) if len(feeds) == 1 else (lambda: runner(batch))
    with PeakMemory(torch.device("cpu")) as mem:
        times = time_call(run, repeats, warmup, torch.device("cpu"))
    stages = ort_stage_times(path, feeds[0], threads, has_camera) if len(feeds) == 1 else {}
    total = statistics.median(times)
    return _row("onnxruntime", "fp32", stages_ms=stages, total_ms=total, fps=1e3 * len(batch["points"]) / total,
                peak_mem_mib=mem.peak_mib, agreement=_agreement(runner(held_out), reference))


def effocc_bench_rows(cfg: Any, model: nn.Module, device: torch.device, workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``flashocc bench`` for an EFFOcc ``model`` (``cfg`` is a ``bench.BenchConfig``)."""
    from flashocc.deploy.onnx import export_onnx

    if cfg.data is not None:
        raise ConfigError(f"flashocc bench {cfg.preset}: --data is for the camera presets; EFFOcc is timed on a "
                          "synthetic LiDAR cloud (bench.points) and random images (the work does not depend on them)")
    num_points = cfg.points
    if not isinstance(num_points, int) or num_points < 1:
        raise ConfigError(f"flashocc bench {cfg.preset}: bench.points (--points) must be an integer >= 1, got "
                          f"{num_points!r}")
    batch = bench_batch(model.config, cfg.batch_size, num_points, cfg.seed)
    held_out = bench_batch(model.config, cfg.batch_size, num_points, cfg.seed + 100)
    if cfg.checkpoint:
        from flashocc.engine.checkpoint import load_checkpoint

        load_checkpoint(model, cfg.checkpoint)
    else:
        calibrate_random_effocc(model, [bench_batch(model.config, cfg.batch_size, num_points, cfg.seed + 200 + i)
                                        for i in range(2)])
    model.eval()
    with torch.no_grad():
        reference = model(held_out).numpy()
    state_path = workdir / "bench_weights.pt"
    torch.save(model.state_dict(), state_path)
    run = isolated if cfg.isolate and device.type == "cpu" else (lambda fn, *a: fn(*a))
    try:
        check_exportable(model.config)
        not_exportable = ""
    except ConfigError as exc:
        not_exportable = str(exc)
    rows: list[dict[str, Any]] = []
    graph: Path | None = None
    for backend in cfg.backends:
        for precision in cfg.precisions:
            log.info("bench %s %s %s", cfg.preset, backend, precision)
            if backend == "torch" and precision in ("fp32", "fp16"):
                rows.append(run(_torch_row, cfg.preset, state_path, batch, held_out, reference, precision,
                                str(device), cfg.repeats, cfg.warmup, cfg.threads))
            elif backend == "torch":
                rows.append(_skip(backend, precision, "PyTorch eager has no INT8 path here"))
            elif backend == "onnxruntime" and not_exportable:
                rows.append(_skip(backend, precision, not_exportable))
            elif backend == "onnxruntime" and precision == "fp32":
                try:
                    graph = graph or export_onnx(model, workdir / f"{cfg.preset}_{cfg.mode}.onnx", mode=cfg.mode,
                                                 batch_size=cfg.batch_size)
                    rows.append(run(_ort_row, graph, batch, held_out, reference, cfg.threads, cfg.repeats,
                                    cfg.warmup, model.has_camera))
                except ImportError as exc:
                    rows.append(_skip(backend, precision, str(exc)))
            elif backend == "onnxruntime":
                rows.append(_skip(backend, precision, "INT8/FP16 conversion is calibrated and checked for the camera "
                                                      "graphs only; the EFFOcc graph runs in fp32"))
            else:
                rows.append(_skip(backend, precision, f"{backend} is not wired for the EFFOcc presets (torch and "
                                                      "onnxruntime are)"))
    return rows


__all__ = ["DEFAULT_POINTS", "bench_batch", "bench_stages", "effocc_bench_rows", "synthetic_cloud", "torch_stage_times"]

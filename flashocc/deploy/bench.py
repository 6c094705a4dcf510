"""``flashocc bench``: side-by-side latency per stage, end-to-end latency/FPS and memory per backend and
precision, plus the paper's ablation of the channel-to-height head against the 3D-conv head.

Stages: image encoder (backbone + neck), view transform (depth net, geometry, pooling), BEV encoder,
head. PyTorch stages are timed by calling the model's stage methods, the same calls its forward makes
(``encode_images`` -> ``lift_to_bev`` -> ``bev_encoder`` -> ``occ_head``): for the temporal stereo
presets the image encoder covers t, t-1 and the stride-4 stem of t-2, and the view transform both
cost volumes, depth nets, poolings and pre-process nets. onnxruntime stages come from its
profiler, attributing node kernel times by the exported node names (``flashocc.deploy.onnx.node_stage``).
Memory is the peak resident-set growth over the timed runs (CPU, sampled every 2 ms) or the
accelerator allocator's peak (torch on a GPU/NPU). All latencies are medians in milliseconds.
"""
from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flashocc.cpu_memory import freed_memory_is_kept
from flashocc.deploy.onnx import node_stage
from flashocc.deploy.timing import PeakMemory, isolated, sync, time_call
from flashocc.device import autocast_available, device_name, resolve_device

log = logging.getLogger(__name__)

STAGES = ("image_encoder", "view_transform", "bev_encoder", "head")
BACKENDS = ("torch", "torch-fused", "torch-compile", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BenchConfig:
    preset: str
    backends: tuple[str, ...] = ("torch", "onnxruntime")
    precisions: tuple[str, ...] = ("fp32", "int8")
    batch_size: int = 1
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None          # torch and onnxruntime intra-op threads (None: library default)
    checkpoint: str | None = None
    mode: str = "precomputed"           # exported graph for onnxruntime / tensorrt
    calib_samples: int = 4
    data: str | None = None             # a set with infos_train.pkl (calibration) and infos_val.pkl (held-out
                                        # input); default: random images on the example rig
    ablation: bool = True
    workdir: str | None = None          # where exported/quantised graphs go (default: a temp dir)
    seed: int = 0
    isolate: bool = True                # each CPU measurement in a fresh process (own peak memory)
    points: int = 34_000                # EFFOcc presets: synthetic LiDAR points per sample (deploy/effocc_bench.py)


@dataclass
class BenchRow:
    backend: str
    precision: str
    status: str = "ok"                  # ok | skipped | failed
    reason: str = ""
    stages_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float | None = None
    fps: float | None = None
    peak_mem_mib: float | None = None
    agreement: float | None = None      # argmax agreement with torch fp32 on a held-out input
    gflops_per_s: dict[str, float] = field(default_factory=dict)   # per stage and "total"
    peak_fraction: dict[str, float] = field(default_factory=dict)  # gflops_per_s / the run's GEMM peak


@dataclass
class BenchReport:
    preset: str
    batch_size: int
    device: str
    rows: list[BenchRow]
    ablation: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    stage_gflop: dict[str, float] = field(default_factory=dict)  # eager-model GFLOP per stage (whole batch)
    peak_gflops_per_s: float | None = None                       # large fp32 GEMM timed in this run
    stages: list[str] = field(default_factory=lambda: list(STAGES))  # the table's stage columns (EFFOcc: its own)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write the JSON report atomically."""
        import os

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path


def calibrate_random_model(model: nn.Module, batches: list[dict]) -> nn.Module:
    """Give a randomly initialised model input-dependent outputs: BatchNorm statistics from ``batches``
    and a zero head bias, so that argmax agreement between backends measures something. (No real
    weights can be downloaded here; a loaded checkpoint should not go through this.)"""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for batch in batches:
            model.forward_logits(batch)
        model.occ_head.predicter[-1].bias.zero_()
    return model.eval()


def stage_round_ms(model: nn.Module, batch: dict, device: torch.device) -> dict[str, float]:
    """One forward, its stages called one after another as ``FlashOcc.forward_outputs`` calls them, in ms."""
    with torch.no_grad():
        marks = [time.perf_counter()]
        encoded = model.encode_images(batch)
        sync(device)
        marks.append(time.perf_counter())
        bev = model.lift_to_bev(encoded, batch).bev
        sync(device)
        marks.append(time.perf_counter())
        x = model.bev_encoder(bev)
        sync(device)
        marks.append(time.perf_counter())
        model.occ_head(x)
        sync(device)
        marks.append(time.perf_counter())
    return {s: (b - a) * 1e3 for s, a, b in zip(STAGES, marks, marks[1:])}


def torch_stage_times(model: nn.Module, batch: dict, repeats: int, warmup: int, device: torch.device) -> dict:
    """Median ms of each stage of ``stage_round_ms`` (their sum is one forward pass, for single-frame and
    temporal models alike)."""
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    for i in range(warmup + repeats):
        times = stage_round_ms(model, batch, device)
        if i >= warmup:
            for s, ms in times.items():
                per_stage[s].append(ms)
    return {s: statistics.median(v) for s, v in per_stage.items()}


def stage_gflop(model_cfg, batch_size: int = 1) -> dict[str, float]:
    """GFLOP of each stage of the eager model for a batch (a multiply-add counts 2), counted on the meta
    device. The view transform is the model total (``flashocc.models.flops.count_gflops``, which adds
    pooling and cost-volume matching analytically) minus the three counted stages."""
    from torch.utils.flop_counter import FlopCounterMode

    from flashocc.models.builders import build_from_config
    from flashocc.models.examples import example_model_batch
    from flashocc.models.flops import count_gflops

    with torch.device("meta"):
        model = build_from_config(model_cfg).eval()
    batch = {k: v.to("meta") for k, v in example_model_batch(model_cfg, 1).items() if isinstance(v, torch.Tensor)}
    first = next(m for m in model.img_bev_encoder_backbone.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
    dx, dy, dz = model_cfg.grid.shape
    shape = (1, first.in_channels, dz, dy, dx) if isinstance(first, nn.Conv3d) else (1, first.in_channels, dy, dx)
    counted = {}
    with torch.no_grad():
        for stage, fn in (("image_encoder", lambda: model.encode_images(batch)),
                          ("bev_encoder", lambda: model.bev_encoder(torch.zeros(shape, device="meta"))),
                          ("head", lambda: model.occ_head(model.bev_encoder(torch.zeros(shape, device="meta"))))):
            with FlopCounterMode(display=False) as counter:
                fn()
            counted[stage] = counter.get_total_flops() / 1e9
    counted["head"] -= counted["bev_encoder"]
    counted["view_transform"] = max(0.0, count_gflops(model_cfg) - sum(counted.values()))
    return {s: batch_size * counted[s] for s in STAGES}


def gemm_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's achievable fp32 rate: the faster of a large square GEMM (``torch.matmul``: MKL or
    cuBLAS, 2·n³ FLOP) and a compute-bound 3x3 convolution (channels-last, 256 -> 256 channels on 96x96:
    oneDNN on CPU, cuDNN on GPU), best of ``repeats`` each (the best, not the median: it is the ceiling the
    stages are compared with, on a machine others share). Both, because on AMD CPUs MKL's GEMM runs at
    less than half of oneDNN's convolution rate (186 against about 440 GFLOP/s on the 2-core EPYC of
    docs/benchmarks.md), and the stages run oneDNN's convolutions."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    gemm = 2 * n ** 3 / (min(time_call(lambda: a @ b, repeats, 1, device)) / 1e3) / 1e9
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(1, 256, 96, 96, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        conv_rate = 2 * 256 * 256 * 9 * 96 * 96 / (min(time_call(lambda: conv(x), repeats, 1, device)) / 1e3) / 1e9
    return max(gemm, conv_rate)


def add_throughput(row: BenchRow, gflop: dict[str, float], peak: float | None) -> BenchRow:
    """Fill ``row``'s achieved GFLOP/s (the eager model's FLOPs over the measured time, so a fused row
    that skips BatchNorm passes still divides the same work) and the fraction of ``peak``."""
    if row.status != "ok" or not gflop:
        return row
    times = dict(row.stages_ms)
    if row.total_ms:
        times["total"] = row.total_ms
    work = {**gflop, "total": sum(gflop.values())}
    row.gflops_per_s = {k: work[k] / (t / 1e3) for k, t in times.items() if t and k in work}
    if peak:
        row.peak_fraction = {k: v / peak for k, v in row.gflops_per_s.items()}
    return row


def ort_stage_times(path: Path, feed: dict, threads: int | None, runs: int = 2) -> dict[str, float]:
    """Median per-stage kernel time (ms) from onnxruntime's profiler over ``runs`` runs."""
    from flashocc.deploy.runtime import OnnxOccModel

    runner = OnnxOccModel(path, threads=threads, profile=True)
    runner.run_feed(feed)  # warm-up (its events are dropped below by run index)
    for _ in range(runs):
        runner.run_feed(feed)
    trace_path = runner.end_profiling()
    trace = json.loads(trace_path.read_text())
    trace_path.unlink(missing_ok=True)
    runs = _split_runs(trace)[1:] or _split_runs(trace)  # drop the warm-up run
    return {s: statistics.median(r[s] for r in runs) for s in STAGES}


def _split_runs(trace: list[dict]) -> list[dict[str, float]]:
    """Per-run stage sums; a run's node events come before its closing ``model_run`` event."""
    runs: list[dict[str, float]] = []
    current = {s: 0.0 for s in STAGES}
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            current[node_stage(event["name"])] += event["dur"] / 1e3
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            runs.append(current)
            current = {s: 0.0 for s in STAGES}
    return runs or [current]


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((logits.argmax(-1) == reference.argmax(-1)).mean())


def _skip(backend: str, precision: str, reason: str) -> BenchRow:
    return BenchRow(backend, precision, status="skipped", reason=reason)


def _bench_torch(cfg: BenchConfig, model: nn.Module, batch: dict, held_out: dict, reference: np.ndarray,
                 precision: str, device: torch.device, compiled: bool, fused: bool = False) -> BenchRow:
    backend = "torch-compile" if compiled else "torch-fused" if fused else "torch"
    if precision == "int8":
        return _skip(backend, precision, "PyTorch eager has no INT8 path here; use onnxruntime or tensorrt")
    if precision == "fp16" and (device.type == "cpu" or not autocast_available(device.type)):
        return _skip(backend, precision, f"fp16 autocast is an accelerator path; none on {device}")
    autocast = torch.autocast(device.type, dtype=torch.float16) if precision == "fp16" else nullcontext()
    runner = model
    if fused:  # BatchNorm folded, channels-last, cached pooling indices (flashocc.models.fuse)
        from flashocc.models.fuse import fuse_for_inference

        model = runner = fuse_for_inference(model)
    if compiled:
        try:
            runner = torch.compile(model)
            with torch.no_grad(), autocast:
                runner(batch)  # compile outside the timed region
        except Exception as exc:  # inductor needs a working C++ toolchain; report instead of failing
            return BenchRow(backend, precision, status="failed", reason=f"torch.compile: {type(exc).__name__}: {exc}"[:300])
    with torch.no_grad(), autocast:
        stages = {} if compiled else torch_stage_times(model, batch, cfg.repeats, cfg.warmup, device)
        with PeakMemory(device) as mem:
            times = time_call(lambda: runner(batch), cfg.repeats, cfg.warmup, device)
        agreement = _agreement(runner(held_out).float().cpu().numpy(), reference)
    total = statistics.median(times)
    return BenchRow(backend, precision, stages_ms=stages, total_ms=total, fps=1e3 * cfg.batch_size / total,
                    peak_mem_mib=mem.peak_mib, agreement=agreement)


def _bench_onnxruntime(cfg: BenchConfig, graphs: dict[str, Path], batch: dict, held_out: dict,
                       reference: np.ndarray, precision: str) -> BenchRow:
    from flashocc.deploy.runtime import OnnxOccModel

    path = graphs[precision]
    runner = OnnxOccModel(path, threads=cfg.threads)
    if precision == "fp16" and "CUDAExecutionProvider" not in runner.session.get_providers():
        return _skip("onnxruntime", precision, "fp16 graphs are for the CUDA provider (onnxruntime-gpu); CPU only here")
    feed = runner.feeds(batch)[0] if cfg.batch_size == runner.spec.batch_size else None
    run = (lambda: runner.run_feed(feed)) if feed is not None else (lambda: runner(batch))
    with PeakMemory(torch.device("cpu")) as mem:
        times = time_call(run, cfg.repeats, cfg.warmup, torch.device("cpu"))
    stages = ort_stage_times(path, runner.feeds(batch)[0], cfg.threads) if feed is not None else {}
    total = statistics.median(times)
    return BenchRow("onnxruntime", precision, stages_ms=stages, total_ms=total, fps=1e3 * cfg.batch_size / total,
                    peak_mem_mib=mem.peak_mib, agreement=_agreement(runner(held_out), reference))


def _bench_tensorrt(cfg: BenchConfig, model: nn.Module, workdir: Path, batch: dict, held_out: dict,
                    reference: np.ndarray, precision: str, calib: list[dict], exported: bool = False) -> BenchRow:
    from flashocc.deploy import tensorrt as trt_deploy

    reason = trt_deploy.tensorrt_unavailable_reason()
    if reason:
        return _skip("tensorrt", precision, reason)
    from flashocc.deploy.onnx import export_onnx

    onnx_path = workdir / f"{cfg.preset}_precomputed_trt.onnx"
    if not exported:  # made once per run, shared by the precisions
        export_onnx(model, onnx_path, mode="precomputed", batch_size=cfg.batch_size, accumulate=torch.float32)
    engine = trt_deploy.build_engine(onnx_path, workdir / f"{cfg.preset}_{precision}.engine", precision,
                                     calibration_batches=calib if precision == "int8" else None)
    runner = trt_deploy.TensorRTOccModel(engine, onnx_path)
    device = torch.device("cuda")
    with PeakMemory(device) as mem:
        times = time_call(lambda: runner(batch), cfg.repeats, cfg.warmup, device)
    total = statistics.median(times)
    return BenchRow("tensorrt", precision, total_ms=total, fps=1e3 * cfg.batch_size / total,
                    peak_mem_mib=runner.device_memory_mib() + mem.peak_mib,
                    agreement=_agreement(runner(held_out), reference))


def _ablation_one(preset: str, batch_size: int, repeats: int, warmup: int, device: str,
                  threads: int | None = None) -> dict:
    from flashocc.models.presets import build_model

    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device)
    model = build_model(preset).eval().to(device)
    cfg = model.config
    dx, dy, dz = cfg.grid.shape
    shape = (batch_size, cfg.bev_channels, dz, dy, dx) if cfg.bev_is_3d else (batch_size, cfg.bev_channels, dy, dx)
    bev = torch.randn(shape, device=device)
    with torch.no_grad(), PeakMemory(device) as mem:
        times = time_call(lambda: model.occ_head(model.bev_encoder(bev)), repeats, warmup, device)
    part = [model.img_bev_encoder_backbone, model.img_bev_encoder_neck, model.occ_head]
    return {"preset": preset, "head": "3D conv" if cfg.bev_is_3d else "channel-to-height",
            "bev_input": list(shape), "latency_ms": statistics.median(times), "peak_mem_mib": mem.peak_mib,
            "params": sum(p.numel() for m in part for p in m.parameters())}


def head_ablation(batch_size: int = 1, repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu",
                  threads: int | None = None, isolate: bool = True) -> list[dict]:
    """BEV encoder + head of flashocc-r50-m1 (2D, channel-to-height) vs bevdetocc-r50 (3D convs):
    median latency (ms) and peak memory growth (MiB) of the occupancy part on random BEV features."""
    device = str(device)
    run = isolated if isolate and device.partition(":")[0] == "cpu" else (lambda fn, *a: fn(*a))
    return [run(_ablation_one, preset, batch_size, repeats, warmup, device, threads)
            for preset in ("flashocc-r50-m1", "bevdetocc-r50")]


def _torch_row(cfg: BenchConfig, state_path: Path, batch: dict, held_out: dict, reference: np.ndarray,
               precision: str, device: str, compiled: bool, fused: bool = False) -> BenchRow:
    """A torch row from saved weights (the body of an isolated measurement)."""
    from flashocc.models.presets import build_model

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = torch.device(device)
    model = build_model(cfg.preset)
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    model.eval().to(device)
    to = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731
    return _bench_torch(cfg, model, to(batch), to(held_out), reference, precision, device, compiled, fused)


def _ort_row(cfg: BenchConfig, graphs: dict[str, Path], batch: dict, held_out: dict, reference: np.ndarray,
             precision: str) -> BenchRow:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)  # index computation on cache misses
    return _bench_onnxruntime(cfg, graphs, batch, held_out, reference, precision)


def run_bench(cfg: BenchConfig) -> BenchReport:
    """Measure every requested (backend, precision); unavailable ones are rows with status 'skipped'."""
    from flashocc.errors import ConfigError
    from flashocc.models.examples import example_model_batch
    from flashocc.models.presets import build_model, get_config

    unknown = [b for b in cfg.backends if b not in BACKENDS] + [p for p in cfg.precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown backend/precision {unknown}; backends {list(BACKENDS)}, precisions {list(PRECISIONS)}")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device("auto")
    if getattr(get_config(cfg.preset), "family", "") == "sparseocc":
        raise ConfigError(f"{cfg.preset}: SparseOcc has its own stages and comparison; use "
                          "flashocc.deploy.sparseocc_bench.run_sparseocc_bench (what 'flashocc bench' calls)")
    model = build_model(cfg.preset)
    if getattr(model.config, "family", "") == "effocc":  # LiDAR(-camera) stages: flashocc/deploy/effocc_bench.py
        from flashocc.deploy.effocc_bench import bench_stages, effocc_bench_rows

        with tempfile.TemporaryDirectory(prefix="flashocc_bench_") as tmp:
            workdir = Path(cfg.workdir or tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            rows = [BenchRow(**r) for r in effocc_bench_rows(cfg, model, device, workdir)]
        return BenchReport(cfg.preset, cfg.batch_size, _device_name(device), rows, [], asdict(cfg),
                           stages=bench_stages(model))
    temporal = bool(model.config.temporal)
    if temporal and cfg.mode != "full":
        log.warning("%s is temporal: timing the full graph (its pooling indices change every frame)", cfg.preset)
        cfg = replace(cfg, mode="full")
    calib, held_out = _inputs(cfg, model.config)
    if cfg.checkpoint:
        from flashocc.engine.checkpoint import load_checkpoint

        load_checkpoint(model, cfg.checkpoint)
    else:
        calibrate_random_model(model, calib[:2])
    model.eval()
    batch = example_model_batch(model.config, cfg.batch_size)  # timed input (images don't change the work)
    with torch.no_grad():
        reference = model(held_out).numpy()
    tmp = None if cfg.workdir else tempfile.TemporaryDirectory(prefix="flashocc_bench_")
    workdir = Path(cfg.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[BenchRow] = []
    graphs: dict[str, Path] = {}
    trt_graph_made = False
    state_path = workdir / "bench_weights.pt"
    torch.save(model.state_dict(), state_path)
    run = isolated if cfg.isolate and device.type == "cpu" else (lambda fn, *a: fn(*a))
    try:
        for backend in cfg.backends:
            for precision in cfg.precisions:
                log.info("bench %s %s", backend, precision)
                try:
                    if backend in ("torch", "torch-compile", "torch-fused"):
                        rows.append(run(_torch_row, cfg, state_path, batch, held_out, reference, precision,
                                        str(device), backend == "torch-compile", backend == "torch-fused"))
                    elif backend == "onnxruntime":
                        graphs = graphs or _onnx_graphs(cfg, model, workdir, calib)
                        rows.append(run(_ort_row, cfg, graphs, batch, held_out, reference, precision))
                    elif temporal:
                        rows.append(_skip(backend, precision, "the TensorRT path takes precomputed-index graphs; "
                                                              "temporal presets export the full graph only"))
                    else:
                        rows.append(_bench_tensorrt(cfg, model, workdir, batch, held_out, reference, precision, calib,
                                                    exported=trt_graph_made))
                        trt_graph_made = True
                except ImportError as exc:
                    rows.append(_skip(backend, precision, str(exc)))
        ablation = head_ablation(cfg.batch_size, cfg.repeats, cfg.warmup, device, cfg.threads,
                                 cfg.isolate) if cfg.ablation else []
        # Timed in this run, on the same threads, so the peak fractions compare like with like.
        peak = gemm_peak_gflops(device)
        gflop = stage_gflop(model.config, cfg.batch_size)
        rows = [add_throughput(r, gflop, peak if r.precision == "fp32" else None) for r in rows]
    finally:
        if tmp is not None:
            tmp.cleanup()
    return BenchReport(cfg.preset, cfg.batch_size, _device_name(device), rows, ablation, asdict(cfg),
                       stage_gflop=gflop, peak_gflops_per_s=peak)


def _inputs(cfg: BenchConfig, model_cfg) -> tuple[list[dict], dict]:
    """Calibration batches and the held-out batch for the agreement column."""
    from flashocc.models.examples import example_model_batch

    count = max(1, cfg.calib_samples)
    if cfg.data is None:
        return ([example_model_batch(model_cfg, cfg.batch_size) for _ in range(count)],
                example_model_batch(model_cfg, cfg.batch_size))
    from flashocc.data.dataset import DataConfig, OccDataset, collate_batch

    root = Path(cfg.data)
    data_cfg = DataConfig(input_size=model_cfg.input_size, load_occ=False,
                          num_adjacent=model_cfg.num_frames - 1)
    train = OccDataset(root, root / "infos_train.pkl", data_cfg)
    val = OccDataset(root, root / "infos_val.pkl", data_cfg)
    keys = ("img", "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda")

    def batches(dataset, start: int, n: int) -> list[dict]:
        picked = [dataset[i % len(dataset)] for i in range(start, start + n * cfg.batch_size)]
        out = [collate_batch(picked[i:i + cfg.batch_size]) for i in range(0, len(picked), cfg.batch_size)]
        return [{k: b[k] for k in keys} for b in out]

    return batches(train, 0, count), batches(val, 0, 1)[0]


def _onnx_graphs(cfg: BenchConfig, model: nn.Module, workdir: Path, calib: list[dict]) -> dict[str, Path]:
    """fp32 export of this model, its INT8 (calibrated on ``calib``) and FP16 versions (always remade:
    a graph left in the workdir may hold other weights)."""
    from flashocc.deploy.onnx import export_onnx
    from flashocc.deploy.quantize import convert_fp16, quantize_int8

    fp32 = workdir / f"{cfg.preset}_{cfg.mode}.onnx"
    graphs = {"fp32": fp32, "int8": workdir / f"{cfg.preset}_{cfg.mode}_int8.onnx",
              "fp16": workdir / f"{cfg.preset}_{cfg.mode}_fp16.onnx"}
    export_onnx(model, fp32, mode=cfg.mode, batch_size=cfg.batch_size)
    if "int8" in cfg.precisions:
        quantize_int8(fp32, graphs["int8"], calib)
    if "fp16" in cfg.precisions:
        convert_fp16(fp32, graphs["fp16"])
    return graphs


def _device_name(device: torch.device) -> str:
    if device.type != "cpu":
        return device_name(device)
    import os

    return f"CPU ({os.cpu_count()} cores visible, torch threads {torch.get_num_threads()})"


def throughput_lines(report: BenchReport) -> list[str]:
    """Achieved GFLOP/s per stage and its share of the run's GEMM peak (fp32 rows)."""
    rows = [r for r in report.rows if r.gflops_per_s]
    if not rows:
        return []
    work = "".join(f"{report.stage_gflop.get(s, 0.0):>15.1f}" for s in STAGES)
    peak = "-" if report.peak_gflops_per_s is None else f"{report.peak_gflops_per_s:.1f}"
    lines = ["", f"achieved GFLOP/s (% of the fp32 GEMM peak, {peak} GFLOP/s in this run):",
             f"{'GFLOP':<20}{work}{sum(report.stage_gflop.values()):>10.1f}"]
    for r in rows:
        cells = []
        for s in (*STAGES, "total"):
            rate, frac = r.gflops_per_s.get(s), r.peak_fraction.get(s)
            cell = "-" if rate is None else f"{rate:.1f}" + ("" if frac is None else f" ({100 * frac:.0f}%)")
            cells.append(f"{cell:>15}" if s != "total" else f"{cell:>10}")
        lines.append(f"{r.backend:<14}{r.precision:<6}" + "".join(cells))
    return lines


def format_table(report: BenchReport) -> str:
    """The side-by-side text table of a report (what ``flashocc bench`` prints)."""
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    head = (f"{'backend':<14}{'prec':<6}" + "".join(f"{s:>15}" for s in report.stages)
            + f"{'total ms':>10}{'FPS':>8}{'mem MiB':>9}{'agree %':>9}")
    lines = [f"{report.preset}  batch {report.batch_size}  {report.device}  (median ms per stage)", head, "-" * len(head)]
    for r in report.rows:
        if r.status != "ok":
            lines.append(f"{r.backend:<14}{r.precision:<6}{r.status}: {r.reason}")
            continue
        stages = "".join(f"{ms(r.stages_ms.get(s)):>15}" for s in report.stages)
        agree = "-" if r.agreement is None else f"{100 * r.agreement:.3f}"
        lines.append(f"{r.backend:<14}{r.precision:<6}{stages}{ms(r.total_ms):>10}{r.fps:>8.2f}"
                     f"{ms(r.peak_mem_mib):>9}{agree:>9}")
    lines += throughput_lines(report)
    if freed_memory_is_kept():
        lines.append("mem MiB: not measured, freed memory is kept for reuse (--reuse-memory, flashocc/cpu_memory.py)")
    if report.ablation:
        lines += ["", "occupancy part (BEV encoder + head), torch fp32:",
                  f"{'preset':<18}{'head':<20}{'latency ms':>11}{'mem MiB':>9}{'params':>12}"]
        for a in report.ablation:
            lines.append(f"{a['preset']:<18}{a['head']:<20}{a['latency_ms']:>11.1f}{ms(a['peak_mem_mib']):>9}"
                         f"{a['params']:>12,}")
        if len(report.ablation) == 2 and report.ablation[0]["latency_ms"] > 0:
            r2d, r3d = report.ablation
            no_peak = None in (r2d["peak_mem_mib"], r3d["peak_mem_mib"])  # an allocator without a peak (MPS)
            memory = "-" if no_peak else f"x{r3d['peak_mem_mib'] / max(r2d['peak_mem_mib'], 1e-6):.2f}"
            lines.append(f"3D / 2D: latency x{r3d['latency_ms'] / r2d['latency_ms']:.2f}, memory {memory}")
    return "\n".join(lines)

"""``flashocc bench sparseocc-*``: SparseOcc's stages and peak memory, side by side with a FlashOcc preset.

SparseOcc stages, timed one after another as ``SparseOcc.forward`` calls them (their sum is one eval
forward): ``backbone_fpn`` (ResNet + FPN on all T·N images, one frame at a time into the sampling layout:
``SparseOcc.encode_grouped``), ``voxel_l0`` .. ``voxel_l2`` (each level of the
sparse voxel decoder: position encoding, self-attention, multi-view sampling, mixing, lift to 8 children,
segmentation head, top-k; level 0 also builds the sampling context), ``mask_decoder`` (the mask transformer,
both passes) and ``merge`` (semantic / panoptic merge into the dense grid). Level boundaries are marked by
forward pre-hooks on the decoder layers, so the model's own loop runs unchanged. ``backbone_1frame`` is
ResNet + FPN on the current frame's N images only: what each new frame costs online with a per-frame
feature cache (SparseOcc@af4d9df loaders/pipelines/loading.py, load_online, the 17.3 FPS setting); the
``online_ms`` column adds the decoders and the merge to it (a sum of measured parts).

The FlashOcc preset (default ``flashocc-r50-m1``; ``flashocc-tiny`` for ``sparseocc-tiny``) gets the same
current-frame images (BGR 0..255, normalised as its data pipeline does: ``flashocc.data.transforms.
normalize_image``) with the example rig's calibration, and its own four stages (``flashocc.deploy.bench``).
Rounds are interleaved (SparseOcc, then FlashOcc, per round) in one process, so a load change on a shared
machine hits both alike. Peak memory is the resident-set growth over one forward, each model in a fresh
process on the CPU (freed memory stays in the allocator and would hide the second model's growth), the
allocator's peak on an accelerator. Random weights: the work does not depend on them (fixed top-k sizes).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flashocc.atomic import atomic_write
from flashocc.deploy.bench import STAGES as FLASHOCC_STAGES, stage_round_ms
from flashocc.deploy.timing import PeakMemory, isolated, sync
from flashocc.device import device_name, resolve_device
from flashocc.errors import ConfigError

log = logging.getLogger(__name__)

COMPARE_DEFAULT = {"sparseocc-tiny": "flashocc-tiny"}  # every other SparseOcc preset: flashocc-r50-m1
# mmcv ImageNet statistics, indexed by channel position (FlashOcc's BGR quirk: transforms.normalize_image).
_MEAN, _STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def sparseocc_stages(num_levels: int) -> list[str]:
    return ["backbone_fpn", *(f"voxel_l{i}" for i in range(num_levels)), "mask_decoder", "merge"]


@dataclass
class SparseOccBenchConfig:
    preset: str = "sparseocc-r50"
    compare: str | None = None          # FlashOcc preset timed beside it (None: COMPARE_DEFAULT or flashocc-r50-m1)
    repeats: int = 3                    # interleaved timed rounds (median reported)
    warmup: int = 1
    threads: int | None = None
    seed: int = 0
    isolate: bool = True                # CPU peak memory of each model in its own process
    fused: bool = False                 # also time both models' fused inference copies (model.fuse())

    def check(self) -> None:
        for name in ("repeats", "warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "repeats" else 0):
                raise ConfigError(f"flashocc bench {self.preset}: bench.{name} must be an integer >= "
                                  f"{1 if name == 'repeats' else 0}, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"flashocc bench {self.preset}: bench.threads must be None or an integer >= 1, got "
                              f"{self.threads!r}")

    @property
    def compare_preset(self) -> str:
        return self.compare or COMPARE_DEFAULT.get(self.preset, "flashocc-r50-m1")


@dataclass
class ModelTiming:
    preset: str
    stages_ms: dict[str, float]
    total_ms: float                     # median of the per-round stage sums (one forward)
    fps: float
    peak_mem_mib: float | None
    params: int
    images: int                         # images per forward
    online_ms: float | None = None      # SparseOcc: backbone_1frame + decoders + merge


@dataclass
class SparseOccBenchReport:
    device: str
    input_size: tuple[int, int]
    sparseocc: ModelTiming
    flashocc: ModelTiming
    ratios: dict[str, float] = field(default_factory=dict)  # sparseocc / flashocc
    sparseocc_fused: ModelTiming | None = None             # with SparseOccBenchConfig.fused
    flashocc_fused: ModelTiming | None = None
    fused_ratios: dict[str, float] = field(default_factory=dict)  # fused sparseocc / fused flashocc
    config: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as f:
            f.write(self.to_json())
        return path


# ---- inputs ------------------------------------------------------------------------------------------
def sparseocc_input(cfg: Any, seed: int) -> dict[str, torch.Tensor]:
    from flashocc.models.sparseocc.examples import example_batch

    return example_batch(cfg, 1, seed=seed)


def flashocc_input(flash_cfg: Any, sparse_batch: dict, num_views: int) -> dict[str, torch.Tensor]:
    """The FlashOcc batch on the current frame's images of ``sparse_batch`` (resized to the FlashOcc
    input size if the two presets differ), normalised per channel position as FlashOcc's pipeline does."""
    from flashocc.models.examples import example_model_batch

    batch = example_model_batch(flash_cfg, 1)
    img = sparse_batch["img"][:, :num_views].float()  # (1, N, 3, H, W) BGR 0..255, frame t
    h, w = flash_cfg.input_size
    if tuple(img.shape[-2:]) != (h, w):
        img = F.interpolate(img.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False).view(
            1, num_views, 3, h, w)
    mean, std = torch.tensor(_MEAN).view(1, 1, 3, 1, 1), torch.tensor(_STD).view(1, 1, 3, 1, 1)
    if batch["img"].shape != img.shape:
        raise ConfigError(f"flashocc bench: the comparison preset {flash_cfg.name} takes images "
                          f"{tuple(batch['img'].shape)}, not the current frame's {tuple(img.shape)}; "
                          "choose a single-frame preset with the same cameras (e.g. flashocc-r50-m1)")
    batch["img"] = (img - mean) / std
    return batch


# ---- timing ------------------------------------------------------------------------------------------
class _LevelMarks:
    """Forward pre-hooks that time-stamp the start of each voxel-decoder level (after a device sync)."""

    def __init__(self, layers: nn.ModuleList, device: torch.device) -> None:
        self.times: list[float] = []
        self.handles = [layer.register_forward_pre_hook(self._mark) for layer in layers]
        self.device = device

    def _mark(self, module: nn.Module, args: Any) -> None:
        sync(self.device)
        self.times.append(time.perf_counter())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def sparseocc_round(model: nn.Module, batch: dict, device: torch.device, seed: int) -> dict[str, float]:
    """One eval forward of SparseOcc, stage by stage (module docstring), in ms; plus ``backbone_1frame``."""
    cfg = model.cfg
    transformer = model.pts_bbox_head.transformer
    marks = _LevelMarks(transformer.voxel_decoder.decoder_layers, device)
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            sync(device)
            t0 = time.perf_counter()
            grouped = model.encode_grouped(batch["img"])  # as forward does in inference
            sync(device)
            t1 = time.perf_counter()
            h, w = batch["img"].shape[-2:]
            ctx = model.image_context(grouped, batch, (h + -h % 32, w + -w % 32))
            levels = transformer.voxel_decoder(ctx, batch["img"].shape[0])
            sync(device)
            t2 = time.perf_counter()
            mask_preds, class_preds = transformer.decoder(levels[-1].coords, levels[-1].feats, ctx, generator)
            sync(device)
            t3 = time.perf_counter()
            model.merge(levels, mask_preds, class_preds)
            sync(device)
            t4 = time.perf_counter()
            model.image_encoder(batch["img"][:, :cfg.num_views])
            sync(device)
            t5 = time.perf_counter()
    finally:
        marks.remove()
    starts = [t1, *marks.times[1:], t2]  # level 0 also builds the sampling context
    out = {"backbone_fpn": t1 - t0}
    out.update({f"voxel_l{i}": b - a for i, (a, b) in enumerate(zip(starts, starts[1:]))})
    out.update(mask_decoder=t3 - t2, merge=t4 - t3, backbone_1frame=t5 - t4)
    return {k: v * 1e3 for k, v in out.items()}


def _build(preset: str, device: torch.device, seed: int, fused: bool = False) -> nn.Module:
    from flashocc.models.presets import build_model

    torch.manual_seed(seed)
    model = build_model(preset).eval().to(device)
    return model.fuse() if fused else model


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def peak_memory(preset: str, batch: dict, device: str, seed: int, threads: int | None, sparse: bool,
                fused: bool = False) -> float | None:
    """MiB of memory growth over one forward of a freshly built ``preset`` (the body of an isolated run);
    ``sparse``: a SparseOcc preset (its mask-guided draws get a seeded generator); ``fused``: its
    ``model.fuse()`` copy."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    model, batch = _build(preset, dev, seed, fused), _to(batch, dev)
    with torch.no_grad():
        with PeakMemory(dev) as mem:
            if sparse:
                model(batch, generator=torch.Generator().manual_seed(seed))
            else:
                model(batch)
    return mem.peak_mib


def _timing(preset: str, params: int, rounds: list[dict[str, float]], stages: list[str], mem: float | None,
            images: int) -> ModelTiming:
    med = {s: statistics.median(r[s] for r in rounds) for s in stages}
    total = statistics.median(sum(r[s] for s in stages) for r in rounds)
    return ModelTiming(preset, med, total, 1e3 / total, mem, params, images)


def _ratios(sparse: ModelTiming, flash: ModelTiming) -> dict[str, float]:
    ratios = {"total": sparse.total_ms / flash.total_ms, "online": sparse.online_ms / flash.total_ms,
              "image_encoder": sparse.stages_ms["backbone_fpn"] / flash.stages_ms["image_encoder"],
              "image_encoder_1frame": sparse.stages_ms["backbone_1frame"] / flash.stages_ms["image_encoder"],
              "params": sparse.params / flash.params}
    if sparse.peak_mem_mib is not None and flash.peak_mem_mib:
        ratios["peak_mem"] = sparse.peak_mem_mib / flash.peak_mem_mib
    return ratios


def run_sparseocc_bench(cfg: SparseOccBenchConfig) -> SparseOccBenchReport:
    from flashocc.models.presets import count_parameters, get_config

    cfg.check()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    sparse_cfg, flash_cfg = get_config(cfg.preset), get_config(cfg.compare_preset)
    if getattr(sparse_cfg, "family", "") != "sparseocc":
        raise ConfigError(f"flashocc bench: {cfg.preset} is not a SparseOcc preset")
    if getattr(flash_cfg, "family", "") != "camera-lss":
        raise ConfigError(f"flashocc bench {cfg.preset}: --compare {cfg.compare_preset} must be a single-frame "
                          f"FlashOcc preset (family camera-lss), found family {getattr(flash_cfg, 'family', '?')}")
    device = resolve_device("auto")
    sparse_cpu = sparseocc_input(sparse_cfg, cfg.seed)
    flash_cpu = flashocc_input(flash_cfg, sparse_cpu, sparse_cfg.num_views)
    sparse_batch, flash_batch = _to(sparse_cpu, device), _to(flash_cpu, device)
    variants = ("eager", "fused") if cfg.fused else ("eager",)
    models = {}
    for variant in variants:
        models["sparse", variant] = _build(cfg.preset, device, cfg.seed, variant == "fused")
        models["flash", variant] = _build(cfg.compare_preset, device, cfg.seed, variant == "fused")
    params = count_parameters(models["sparse", "eager"]), count_parameters(models["flash", "eager"])
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {k: [] for k in models}
    for i in range(cfg.warmup + cfg.repeats):
        log.info("bench %s round %d/%d", cfg.preset, i + 1, cfg.warmup + cfg.repeats)
        for (kind, variant), model in models.items():  # interleaved: a load change hits every variant alike
            r = (sparseocc_round(model, sparse_batch, device, cfg.seed) if kind == "sparse"
                 else stage_round_ms(model, flash_batch, device))
            if i >= cfg.warmup:
                rounds[kind, variant].append(r)
    del models
    run = isolated if cfg.isolate and device.type == "cpu" else (lambda fn, *a: fn(*a))
    stages = sparseocc_stages(sparse_cfg.num_voxel_layers)
    timings: dict[tuple[str, str], ModelTiming] = {}
    for variant in variants:
        fused = variant == "fused"
        mem_sparse = run(peak_memory, cfg.preset, sparse_cpu, str(device), cfg.seed, cfg.threads, True, fused)
        mem_flash = run(peak_memory, cfg.compare_preset, flash_cpu, str(device), cfg.seed, cfg.threads, False, fused)
        sparse_rounds = rounds["sparse", variant]
        sparse = _timing(cfg.preset, params[0], sparse_rounds, stages, mem_sparse,
                         sparse_cfg.num_frames * sparse_cfg.num_views)
        sparse.online_ms = statistics.median(r["backbone_1frame"] + sum(r[s] for s in stages[1:])
                                             for r in sparse_rounds)
        sparse.stages_ms["backbone_1frame"] = statistics.median(r["backbone_1frame"] for r in sparse_rounds)
        timings["sparse", variant] = sparse
        timings["flash", variant] = _timing(cfg.compare_preset, params[1], rounds["flash", variant],
                                            list(FLASHOCC_STAGES), mem_flash, sparse_cfg.num_views)
    report = SparseOccBenchReport(_device_label(device), tuple(sparse_cfg.input_size), timings["sparse", "eager"],
                                  timings["flash", "eager"], _ratios(timings["sparse", "eager"], timings["flash", "eager"]),
                                  asdict(cfg))
    if cfg.fused:
        report.sparseocc_fused, report.flashocc_fused = timings["sparse", "fused"], timings["flash", "fused"]
        report.fused_ratios = _ratios(report.sparseocc_fused, report.flashocc_fused)
    return report


def _device_label(device: torch.device) -> str:
    if device.type != "cpu":
        return device_name(device)
    return f"CPU ({os.cpu_count()} cores visible, torch threads {torch.get_num_threads()})"


def format_sparseocc_report(report: SparseOccBenchReport) -> str:
    """The text table ``flashocc bench sparseocc-*`` prints: each model's stages, then totals and ratios."""
    s, f = report.sparseocc, report.flashocc

    def mem(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = [f"{s.preset} vs {f.preset}  {report.device}  input {report.input_size[0]}x{report.input_size[1]}, "
             f"median of {report.config.get('repeats')} interleaved rounds (ms)", ""]
    variants = [("", s, f)]
    if report.sparseocc_fused is not None and report.flashocc_fused is not None:
        variants.append((", fused", report.sparseocc_fused, report.flashocc_fused))
    for label, *pair in variants:
        for timing in pair:
            lines.append(f"{timing.preset}{label} ({timing.images} images, {timing.params:,} parameters)")
            lines += [f"  {name:<16}{ms:>10.1f}" for name, ms in timing.stages_ms.items()]
            lines.append(f"  {'total':<16}{timing.total_ms:>10.1f}   {timing.fps:.2f} FPS, peak memory "
                         f"{mem(timing.peak_mem_mib)} MiB")
            if timing.online_ms is not None:
                lines.append(f"  {'online':<16}{timing.online_ms:>10.1f}   (backbone_1frame + decoders + merge: "
                             f"per-frame feature cache)")
            lines.append("")
    lines.append(f"{s.preset} / {f.preset}: " + ", ".join(f"{k} x{v:.2f}" for k, v in report.ratios.items()))
    if report.fused_ratios:
        lines.append(f"{s.preset} / {f.preset}, both fused: "
                     + ", ".join(f"{k} x{v:.2f}" for k, v in report.fused_ratios.items()))
        fs, ff = report.sparseocc_fused, report.flashocc_fused
        lines.append(f"eager / fused: {s.preset} x{s.total_ms / fs.total_ms:.2f}, {f.preset} x{f.total_ms / ff.total_ms:.2f}")
    return "\n".join(lines)


__all__ = ["SparseOccBenchConfig", "SparseOccBenchReport", "ModelTiming", "run_sparseocc_bench",
           "format_sparseocc_report", "sparseocc_round", "sparseocc_stages", "flashocc_input"]

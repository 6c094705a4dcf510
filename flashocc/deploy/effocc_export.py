"""ONNX export of the EFFOcc presets with the dense ("height-binned") LiDAR encoder, and the runtime feeds
of those graphs.

One graph: ``points`` (B, P, 5) float32 padded point clouds with ``num_points`` (B,) int64 (rows at or
past ``num_points[b]`` are padding, masked inside the graph: no data-dependent slicing), plus for the
fusion presets the camera inputs of the camera graphs (``img`` and the calibration in ``full`` mode,
``img`` and the five pooling index arrays in ``precomputed`` mode) and ``lidar_depth`` (B, N, H, W)
for the LiDAR-assisted depth net. The sparse-encoder presets (the official effocc-fusion-r18/-r50/-swinb,
effocc-lidar) are refused: their rulebooks (which sites a sparse conv reads and writes) are built
from each frame's voxel coordinates, a data-dependent gather/scatter plan that has no static ONNX form.

The voxel statistics of ``HeightBinnedEncoder.rasterize`` (``index_add_`` in eager mode) are computed
here like the camera pooling of ``flashocc.deploy.pooling``: sorted by voxel, prefix-summed and read at
the end of each run, so the graph has no scatter with add-reduction (which ONNX Runtime runs racily
with more than one thread) and is deterministic at any thread count.

This module imports neither ``flashocc.deploy.onnx`` nor ``flashocc.deploy.runtime`` (both call into it):
what it needs from them (``ExportSpec``, the metadata writer, the camera feeds) is passed in.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flashocc.deploy.pooling import exportable_pool, pool_sorted_runs
from flashocc.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# The camera graphs' input names (flashocc.batch.INPUT_KEYS and flashocc.deploy.onnx.INDEX_KEYS), in order.
CALIBRATION_INPUTS = ("sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda")
INDEX_INPUTS = ("ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths")
POINT_FEATURES = 5  # x, y, z, intensity, Δt (the batch key `points`)
# ONNX node-name scopes of the EFFOcc stages (the TorchScript exporter names nodes by module path).
STAGE_SCOPES: dict[str, tuple[str, ...]] = {
    "voxelize": ("/voxelize/",),
    "lidar_encoder": ("/pts_middle_encoder/", "/pts_voxel_encoder/"),
    "camera": ("/img_backbone/", "/img_neck/", "/img_view_transformer/", "/depth_net/", "/lidar_input_net/"),
    "fuser": ("/occ_fuser/",),
    "bev_encoder": ("/pts_backbone/", "/pts_neck/"),
    "head": ("/occ_head/",),
}
STAGES: tuple[str, ...] = tuple(STAGE_SCOPES)


def node_stage(name: str, has_camera: bool) -> str:
    """The EFFOcc stage of an exported node; unscoped nodes are the camera geometry and pooling (fusion)
    or the glue between the LiDAR stages (LiDAR-only), counted with voxelization."""
    for stage, prefixes in STAGE_SCOPES.items():
        if any(p in name for p in prefixes):
            return stage
    return "camera" if has_camera else "voxelize"


def is_effocc(model_or_cfg: Any) -> bool:
    cfg = getattr(model_or_cfg, "config", model_or_cfg)
    return getattr(cfg, "family", "") == "effocc"


def check_exportable(cfg: Any) -> None:
    """A ``ConfigError`` for the sparse-encoder EFFOcc configs, naming what is supported and why."""
    if cfg.lidar_encoder != "height":
        raise ConfigError(
            f"{cfg.name}: model.lidar_encoder='{cfg.lidar_encoder}' cannot be exported to ONNX: the sparse 3D convs "
            "build their rulebooks (which voxel sites each conv reads and writes) from every frame's own voxel "
            "coordinates, a data-dependent plan with no static ONNX form. Export covers the EFFOcc configs with the "
            "dense LiDAR encoder (model.lidar_encoder='height': effocc-fusion-tiny, effocc-lidar-tiny); run the "
            "sparse presets in PyTorch (flashocc predict / eval / bench)")


def has_lidar_depth_input(model: nn.Module) -> bool:
    return model.has_camera and hasattr(model.img_view_transformer, "lidar_input_net")


def graph_input_names(model: nn.Module, mode: str) -> tuple[str, ...]:
    """The exported graph's inputs, in ``EFFOccGraph.forward``'s order."""
    names: tuple[str, ...] = ("points", "num_points")
    if model.has_camera:
        names += ("img", *(CALIBRATION_INPUTS if mode == "full" else INDEX_INPUTS))
        if has_lidar_depth_input(model):
            names += ("lidar_depth",)
    return names


class PaddedRasterizer(nn.Module):
    """``HeightBinnedEncoder.rasterize`` on padded points: (B, P, ≥4) with counts (B,) -> (B, 3·Dz, Dy, Dx).

    Padding rows and points outside the grid go to one extra "dump" cell with weight 0. A module of its
    own so that its exported nodes are scoped ``/voxelize/`` (stage timing).
    """

    def __init__(self, encoder: nn.Module, accumulate: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.lower, self.voxel_size, self.grid_shape = encoder.lower, encoder.voxel_size, encoder.grid_shape
        self.num_features = encoder.NUM_FEATURES
        self.accumulate = accumulate

    def forward(self, points: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        b, p = points.shape[:2]
        dx, dy, dz = self.grid_shape
        cells = dz * dy * dx
        valid = torch.arange(p).view(1, p) < num_points.view(b, 1)                      # (B, P)
        pts = torch.where(valid.unsqueeze(-1), points[..., :4].float(), torch.zeros_like(points[..., :4]))
        rel = (pts[..., :3] - torch.tensor(self.lower)) / torch.tensor(self.voxel_size)
        idx = torch.floor(rel)  # as the eager floor().long(), compared while still float
        keep = valid & ((idx >= 0) & (idx < torch.tensor([dx, dy, dz], dtype=idx.dtype))).all(dim=-1)
        idx = idx.long()
        cell = (torch.arange(b).view(b, 1) * dz + idx[..., 2]) * dy * dx + idx[..., 1] * dx + idx[..., 0]
        cell = torch.where(keep, cell, torch.full_like(cell, b * cells)).reshape(-1)   # dump cell = B·cells
        rows = torch.stack([torch.ones_like(rel[..., 2]), rel[..., 2] - idx[..., 2] - 0.5, pts[..., 3]], dim=-1)
        cell_sorted, order = torch.sort(cell)
        is_end = torch.cat([cell_sorted[1:] != cell_sorted[:-1], torch.ones(1, dtype=torch.bool)])
        run_ends = torch.nonzero(is_end).squeeze(1)
        sums = pool_sorted_runs(keep.reshape(-1).float(), rows.reshape(-1, self.num_features), order, order,
                                cell_sorted, run_ends, b * cells + 1, self.accumulate)[:b * cells]
        count, zsum, isum = sums.view(b, cells, self.num_features).unbind(dim=-1)
        denom = count.clamp(min=1)
        feats = torch.stack([torch.log1p(count), zsum / denom, isum / denom], dim=1)   # (B, 3, Dz·Dy·Dx)
        return feats.view(b, self.num_features * dz, dy, dx)


class _Scoped(nn.Module):
    """Calls ``fn`` so that its exported nodes are scoped by this module's attribute name; ``fn``'s own
    modules stay registered where they are (one copy of the weights)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self._fn = [fn]  # a list: not registered as a child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn[0](x)


class EFFOccGraph(nn.Module):
    """A dense-encoder EFFOcc as one traceable function: ``forward(points, num_points[, img, *calibration
    or indices[, lidar_depth]])``, the same stages as ``EFFOcc.forward_outputs`` with the rasterization
    and the camera pooling swapped for their exportable forms."""

    def __init__(self, model: nn.Module, mode: str, accumulate: torch.dtype = torch.float64) -> None:
        super().__init__()
        check_exportable(model.config)
        self.model, self.mode, self.accumulate = model, mode, accumulate
        self.voxelize = PaddedRasterizer(model.pts_middle_encoder, accumulate)
        self.lidar_depth = has_lidar_depth_input(model)
        # The dense encoder's convs, scoped /pts_middle_encoder/ (the model calls them from a method).
        self.pts_middle_encoder = _Scoped(model.pts_middle_encoder.convs)

    def camera_bev(self, img: torch.Tensor, rest: tuple[torch.Tensor, ...]) -> torch.Tensor:
        model = self.model
        vt = model.img_view_transformer
        feats = model.encode_images({"img": img})
        if self.lidar_depth:
            *rest, lidar_depth = rest
            depth, context = vt.lift(feats, vt.lidar_features(lidar_depth, feats.shape[-2:]))
        else:
            depth, context = vt.lift(feats)
        pool = exportable_pool(vt, self.mode, rest, self.accumulate)
        return vt.splat(depth, context, feats.shape[:2], pool)

    def forward(self, points: torch.Tensor, num_points: torch.Tensor, *camera: torch.Tensor) -> torch.Tensor:
        model = self.model
        pts_bev = self.pts_middle_encoder(self.voxelize(points, num_points))
        img_bev = self.camera_bev(camera[0], tuple(camera[1:])) if model.has_camera else None
        return model.occ_head(model.bev_encoder(model.fuse_bev(img_bev, pts_bev)))


# ---- inputs -----------------------------------------------------------------------------------------
def pad_points(points: list[torch.Tensor] | tuple[torch.Tensor, ...], min_rows: int = 1,
               source: str = "batch['points']") -> tuple[torch.Tensor, torch.Tensor]:
    """A list of (Nᵢ, 5) clouds -> padded (B, max(Nᵢ, min_rows), 5) float32 (zero rows) and counts (B,) int64."""
    if not isinstance(points, (list, tuple)) or not points:
        raise DataError(f"{source}: expected a non-empty list of (Nᵢ, {POINT_FEATURES}) point tensors, got "
                        f"{type(points).__name__}")
    clouds = [p.detach().cpu() if isinstance(p, torch.Tensor) else torch.from_numpy(np.asarray(p)) for p in points]
    for i, p in enumerate(clouds):
        if p.dim() != 2 or p.shape[1] != POINT_FEATURES:
            raise DataError(f"{source}[{i}]: expected shape (N, {POINT_FEATURES}) (x, y, z, intensity, Δt), got "
                            f"{tuple(p.shape)}")
    rows = max(min_rows, *(p.shape[0] for p in clouds))
    padded = torch.zeros(len(clouds), rows, POINT_FEATURES)
    for i, p in enumerate(clouds):
        padded[i, :p.shape[0]] = p.float()
    return padded, torch.tensor([p.shape[0] for p in clouds], dtype=torch.int64)


def example_points(cfg: Any, num_points: int = 4000, seed: int = 0) -> torch.Tensor:
    """(num_points, 5) random points over the occupancy grid (some outside it, as real sweeps have)."""
    g = torch.Generator().manual_seed(seed)
    lower, upper = torch.tensor(cfg.grid.lower), torch.tensor(cfg.grid.upper)
    span = upper - lower
    xyz = lower - 0.05 * span + torch.rand(num_points, 3, generator=g) * 1.1 * span
    return torch.cat([xyz, torch.rand(num_points, 1, generator=g), torch.rand(num_points, 1, generator=g) * 0.5], 1)


def example_effocc_batch(cfg: Any, batch_size: int = 1, num_points: int = 4000, seed: int = 0) -> dict[str, Any]:
    """A random EFFOcc input batch: ``points`` (clouds of different lengths), and for the fusion configs the
    example camera rig's inputs with a sparse ``lidar_depth`` image (for export, calibration and bench)."""
    from flashocc.models.examples import example_batch

    g = torch.Generator().manual_seed(seed)
    batch: dict[str, Any] = example_batch(cfg, batch_size) if cfg.camera else {}
    if cfg.camera:
        batch["img"] = torch.randn(batch["img"].shape, generator=g)
        h, w = cfg.input_size
        depth = torch.rand(batch_size, 6, h, w, generator=g) * 44 + 1
        batch["lidar_depth"] = depth * (torch.rand(batch_size, 6, h, w, generator=g) < 0.05)
    batch["points"] = [example_points(cfg, num_points - 97 * i, seed + i) for i in range(batch_size)]
    return batch


def example_inputs(model: nn.Module, mode: str, batch: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """The positional graph inputs for ``batch`` (pooling indices by the model's own code)."""
    points, counts = pad_points(batch["points"])
    out: tuple[torch.Tensor, ...] = (points, counts)
    if model.has_camera:
        if mode == "full":
            rest = tuple(batch[k].float() for k in CALIBRATION_INPUTS)
        else:
            indices = model.img_view_transformer.pool_indices(batch)
            rest = tuple(getattr(indices, k).to(torch.int32) for k in INDEX_INPUTS)
        out += (batch["img"].float(), *rest)
        if has_lidar_depth_input(model):
            out += (batch["lidar_depth"].float(),)
    return out


@torch.no_grad()
def calibrate_random_effocc(model: nn.Module, batches: list[dict]) -> nn.Module:
    """As ``flashocc.deploy.bench.calibrate_random_model`` for EFFOcc: BatchNorm statistics from ``batches``
    and a zero head bias, so a random-weight model's logits depend on its input."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
    model.train()
    for batch in batches:
        model.forward_outputs(batch)
    model.occ_head.predicter[-1].bias.zero_()
    return model.eval()


# ---- export -----------------------------------------------------------------------------------------
def spec_fields(model: nn.Module, mode: str, batch_size: int, accumulate: torch.dtype, opset: int,
                num_cameras: int) -> dict[str, Any]:
    """The ``ExportSpec`` fields of an EFFOcc graph; a LiDAR-only graph has no camera (zero camera fields,
    the pooling grid set to the occupancy grid)."""
    cfg = model.config
    dx, dy, dz = cfg.grid.shape
    common = dict(preset=cfg.name, mode=mode, batch_size=batch_size, output_shape=(batch_size, dx, dy, dz,
                  cfg.grid.num_classes), accumulate=str(accumulate).removeprefix("torch."), opset=opset,
                  inputs=graph_input_names(model, mode))
    if not model.has_camera:
        return dict(common, input_size=(0, 0), downsample=0, depth_bins=(0.0, 0.0, 0.0), sid=False,
                    lower=tuple(cfg.grid.lower), interval=tuple(cfg.grid.voxel_size), grid_size=tuple(cfg.grid.shape),
                    num_cameras=0)
    vt = model.img_view_transformer
    return dict(common, input_size=tuple(vt.input_size), downsample=vt.downsample, depth_bins=tuple(vt.depth_bins),
                sid=bool(vt.sid), lower=tuple(vt.lower), interval=tuple(vt.interval), grid_size=tuple(vt.grid_size),
                num_cameras=num_cameras)


def export_effocc(model: nn.Module, out: str | os.PathLike, *, mode: str, opset: int, batch_size: int,
                  accumulate: torch.dtype, exporter: str, spec_cls: type, write_metadata: Callable[[Path, Any], None]
                  ) -> Path:
    """Export a dense-encoder EFFOcc (``flashocc.deploy.onnx.export_onnx`` dispatches here, passing its
    ``ExportSpec`` class and metadata writer). The LiDAR-only graph has no camera inputs, so ``mode`` only
    matters for fusion. Written atomically; the model is put in eval mode."""
    check_exportable(model.config)
    if exporter != "torchscript":
        raise ValueError(f"{model.config.name}: EFFOcc graphs are exported with exporter='torchscript' only (its "
                         f"module-path node names time the stages), got '{exporter}'")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    model = model.eval().cpu()  # traced on CPU; moved back below
    graph = EFFOccGraph(model, mode, accumulate).eval()
    batch = example_effocc_batch(model.config, batch_size)
    inputs = example_inputs(model, mode, batch)
    names = list(graph_input_names(model, mode))
    dynamic = {"points": {1: "max_points"}}
    if model.has_camera and mode == "precomputed":
        dynamic.update({k: {0: "pool_points"} for k in INDEX_INPUTS[:3]})
        dynamic.update({k: {0: "intervals"} for k in INDEX_INPUTS[3:]})
    num_cameras = batch["img"].shape[1] if model.has_camera else 0
    spec = spec_cls(**spec_fields(model, mode if model.has_camera else "full", batch_size, accumulate, opset,
                                  num_cameras))
    start = time.perf_counter()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out.parent)  # written atomically, as export_onnx does
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(graph, inputs, tmp, input_names=names, output_names=["logits"], opset_version=opset,
                              dynamic_axes=dynamic, dynamo=False)
        write_metadata(Path(tmp), spec)
        os.replace(tmp, out)
    finally:
        model.to(device)
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported %s (inputs %s, opset %d) to %s in %.1f s", spec.preset, ", ".join(names), opset, out,
             time.perf_counter() - start)
    return out


# ---- runtime feeds ----------------------------------------------------------------------------------
def effocc_feeds(spec: Any, batch: Mapping[str, Any], camera_feeds: Callable[[dict], dict[str, np.ndarray]] | None,
                 source: str = "the graph") -> list[dict[str, np.ndarray]]:
    """Input dicts of an EFFOcc graph for ``batch``, one per exported-batch-size chunk: ``points`` padded to
    the chunk's longest cloud with ``num_points``, ``lidar_depth`` when the graph takes it, and the camera
    inputs from ``camera_feeds(chunk)`` (``flashocc.deploy.runtime`` passes its camera-graph feeds)."""
    if "points" not in batch:
        raise KeyError(f"{source}: batch is missing 'points' (a list of (Nᵢ, {POINT_FEATURES}) tensors); the "
                       f"{spec.preset} graph takes {list(spec.inputs)}")
    points = list(batch["points"]) if isinstance(batch["points"], (list, tuple)) else batch["points"]
    if not isinstance(points, list):
        raise DataError(f"{source}: batch['points'] must be a list of (Nᵢ, {POINT_FEATURES}) tensors, got "
                        f"{type(points).__name__}")
    b, size = len(points), spec.batch_size
    if b % size:
        raise ValueError(f"{source}: exported for batches of {size}; got a batch of {b} "
                         f"(re-export with a batch size dividing {b})")
    wants_depth = "lidar_depth" in spec.inputs
    if wants_depth:
        if "lidar_depth" not in batch:
            raise KeyError(f"{source}: batch is missing 'lidar_depth' (B, N, H, W) metres; the {spec.preset} graph "
                           f"takes {list(spec.inputs)}")
        depth = batch["lidar_depth"]
        depth = depth.detach().cpu() if isinstance(depth, torch.Tensor) else torch.from_numpy(np.asarray(depth))
        depth = depth.float()
        h, w = spec.input_size
        if tuple(depth.shape) != (b, spec.num_cameras, h, w):
            raise ValueError(f"{source}: lidar_depth must be ({b}, {spec.num_cameras}, {h}, {w}) for preset "
                             f"{spec.preset}, got {tuple(depth.shape)}")
    out = []
    for start in range(0, b, size):
        padded, counts = pad_points(points[start:start + size], source=f"{source}: batch['points']")
        feed = {"points": padded.numpy(), "num_points": counts.numpy()}
        if camera_feeds is not None:
            chunk = {k: v[start:start + size] for k, v in batch.items()
                     if k not in ("points", "lidar_depth") and isinstance(v, (torch.Tensor, np.ndarray))}
            feed.update(camera_feeds(chunk))
        if wants_depth:
            feed["lidar_depth"] = depth[start:start + size].numpy()
        out.append({k: feed[k] for k in spec.inputs})
    return out


__all__ = ["EFFOccGraph", "PaddedRasterizer", "STAGES", "calibrate_random_effocc", "check_exportable",
           "effocc_feeds", "example_effocc_batch", "export_effocc", "graph_input_names", "node_stage", "pad_points"]

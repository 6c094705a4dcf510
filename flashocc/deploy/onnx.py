"""ONNX export of FlashOcc models, in two modes (the official TensorRT path is
FlashOCC@4084861 tools/convert_bevdet_to_TRT.py; docs/official-behaviour.md, "TensorRT path").

``full``         inputs are the PyTorch batch (img, sensor2ego, ego2global, intrinsics, post_rots,
                 post_trans, bda): geometry and BEV pooling run inside the graph.
``precomputed``  inputs are ``img`` and the five pooling index arrays (ranks_depth, ranks_feat,
                 ranks_bev, interval_starts, interval_lengths; int32, dynamic lengths): the TensorRT
                 layout of the official converter, without its custom ``bev_pool_v2`` plugin. The
                 runtime computes the arrays per calibration (``flashocc.deploy.runtime``).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` by default. On torch 2.13
both exporters give exact graphs for both modes, but the TorchScript one (1) names nodes by module
path (``/img_backbone/layer1.0/conv1/Conv``), which INT8/FP16 conversion uses to keep the view
transform in float and ``flashocc bench`` uses to time stages (dynamo names them ``node_Conv_239``),
and (2) exports flashocc-tiny in 1-3 s against 5-6 s. ``exporter="dynamo"`` remains available.
The exported batch size is fixed (default 1, like the official engine); the runtime splits bigger batches.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from flashocc.batch import INPUT_KEYS
from flashocc.deploy.pooling import exportable_pool

log = logging.getLogger(__name__)

MODES = ("full", "precomputed")
INDEX_KEYS: tuple[str, ...] = ("ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths")
OUTPUT_NAME = "logits"
METADATA_KEY = "flashocc"
DEFAULT_OPSET = 17
# The exporter names nodes by module path (``/img_backbone/layer1.0/conv1/Conv``); nodes without a
# module prefix are OccGraph's own: geometry and BEV pooling.
STAGE_SCOPES: dict[str, tuple[str, ...]] = {
    "image_encoder": ("/img_backbone/", "/img_neck/"),
    # OccGraph calls the view transformer's methods, so its depth net (and the depth softmax in it)
    # is scoped /depth_net/.
    "view_transform": ("/img_view_transformer/", "/depth_net/"),
    "bev_encoder": ("/img_bev_encoder_backbone/", "/img_bev_encoder_neck/"),
    "head": ("/occ_head/",),
}
MODEL_SCOPES: tuple[str, ...] = tuple(p for scopes in STAGE_SCOPES.values() for p in scopes)


def node_stage(name: str) -> str:
    """The stage of an exported node name; unscoped nodes (geometry, pooling) are the view transform."""
    for stage, prefixes in STAGE_SCOPES.items():
        if any(p in name for p in prefixes):
            return stage
    return "view_transform"


@dataclass(frozen=True)
class ExportSpec:
    """What a runtime needs to feed an exported graph; stored as JSON in the ONNX metadata."""

    preset: str
    mode: str
    batch_size: int
    input_size: tuple[int, int]          # (H, W) network input
    downsample: int
    depth_bins: tuple[float, float, float]
    sid: bool
    lower: tuple[float, float, float]    # pooling grid, x/y/z metres
    interval: tuple[float, float, float]
    grid_size: tuple[int, int, int]      # (Dx, Dy, Dz) of the pooling grid
    output_shape: tuple[int, ...]        # (B, Dx, Dy, Dz, K)
    accumulate: str                      # dtype of the pooling prefix sum
    opset: int
    num_cameras: int = 6                 # views of the exported img input (3·N for temporal models)
    temporal: bool = False               # frames [t, t-1, t-2] in one graph (TemporalOccGraph)
    # The graph's input names in order when they are not the mode's camera layout: EFFOcc graphs
    # (flashocc.deploy.effocc_export) take points, num_points [, camera inputs, lidar_depth].
    inputs: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ExportSpec:
        d = json.loads(text)
        tuples = ("input_size", "depth_bins", "lower", "interval", "grid_size", "output_shape", "inputs")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})


class OccGraph(nn.Module):
    """The model as one traceable function of tensors (``forward(img, *calibration_or_indices)``).

    The same stages as ``FlashOcc.forward``: ``image_encoder``, the view transformer's own ``lift``
    (depth net and depth/context split) and ``splat``, ``bev_encoder`` and ``occ_head``; only the
    pooling is swapped for the exportable one of ``flashocc.deploy.pooling``.
    """

    def __init__(self, model: nn.Module, mode: str, accumulate: torch.dtype = torch.float64) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"export mode must be one of {MODES}, got '{mode}'")
        self.model, self.mode, self.accumulate = model, mode, accumulate

    def forward(self, img: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        model = self.model
        vt = model.img_view_transformer
        feats = model.image_encoder(img)
        depth, context = vt.lift(feats)
        pool = exportable_pool(vt, self.mode, rest, self.accumulate)
        bev = vt.splat(depth, context, feats.shape[:2], pool)
        return model.occ_head(model.bev_encoder(bev))


def export_spec(model: nn.Module, mode: str, batch_size: int, accumulate: torch.dtype, opset: int,
                num_cameras: int = 6, temporal: bool = False) -> ExportSpec:
    cfg = model.config
    vt = model.img_view_transformer
    dx, dy, dz = cfg.grid.shape
    return ExportSpec(preset=cfg.name, mode=mode, batch_size=batch_size, input_size=tuple(vt.input_size),
                      downsample=vt.downsample, depth_bins=tuple(vt.depth_bins), sid=bool(vt.sid),
                      lower=tuple(vt.lower), interval=tuple(vt.interval), grid_size=tuple(vt.grid_size),
                      output_shape=(batch_size, dx, dy, dz, cfg.grid.num_classes),
                      accumulate=str(accumulate).removeprefix("torch."), opset=opset, num_cameras=num_cameras,
                      temporal=temporal)


def example_inputs(model: nn.Module, mode: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The positional graph inputs for ``batch`` (indices computed by the model's own code)."""
    if mode == "full":
        return tuple(batch[k] for k in INPUT_KEYS)
    indices = model.img_view_transformer.pool_indices(batch)
    return (batch["img"], *(getattr(indices, k).to(torch.int32) for k in INDEX_KEYS))


def export_onnx(model: nn.Module, out: str | os.PathLike, mode: str = "full", opset: int = DEFAULT_OPSET,
                batch_size: int = 1, accumulate: torch.dtype = torch.float64, exporter: str = "torchscript") -> Path:
    """Export ``model`` (a built FlashOcc with ``model.config``) to ``out``; returns the path.

    ``accumulate=torch.float32`` is for TensorRT, which has no float64 (see ``flashocc.deploy.pooling``).
    The file is written atomically and carries an ``ExportSpec`` in its metadata. The model is put in
    eval mode.
    """
    import onnx  # noqa: F401  (fail early with the install hint below)

    from flashocc.models.examples import example_model_batch

    if mode not in MODES:
        raise ValueError(f"export mode must be one of {MODES}, got '{mode}'")
    if getattr(model.config, "family", "") == "effocc":
        # Points, LiDAR depth and (dense encoder only) the LiDAR branch; sparse presets get a ConfigError there.
        from flashocc.deploy.effocc_export import export_effocc

        return export_effocc(model, out, mode=mode, opset=opset, batch_size=batch_size, accumulate=accumulate,
                             exporter=exporter, spec_cls=ExportSpec, write_metadata=_write_metadata)
    temporal = bool(getattr(model.config, "temporal", False))
    if temporal and mode != "full":
        raise ValueError(f"{model.config.name} is temporal: its pooling indices change with every frame's ego "
                         "motion, so only mode='full' (geometry and pooling inside the graph) can be exported")
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got '{exporter}'")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    model = model.eval().cpu()  # traced on CPU; moved back below
    if temporal:
        from flashocc.deploy.temporal_graph import TemporalOccGraph

        graph: nn.Module = TemporalOccGraph(model, accumulate).eval()
    else:
        graph = OccGraph(model, mode, accumulate).eval()
    batch = example_model_batch(model.config, batch_size)
    inputs = example_inputs(model, mode, batch)
    names = list(INPUT_KEYS) if mode == "full" else ["img", *INDEX_KEYS]
    dynamic = None if mode == "full" else {
        **{k: {0: "points"} for k in INDEX_KEYS[:3]}, **{k: {0: "intervals"} for k in INDEX_KEYS[3:]}}
    spec = export_spec(model, mode, batch_size, accumulate, opset, num_cameras=batch["img"].shape[1],
                       temporal=temporal)
    start = time.perf_counter()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            if exporter == "torchscript":
                torch.onnx.export(graph, inputs, tmp, input_names=names, output_names=[OUTPUT_NAME],
                                  opset_version=opset, dynamic_axes=dynamic, dynamo=False)
            else:
                # forward(img, *rest): torch.export wants the varargs as one tuple. min=3 avoids its
                # specialisation guards on 1- and 2-element runs.
                points, runs = torch.export.Dim("points", min=3), torch.export.Dim("intervals", min=3)
                shapes = None if dynamic is None else {
                    "img": None, "rest": ({0: points}, {0: points}, {0: points}, {0: runs}, {0: runs})}
                torch.onnx.export(graph, inputs, tmp, input_names=names, output_names=[OUTPUT_NAME],
                                  opset_version=opset, dynamic_shapes=shapes, dynamo=True, external_data=False)
        _write_metadata(Path(tmp), spec)
        os.replace(tmp, out)
    finally:
        model.to(device)
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported %s (%s mode, opset %d) to %s in %.1f s", spec.preset, mode, opset, out,
             time.perf_counter() - start)
    return out


def _write_metadata(path: Path, spec: ExportSpec) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    onnx.save(proto, str(path))


def read_spec(path: str | os.PathLike) -> ExportSpec:
    """The ``ExportSpec`` stored in an exported file; a clear error for foreign ONNX files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return ExportSpec.from_json(entry.value)
    raise ValueError(f"{path} has no '{METADATA_KEY}' metadata; export it with 'flashocc export' "
                     f"(found keys {[e.key for e in proto.metadata_props]})")


def export_preset(preset: str, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                  mode: str = "full", opset: int = DEFAULT_OPSET, batch_size: int = 1,
                  accumulate: torch.dtype = torch.float64) -> Path:
    """Build ``preset``, load ``checkpoint`` when given (random weights otherwise) and export it."""
    from flashocc.models.presets import build_model

    model = build_model(preset)
    if checkpoint is not None:
        from flashocc.engine.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    else:
        log.warning("exporting %s with random weights (no --checkpoint given)", preset)
    return export_onnx(model, out, mode=mode, opset=opset, batch_size=batch_size, accumulate=accumulate)

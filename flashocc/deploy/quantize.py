"""Post-training quantisation of exported graphs: INT8 (onnxruntime ``quantize_static``, QDQ) and FP16.

What is quantised: the Conv / MatMul / Gemm nodes of the image backbone and neck, the BEV encoder and
the head MLP, per output channel for weights (int8, symmetric) and per tensor for activations (uint8:
the u8s8 kernels are onnxruntime's fast x86 path). The whole view transform stays in float: the depth
net (a 1x1 conv, <1 % of the FLOPs, whose logits go through a softmax that 8-bit inputs would
coarsen), the camera geometry and the BEV pooling (sort, gathers, float64 prefix sums, scatter); the
pooled BEV map is quantised where it enters the first BEV convolution.
"""
from __future__ import annotations

import itertools
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from flashocc.deploy.onnx import METADATA_KEY, MODEL_SCOPES, read_spec
from flashocc.deploy.runtime import PoolIndexCache, graph_feeds, import_onnxruntime

log = logging.getLogger(__name__)

QUANTISED_OPS = ("Conv", "MatMul", "Gemm")


FLOAT_SCOPES: tuple[str, ...] = ("/depth_net/",)


def _in_model(name: str) -> bool:
    """Nodes of the network's modules; the rest is OccGraph's geometry, depth softmax and pooling."""
    return name.startswith(MODEL_SCOPES)


def _check_scoped(graph, path: Path) -> None:
    if not any(_in_model(n.name) for n in graph.node):
        raise ValueError(f"{path}: no node is named by module path (e.g. '/img_backbone/...'), so the network "
                         f"cannot be told from the pooling; export it with the default TorchScript exporter")


def _copy_metadata(src: Path, dst: Path, note: str) -> None:
    import onnx

    spec = read_spec(src)
    proto = onnx.load(str(dst))
    for entry in list(proto.metadata_props):
        if entry.key == METADATA_KEY:
            proto.metadata_props.remove(entry)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    entry = proto.metadata_props.add()
    entry.key, entry.value = "flashocc.precision", note
    _save_atomic(proto, dst)


def _save_atomic(proto, path: Path) -> None:
    import onnx

    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over precomputed feeds (built lazily per batch)."""

    def __init__(self, spec, batches: Iterable[Mapping[str, object]]) -> None:
        self.spec, self.batches = spec, iter(batches)
        self.cache = PoolIndexCache(spec) if spec.mode == "precomputed" else None
        self.pending: list[dict] = []
        self.count = 0

    def get_next(self):
        if not self.pending:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.pending = graph_feeds(self.spec, batch, self.cache)
        self.count += 1
        return self.pending.pop(0)

    def rewind(self) -> None:  # part of the reader protocol in newer onnxruntime; one pass is enough here
        pass


def quantize_int8(onnx_path: str | os.PathLike, out: str | os.PathLike,
                  calibration_batches: Iterable[Mapping[str, object]], method: str = "minmax",
                  exclude_scopes: tuple[str, ...] = ()) -> Path:
    """INT8 QDQ model of ``onnx_path`` calibrated on ``calibration_batches`` (batch dicts, e.g. N samples
    of the validation set); returns ``out``. ``method``: minmax, entropy or percentile.
    ``exclude_scopes``: node-name prefixes kept in float (e.g. ``("/occ_head/",)``)."""
    import_onnxruntime()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {list(methods)}, got '{method}'")
    batches = iter(calibration_batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("quantize_int8: calibration_batches is empty; pass at least one batch dict")
    src, out = Path(onnx_path), Path(out)
    spec = read_spec(src)
    graph = onnx.load(str(src))
    _check_scoped(graph.graph, src)
    float_scopes = FLOAT_SCOPES + tuple(exclude_scopes)
    exclude = [n.name for n in graph.graph.node
               if n.op_type in QUANTISED_OPS and (not _in_model(n.name) or n.name.startswith(float_scopes))]
    reader = _Reader(spec, itertools.chain([first], batches))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / "int8.onnx"
        quantize_static(str(src), str(tmp_out), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTISED_OPS), nodes_to_exclude=exclude, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method],
                        extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True})
        _copy_metadata(src, tmp_out, f"int8 qdq ({method}, {reader.count} calibration samples)")
        os.replace(tmp_out, out)
    log.info("INT8 model (%d calibration samples, %s) written to %s", reader.count, method, out)
    return out


def convert_fp16(onnx_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """FP16 weights and activations for GPU providers; inputs/outputs stay float32 and the geometry and
    pooling (nodes outside the network's modules) stay in their original precision."""
    import_onnxruntime()
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, out = Path(onnx_path), Path(out)
    read_spec(src)
    proto = onnx.load(str(src))
    _check_scoped(proto.graph, src)
    keep = [n.name for n in proto.graph.node if not _in_model(n.name)]
    half = convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep)
    _drop_duplicate_casts(half)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(half, out)
    _copy_metadata(src, out, "fp16 (geometry and pooling in fp32/fp64)")
    return out


def _drop_duplicate_casts(proto) -> None:
    """The converter inserts one identical fp16->fp32 Cast per blocked consumer of a tensor (same name,
    same output); onnxruntime rejects the repeated node names, and one copy is enough."""
    seen: set[tuple] = set()
    kept = []
    for node in proto.graph.node:
        key = (node.name, node.op_type, tuple(node.input), tuple(node.output))
        if node.op_type == "Cast" and key in seen:
            continue
        seen.add(key)
        kept.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)


def calibration_batches(preset: str, count: int, data_root: str | os.PathLike | None = None,
                        infos: str | os.PathLike | None = None, seed: int = 0) -> list[dict]:
    """``count`` batch dicts for calibration: the first samples of a dataset (test-time transform) when
    ``data_root`` and ``infos`` are given, else random images on the nuScenes-like rig of
    ``example_batch`` (enough to exercise the path; real samples give better INT8 ranges)."""
    import torch

    from flashocc.models.examples import example_model_batch
    from flashocc.models.presets import get_config

    if count < 1:
        raise ValueError(f"calibration needs at least one sample, got count={count}")
    cfg = get_config(preset)
    if (data_root is None) != (infos is None):
        raise ValueError("give both data_root and infos for dataset calibration, or neither for random inputs")
    if data_root is None:
        torch.manual_seed(seed)
        return [example_model_batch(cfg, 1) for _ in range(count)]
    from flashocc.data.dataset import DataConfig, OccDataset, collate_batch

    dataset = OccDataset(data_root, infos, DataConfig(input_size=cfg.input_size, load_occ=False,
                                                      num_adjacent=cfg.num_frames - 1))
    return [collate_batch([dataset[i]]) for i in range(min(count, len(dataset)))]

"""TensorRT engines (FP32 / FP16 / INT8) from exported graphs, through TensorRT's Python API.

Needs an NVIDIA GPU, ``tensorrt`` (8.6 or 10.x) and CUDA PyTorch (device buffers are torch tensors,
so neither pycuda nor cuda-python is needed). Use ``precomputed`` graphs exported with
``accumulate=torch.float32`` (TensorRT has no float64; the full graph's sort of every frustum point is
beyond TensorRT's TopK limit). Differences from the official path
(FlashOCC@4084861 tools/convert_bevdet_to_TRT.py; docs/official-behaviour.md#tensorrt-path):
* no ``bev_pool_v2`` plugin: the pooling is the exact sort/prefix-sum/scatter of
  ``flashocc.deploy.pooling``, kept in FP32 inside FP16/INT8 engines (``OBEY_PRECISION_CONSTRAINTS``);
* one optimisation profile with a range of index lengths, not the first sample's exact shapes, and
  indices computed per calibration at run time (``PoolIndexCache``), not once.
INT8 uses ``IInt8EntropyCalibrator2`` (the official ``ENTROPY_CALIBRATION_2``) over N batches. The
calibration profile has fixed shapes, so every calibration image is fed with the first batch's index
arrays: the indices only route values, the activation ranges come from the images.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from flashocc.deploy.onnx import MODEL_SCOPES, OUTPUT_NAME, read_spec
from flashocc.deploy.runtime import PoolIndexCache, graph_feeds

log = logging.getLogger(__name__)


def tensorrt_unavailable_reason() -> str | None:
    """None when engines can be built here, else why not (for skip messages)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install tensorrt; needs an NVIDIA GPU and CUDA PyTorch)"
    if not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch; TensorRT needs an NVIDIA GPU"
    return None


def _import_tensorrt():
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ImportError(reason)
    import tensorrt as trt

    return trt


def _major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def _feeds_on_device(feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in feed.items()} for feed in feeds]


def _make_calibrator(trt, feeds: list[dict[str, torch.Tensor]], cache_file: Path):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.feeds, self.index = feeds, 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks ignore it

        def get_batch(self, names):
            if self.index >= len(self.feeds):
                return None
            feed = self.feeds[self.index]
            self.index += 1
            return [int(feed[name].data_ptr()) for name in names]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.exists() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, precision: str = "fp16",
                 calibration_batches: Sequence[Mapping[str, object]] | None = None,
                 workspace_gib: float = 4.0) -> Path:
    """Parse ``onnx_path``, build a ``precision`` (fp32 | fp16 | int8) engine and write it to ``out``.
    ``calibration_batches`` (batch dicts) are required for int8 and shape the optimisation profile."""
    trt = _import_tensorrt()
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got '{precision}'")
    if precision == "int8" and not calibration_batches:
        raise ValueError("an INT8 engine needs calibration_batches (N batch dicts of representative samples)")
    onnx_path, out = Path(onnx_path), Path(out)
    spec = read_spec(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if _major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))

    from flashocc.models.presets import example_batch, get_config

    batches = list(calibration_batches or [example_batch(get_config(spec.preset), spec.batch_size)])
    cache = PoolIndexCache(spec)
    feeds = [graph_feeds(spec, b, cache)[0] for b in batches]
    profile = builder.create_optimization_profile()
    max_points = spec.batch_size * 6 * int(np.prod(_frustum_shape(spec)))
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(feeds[0][tensor.name].shape)
        if -1 in tuple(tensor.shape):  # the index arrays: any length up to every frustum point
            profile.set_shape(tensor.name, (1,), shape, (max_points,))
        else:
            profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)

    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        # Keep geometry-free pooling (nodes outside the network's modules) in FP32.
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if not layer.name.lstrip("/").startswith(tuple(s.lstrip("/") for s in MODEL_SCOPES)):
                if layer.type not in (trt.LayerType.SHAPE, trt.LayerType.CONSTANT) and \
                        all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)):
                    layer.precision = trt.float32
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        # Fixed calibration shapes: every image rides on the first batch's index arrays (see module doc).
        device_feeds = _feeds_on_device([{**feeds[0], "img": f["img"]} for f in feeds])
        config.int8_calibrator = _make_calibrator(trt, device_feeds, out.with_suffix(".calib"))
        calib_profile = builder.create_optimization_profile()
        for name, value in feeds[0].items():
            calib_profile.set_shape(name, value.shape, value.shape, value.shape)
        config.set_calibration_profile(calib_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path} (see its log above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, out)
    log.info("TensorRT %s engine written to %s", precision, out)
    return out


def _frustum_shape(spec) -> tuple[int, int, int]:
    from flashocc.geometry import depth_bin_values

    h, w = spec.input_size
    return (depth_bin_values(*spec.depth_bins, sid=spec.sid).numel(), h // spec.downsample, w // spec.downsample)


class TensorRTOccModel:
    """Run an engine on a batch dict, like ``OnnxOccModel``; ``onnx_path`` is the graph it came from
    (its metadata says how to build the inputs). Returns logits (B, Dx, Dy, Dz, K) float32 numpy."""

    def __init__(self, engine_path: str | os.PathLike, onnx_path: str | os.PathLike) -> None:
        trt = _import_tensorrt()
        self.spec = read_spec(onnx_path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {engine_path}")
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{engine_path}: cannot deserialise (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.index_cache = PoolIndexCache(self.spec) if self.spec.mode == "precomputed" else None

    def device_memory_mib(self) -> float:
        size = getattr(self.engine, "device_memory_size_v2", None) or self.engine.device_memory_size
        return size / 2**20

    def __call__(self, batch: Mapping[str, object]) -> np.ndarray:
        outs = []
        stream = torch.cuda.current_stream()
        for feed in _feeds_on_device(graph_feeds(self.spec, batch, self.index_cache)):
            for name, value in feed.items():
                self.context.set_input_shape(name, tuple(value.shape))
                self.context.set_tensor_address(name, value.data_ptr())
            out = torch.empty(self.spec.output_shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed (see its log)")
            stream.synchronize()
            outs.append(out.cpu().numpy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

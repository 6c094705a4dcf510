"""ONNX Runtime inference with the PyTorch model's batch dict: ``OnnxOccModel(path)(batch) -> logits``.

For ``precomputed`` graphs the pooling indices are computed here, per calibration, with the model's
own code (``flashocc.geometry`` + ``prepare_bev_pool``), and cached by a hash of the calibration.
Official bug (FlashOCC@4084861 tools/convert_bevdet_to_TRT.py and tools/analysis_tools/benchmark_trt.py;
docs/official-behaviour.md#tensorrt-path): the official converter and ``benchmark_trt.py`` compute the
indices once from the first validation sample and reuse them for every sample, although nuScenes
has two vehicles with different calibrations (the likely cause of its 31.95 -> 30.78 mIoU drop at
TRT FP32). Here a sample whose calibration differs never reuses another sample's indices.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flashocc.batch import INPUT_KEYS, check_inputs
from flashocc.deploy.onnx import INDEX_KEYS, ExportSpec, read_spec
from flashocc.geometry import create_frustum, depth_bin_values, frustum_to_ego, sensor_to_key_ego
from flashocc.models.fuse import CALIBRATION_KEYS, calibration_key
from flashocc.ops.bev_pool import prepare_bev_pool

log = logging.getLogger(__name__)



def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("onnxruntime is not installed; pip install \"flashocc[deploy]\" "
                          "(or onnxruntime-gpu for the CUDA provider)") from exc
    return onnxruntime


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    available = import_onnxruntime().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class PoolIndexCache:
    """Pooling index arrays per calibration, least recently used first out.

    The key hashes what the indices depend on: sensor->key-ego (derived in float64 from sensor2ego and
    ego2global, as the model does), intrinsics, post_rots, post_trans and bda, with their shapes.
    """

    def __init__(self, spec: ExportSpec, max_entries: int = 16) -> None:
        self.spec = spec
        self.max_entries = max_entries
        self.frustum = create_frustum(depth_bin_values(*spec.depth_bins, sid=spec.sid), spec.input_size,
                                      spec.downsample)
        self._entries: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        key = calibration_key(batch)  # the same key as the fused PyTorch model's index cache
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        s2k = sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])
        coords = frustum_to_ego(self.frustum, s2k, *(batch[k].float() for k in CALIBRATION_KEYS))
        indices = prepare_bev_pool(coords, self.spec.lower, self.spec.interval, self.spec.grid_size)
        arrays = {k: getattr(indices, k).to(torch.int32).numpy() for k in INDEX_KEYS}
        self._entries[key] = arrays
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        log.debug("pool indices for calibration %s: %d points, %d cells", key[:8], indices.num_points,
                  arrays["interval_starts"].shape[0])
        return arrays


def as_tensor_batch(batch: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The model inputs of ``batch`` (numpy arrays or tensors) as float32 CPU tensors, validated."""
    missing = [k for k in INPUT_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch is missing {missing}; expected keys {list(INPUT_KEYS)}")
    out = {}
    for k in INPUT_KEYS:
        value = batch[k]
        tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        out[k] = tensor.float()
    check_inputs(out)
    return out


def graph_feeds(spec: ExportSpec, batch: Mapping[str, object], index_cache: PoolIndexCache | None = None,
                source: str = "the graph") -> list[dict[str, np.ndarray]]:
    """Input dicts of an exported graph for ``batch``, one per exported-batch-size chunk.
    ``precomputed`` graphs need ``index_cache`` (a ``PoolIndexCache(spec)``)."""
    if "points" in spec.inputs:  # EFFOcc: padded points (+ LiDAR depth), camera inputs as a camera graph's
        from flashocc.deploy.effocc_export import effocc_feeds

        camera_spec = replace(spec, inputs=())
        if spec.mode == "precomputed" and index_cache is None:
            index_cache = PoolIndexCache(spec)
        camera = (lambda chunk: graph_feeds(camera_spec, chunk, index_cache, source)[0]) if spec.num_cameras else None
        return effocc_feeds(spec, batch, camera, source)
    tensors = as_tensor_batch(batch)
    b = tensors["img"].shape[0]
    size = spec.batch_size
    if b % size:
        raise ValueError(f"{source}: exported for batches of {size}; got a batch of {b} "
                         f"(re-export with a batch size dividing {b})")
    h, w = spec.input_size
    if tuple(tensors["img"].shape[-4:]) != (spec.num_cameras, 3, h, w):
        raise ValueError(f"{source}: img must be (B, {spec.num_cameras}, 3, {h}, {w}) for preset {spec.preset}, "
                         f"got {tuple(tensors['img'].shape)}")
    if spec.mode == "precomputed" and index_cache is None:
        index_cache = PoolIndexCache(spec)
    out = []
    for start in range(0, b, size):
        chunk = {k: v[start:start + size] for k, v in tensors.items()}
        if spec.mode == "full":
            out.append({k: chunk[k].numpy() for k in INPUT_KEYS})
        else:
            out.append({"img": chunk["img"].numpy(), **index_cache(chunk)})
    return out


class OnnxOccModel:
    """Run an exported FlashOcc graph (from ``flashocc export``) on a batch dict.

    ``threads``: intra-op threads (None = onnxruntime's default). ``providers``: default CUDA when
    present, else CPU. ``__call__`` returns logits (B, Dx, Dy, Dz, K) float32 numpy, [x, y, z, class].
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None,
                 profile: bool = False, cache_size: int = 16) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        self.spec = read_spec(self.path)
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"flashocc_ort_{os.getpid()}")
        self.providers = providers or default_providers()
        self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.index_cache = PoolIndexCache(self.spec, cache_size) if self.spec.mode == "precomputed" else None

    def __repr__(self) -> str:
        return (f"OnnxOccModel({self.path.name!r}, preset={self.spec.preset!r}, mode={self.spec.mode!r}, "
                f"providers={self.session.get_providers()})")

    def feeds(self, batch: Mapping[str, object]) -> list[dict[str, np.ndarray]]:
        """The session input dicts for ``batch``, one per exported-batch-size chunk."""
        return graph_feeds(self.spec, batch, self.index_cache, str(self.path))

    def run_feed(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]

    def __call__(self, batch: Mapping[str, object]) -> np.ndarray:
        outs = [self.run_feed(feed) for feed in self.feeds(batch)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def predict(self, batch: Mapping[str, object]) -> np.ndarray:
        """Class labels (B, Dx, Dy, Dz) uint8."""
        return self(batch).argmax(-1).astype(np.uint8)

    def end_profiling(self) -> Path:
        """Stop profiling (``profile=True``) and return the JSON trace path."""
        return Path(self.session.end_profiling())

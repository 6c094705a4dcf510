"""Deployment: ONNX export (full / precomputed-index graphs), ONNX Runtime and TensorRT runtimes,
FP16 / INT8 quantisation and the ``flashocc bench`` measurements. onnx, onnxruntime and tensorrt are
imported lazily, so importing this package needs none of them."""
from flashocc.deploy.onnx import INDEX_KEYS, MODES, ExportSpec, export_onnx, export_preset, read_spec
from flashocc.deploy.runtime import OnnxOccModel, PoolIndexCache

__all__ = ["INDEX_KEYS", "MODES", "ExportSpec", "OnnxOccModel", "PoolIndexCache", "export_onnx", "export_preset",
           "read_spec"]

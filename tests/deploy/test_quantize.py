"""INT8 (QDQ, onnxruntime quantize_static) and FP16 versions of an export: only convolutions and
matmuls are quantised, the pooling stays in float, and both run with bounded accuracy change."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")

import onnx  # noqa: E402

from flashocc.deploy import OnnxOccModel, read_spec  # noqa: E402
from flashocc.deploy.onnx import MODEL_SCOPES  # noqa: E402
from flashocc.deploy.quantize import calibration_batches, convert_fp16, quantize_int8  # noqa: E402

# Arithmetic of the depth softmax, geometry and pooling (ScatterND may carry the quantised BEV map:
# it only moves values into place for the first BEV convolution).
FLOAT_OPS = {"Slice", "Softmax", "Gather", "Mul", "Sub", "CumSum", "TopK", "NonZero"}


def _agreement(a, b) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def test_int8_quantises_convs_and_matmuls_only(exports, export_dir, synthetic_batch, reference):
    out = quantize_int8(exports["precomputed"], export_dir / "tiny_int8.onnx", calibration_batches("flashocc-tiny", 2))
    graph = onnx.load(str(out)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        reads_int8 = any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input)
        if node.op_type == "Conv":  # int8 weights everywhere but the depth net, which stays float
            assert reads_int8 == (not node.name.startswith("/depth_net/")), node.name
        if node.op_type in FLOAT_OPS and not node.name.startswith(MODEL_SCOPES):
            assert not reads_int8, f"view-transform node {node.name} reads quantised values"
    assert ops["CumSum"] == 1
    assert read_spec(out).mode == "precomputed"
    logits = OnnxOccModel(out, threads=2)(synthetic_batch)
    # Random weights: a loose bound; the measured change is reported in docs/benchmarks.md.
    assert _agreement(logits, reference["synthetic"]) >= 0.95


def test_fp16_keeps_io_and_pooling_in_float32(exports, export_dir, fixture_batch, reference):
    out = convert_fp16(exports["full"], export_dir / "tiny_fp16.onnx")
    model = onnx.load(str(out))
    inits = Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in model.graph.initializer)
    assert inits[np.dtype("float16")] > 0
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input[:1])
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    try:
        logits = OnnxOccModel(out, threads=2)(fixture_batch)
    except Exception as exc:  # some onnxruntime CPU builds lack fp16 kernels; fp16 is a GPU target
        pytest.skip(f"this onnxruntime cannot run the fp16 graph on CPU: {type(exc).__name__}")
    # Loose: CPU fp16 kernels accumulate in fp16 and random-weight logits have small margins.
    assert _agreement(logits, reference["fixture"]) >= 0.95


def test_int8_needs_calibration_data(exports, export_dir):
    with pytest.raises(ValueError, match="empty"):
        quantize_int8(exports["precomputed"], export_dir / "none.onnx", [])
    with pytest.raises(ValueError, match="calibration method"):
        quantize_int8(exports["precomputed"], export_dir / "none.onnx", [], method="magic")


def test_graphs_without_module_names_are_refused(tmp_path, exports):
    # e.g. a dynamo export: its node names don't say which nodes are the network, so nothing could be
    # kept in float safely.
    from onnx import TensorProto, helper

    from flashocc.deploy.onnx import _write_metadata

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="node_Identity_0")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "unscoped.onnx"
    onnx.save(helper.make_model(graph), str(path))
    _write_metadata(path, read_spec(exports["full"]))
    with pytest.raises(ValueError, match="module path"):
        convert_fp16(path, tmp_path / "fp16.onnx")
    with pytest.raises(ValueError, match="module path"):
        quantize_int8(path, tmp_path / "int8.onnx", calibration_batches("flashocc-tiny", 1))

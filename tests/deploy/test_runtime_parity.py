"""ONNX Runtime vs PyTorch fp32: argmax agreement >= 99.9 % on synthetic and real fixture inputs,
at 1 and 2 threads, for both export modes; exact and run-to-run identical at 2 threads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")

from flashocc.deploy import OnnxOccModel, read_spec  # noqa: E402


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.fixture(scope="module")
def runners(exports):
    return {(mode, threads): OnnxOccModel(path, threads=threads, providers=["CPUExecutionProvider"])
            for mode, path in exports.items() for threads in (1, 2)}


@pytest.fixture(scope="module")
def outputs(runners, synthetic_batch, fixture_batch):
    """Logits of every (source, mode, threads), computed once for the tests below."""
    batches = {"synthetic": synthetic_batch, "fixture": fixture_batch}
    return {(source, mode, threads): runner(batches[source])
            for (mode, threads), runner in runners.items() for source in batches}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["full", "precomputed"])
@pytest.mark.parametrize("source", ["synthetic", "fixture"])
def test_onnxruntime_matches_pytorch(outputs, reference, mode, threads, source):
    logits = outputs[(source, mode, threads)]
    ref = reference[source]
    assert logits.shape == ref.shape == (1, 200, 200, 16, 18)
    assert agreement(logits, ref) >= 0.999
    np.testing.assert_allclose(logits, ref, atol=1e-3, rtol=0)


def test_two_threads_are_deterministic(runners, outputs, fixture_batch):
    # The ScatterND-with-add trap gives different sums on every multi-threaded run; ours must not.
    for mode in ("full", "precomputed"):
        np.testing.assert_array_equal(runners[(mode, 2)](fixture_batch), outputs[("fixture", mode, 2)])


def test_graph_has_no_scatter_with_reduction(exports):
    import onnx

    for path in exports.values():
        for node in onnx.load(str(path)).graph.node:
            if node.op_type in ("ScatterND", "ScatterElements"):
                reduction = [a.s.decode() for a in node.attribute if a.name == "reduction"]
                assert reduction in ([], ["none"]), f"{node.name} scatters with reduction {reduction}"


def test_numpy_batch_gives_the_tensor_batch_labels(runners, outputs, synthetic_batch):
    as_numpy = {k: v.numpy() for k, v in synthetic_batch.items()}
    labels = runners[("precomputed", 1)].predict(as_numpy)
    assert labels.dtype == np.uint8 and labels.shape == (1, 200, 200, 16)
    np.testing.assert_array_equal(labels, outputs[("synthetic", "precomputed", 1)].argmax(-1))


def test_exported_metadata(exports, tiny_model):
    spec = read_spec(exports["precomputed"])
    assert spec.mode == "precomputed" and spec.preset == "flashocc-tiny"
    assert spec.input_size == tuple(tiny_model.config.input_size)
    assert spec.output_shape == (1, 200, 200, 16, 18)
    assert read_spec(exports["full"]).mode == "full"


def test_wrong_image_size_is_refused(runners, synthetic_batch):
    bad = dict(synthetic_batch, img=torch.zeros(1, 6, 3, 64, 64))
    with pytest.raises(ValueError, match="img must be"):
        runners[("full", 1)](bad)
    with pytest.raises(KeyError, match="missing"):
        runners[("full", 1)]({"img": synthetic_batch["img"]})


def test_foreign_onnx_file_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="no 'flashocc' metadata"):
        OnnxOccModel(path)
    with pytest.raises(FileNotFoundError):
        OnnxOccModel(tmp_path / "absent.onnx")

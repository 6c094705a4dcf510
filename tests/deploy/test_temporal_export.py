"""ONNX export of the temporal stereo models: frames [t, t-1, t-2] in one graph, ORT == PyTorch."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")

from flashocc.deploy import OnnxOccModel, export_onnx, read_spec  # noqa: E402
from flashocc.grid import OccGrid  # noqa: E402
from flashocc.models.presets import build_model, get_config  # noqa: E402
from flashocc.models.examples import example_sequence, temporal_batch  # noqa: E402

# flashocc-tiny-m2's layers on a smaller image and grid, so the export takes seconds.
SMALL = OccGrid(lower=(-12.8, -12.8, -1.0), upper=(12.8, 12.8, 5.4))  # 64 cells: divisible by 8


@pytest.fixture(scope="module")
def temporal_export(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(replace(get_config("flashocc-tiny-m2"), input_size=(64, 176), grid=SMALL)).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("temporal") / "tiny_m2.onnx")
    return model, path


@pytest.mark.parametrize("scene_start", [False, True])
def test_temporal_graph_matches_the_batch_forward(temporal_export, scene_start):
    model, path = temporal_export
    frames = example_sequence(model.config, num_frames=4, seed=3)
    # A scene start repeats the current frame for t-1 and t-2, as OccDataset does.
    batch = temporal_batch(frames, 3, scene_start=3 if scene_start else 0)
    with torch.no_grad():
        ref = model(batch).numpy()
    logits = OnnxOccModel(path, threads=2, providers=["CPUExecutionProvider"])(batch)
    assert logits.shape == ref.shape == (1, *SMALL.shape, SMALL.num_classes)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    assert (logits.argmax(-1) == ref.argmax(-1)).mean() >= 0.999


def test_temporal_spec_and_graph(temporal_export):
    import onnx

    model, path = temporal_export
    spec = read_spec(path)
    assert spec.temporal and spec.num_cameras == 18 and spec.mode == "full"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "GridSample" in ops  # the stereo cost volume is inside the graph
    for node in onnx.load(str(path)).graph.node:
        if node.op_type in ("ScatterND", "ScatterElements"):
            assert [a.s.decode() for a in node.attribute if a.name == "reduction"] in ([], ["none"])
    with pytest.raises(ValueError, match="mode='full'"):
        export_onnx(model, path.parent / "pre.onnx", mode="precomputed")
    single_frame = temporal_batch(example_sequence(model.config, num_frames=1), 0)
    with pytest.raises(ValueError, match="img must be"):
        OnnxOccModel(path)({k: v[:, :6] if v.dim() > 2 else v for k, v in single_frame.items()})


def test_calibration_and_bench_inputs_are_temporal():
    from flashocc.deploy.quantize import calibration_batches
    from flashocc.models.examples import example_model_batch

    (batch,) = calibration_batches("flashocc-tiny-m2", 1)
    assert batch["img"].shape[1] == 18 and batch["intrinsics"].shape[1] == 18
    assert example_model_batch(get_config("flashocc-tiny"))["img"].shape[1] == 6

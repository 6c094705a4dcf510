"""ONNX export of the dense-encoder EFFOcc presets: onnxruntime vs PyTorch eager on random-weight models and
synthetic batches (points of different lengths, padded in the runtime), the CLI export, and the clear
refusal of the sparse-encoder presets."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")

from flashocc.cli import main  # noqa: E402
from flashocc.deploy import OnnxOccModel, export_onnx, read_spec  # noqa: E402
from flashocc.deploy.effocc_export import calibrate_random_effocc, example_effocc_batch, pad_points  # noqa: E402
from flashocc.errors import ConfigError  # noqa: E402
from flashocc.models.presets import build_model  # noqa: E402



@contextmanager
def one_torch_thread():
    """As conftest's: module fixtures run outside its autouse one-thread fixture."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


CALIBRATION = ("sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda")
INDICES = ("ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths")


def _model(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(preset)
    with one_torch_thread():
        return calibrate_random_effocc(model, [example_effocc_batch(model.config, 1, seed=s) for s in (3, 4)])


def _batch(cfg) -> dict:
    """Two samples with clouds of 3000 and 2903 points (the runtime pads each exported-batch chunk)."""
    return example_effocc_batch(cfg, 2, num_points=3000, seed=7)


@pytest.fixture(scope="module")
def lidar(tmp_path_factory):
    """effocc-lidar-tiny exported through the CLI from a saved checkpoint, and its eager logits."""
    from flashocc.engine.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("effocc_lidar")
    model = _model("effocc-lidar-tiny")
    ckpt = save_checkpoint(model, folder / "lidar.pt")
    path = folder / "lidar.onnx"
    with one_torch_thread():
        assert main(["export", "effocc-lidar-tiny", "--checkpoint", str(ckpt), "--out", str(path)]) == 0
        batch = _batch(model.config)
        with torch.no_grad():
            ref = model(batch).numpy()
    return path, batch, ref


@pytest.fixture(scope="module", params=["full", "precomputed"])
def fusion(request, tmp_path_factory):
    model = _model("effocc-fusion-tiny")
    path = tmp_path_factory.mktemp("effocc_fusion") / f"fusion_{request.param}.onnx"
    with one_torch_thread():
        export_onnx(model, path, mode=request.param)
        batch = _batch(model.config)
        with torch.no_grad():
            ref = model(batch).numpy()
    return request.param, path, batch, ref


def _check(logits: np.ndarray, ref: np.ndarray) -> None:
    assert logits.shape == ref.shape == (2, 200, 200, 16, 18)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    assert float((logits.argmax(-1) == ref.argmax(-1)).mean()) >= 0.999


def test_lidar_graph_matches_pytorch(lidar):
    path, batch, ref = lidar
    spec = read_spec(path)
    assert spec.preset == "effocc-lidar-tiny" and spec.inputs == ("points", "num_points") and spec.num_cameras == 0
    runner = OnnxOccModel(path, threads=1, providers=["CPUExecutionProvider"])
    assert runner.input_names == ["points", "num_points"]
    _check(runner(batch), ref)


def test_padding_rows_are_ignored_and_two_threads_are_deterministic(lidar):
    path, batch, _ = lidar
    runner = OnnxOccModel(path, threads=2, providers=["CPUExecutionProvider"])
    feed = runner.feeds({"points": batch["points"][:1]})[0]
    base = runner.run_feed(feed)
    np.testing.assert_array_equal(runner.run_feed(feed), base)  # no racing scatter-add
    # Padding rows inside the grid (they would land in voxels if they were not masked) change nothing.
    junk = np.tile(np.array([[1.0, 2.0, 0.5, 9.0, 0.0]], dtype=np.float32), (500, 1))
    padded = dict(feed, points=np.concatenate([feed["points"], junk[None]], axis=1))
    np.testing.assert_array_equal(runner.run_feed(padded), base)


def test_fusion_graph_matches_pytorch(fusion):
    mode, path, batch, ref = fusion
    spec = read_spec(path)
    assert spec.mode == mode and spec.num_cameras == 6
    assert spec.inputs == ("points", "num_points", "img", *(CALIBRATION if mode == "full" else INDICES), "lidar_depth")
    runner = OnnxOccModel(path, threads=1, providers=["CPUExecutionProvider"])
    assert runner.input_names == list(spec.inputs)
    _check(runner(batch), ref)


def test_fusion_graph_has_no_scatter_with_reduction(fusion):
    import onnx

    for node in onnx.load(str(fusion[1])).graph.node:
        if node.op_type in ("ScatterND", "ScatterElements"):
            assert [a.s.decode() for a in node.attribute if a.name == "reduction"] in ([], ["none"]), node.name


def test_missing_lidar_inputs_are_named(fusion):
    _, path, batch, _ = fusion
    runner = OnnxOccModel(path, threads=1, providers=["CPUExecutionProvider"])
    with pytest.raises(KeyError, match="lidar_depth"):
        runner({k: v for k, v in batch.items() if k != "lidar_depth"})
    with pytest.raises(KeyError, match="points"):
        runner({k: v for k, v in batch.items() if k != "points"})


@pytest.mark.parametrize("preset", ["effocc-lidar", "effocc-fusion-r18"])
def test_sparse_presets_are_refused_with_the_reason(preset, tmp_path, capsys):
    assert main(["export", preset, "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert "rulebooks" in err and "effocc-lidar-tiny" in err and "lidar_encoder='sparse'" in err
    assert not (tmp_path / "x.onnx").exists()


def test_pad_points_pads_with_zero_rows_and_counts():
    points, counts = pad_points([torch.ones(3, 5), torch.ones(1, 5) * 2])
    assert points.shape == (2, 3, 5) and counts.tolist() == [3, 1] and counts.dtype == torch.int64
    assert points[1, 1:].abs().sum() == 0 and points[1, 0, 0] == 2
    with pytest.raises(Exception, match=r"\(N, 5\)"):
        pad_points([torch.ones(3, 4)])


def test_export_spec_json_round_trip_keeps_the_inputs(lidar):
    from flashocc.deploy.onnx import ExportSpec

    spec = read_spec(lidar[0])
    assert ExportSpec.from_json(spec.to_json()) == spec


def test_cli_refuses_quantising_an_effocc_graph(tmp_path, capsys):
    assert main(["export", "effocc-lidar-tiny", "--int8", "2", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "fp32 only" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()

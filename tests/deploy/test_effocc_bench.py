"""`flashocc bench` on the EFFOcc presets: its own stages (voxelize, LiDAR encoder, camera, fuser, BEV trunk,
head), positive times, an onnxruntime row for the dense-encoder presets and a skipped one with the reason
for the sparse ones."""
from __future__ import annotations

import json

import pytest

from flashocc.cli import main
from flashocc.deploy.bench import BenchConfig, format_table, run_bench

LIDAR_STAGES = ["voxelize", "lidar_encoder", "bev_encoder", "head"]
FUSION_STAGES = ["voxelize", "lidar_encoder", "camera", "fuser", "bev_encoder", "head"]


def _tiny(preset: str, backends: tuple[str, ...], points: int = 2000) -> BenchConfig:
    return BenchConfig(preset, backends=backends, precisions=("fp32",), repeats=1, warmup=0, threads=1,
                       ablation=False, isolate=False, points=points)


def _ok_stages(row, stages):
    assert row.status == "ok", row.reason
    assert list(row.stages_ms) == stages
    assert all(v > 0 for v in row.stages_ms.values()), row.stages_ms
    assert row.total_ms > 0 and row.fps > 0 and 0.99 <= row.agreement <= 1.0


def test_lidar_tiny_torch_and_onnxruntime_stages():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")
    report = run_bench(_tiny("effocc-lidar-tiny", ("torch", "onnxruntime")))
    assert report.stages == LIDAR_STAGES
    torch_row, ort_row = report.rows
    assert (torch_row.backend, ort_row.backend) == ("torch", "onnxruntime")
    _ok_stages(torch_row, LIDAR_STAGES)
    _ok_stages(ort_row, LIDAR_STAGES)
    table = format_table(report)
    assert all(s in table for s in LIDAR_STAGES) and "image_encoder" not in table


def test_fusion_tiny_torch_stages_through_the_cli(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "effocc-fusion-tiny", "--backend", "torch", "--precision", "fp32,int8", "--repeats", "1",
                 "--threads", "1", "--no-ablation", "--points", "2000", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["stages"] == FUSION_STAGES and report["config"]["points"] == 2000
    fp32, int8 = report["rows"]
    assert fp32["status"] == "ok" and list(fp32["stages_ms"]) == FUSION_STAGES
    assert all(v > 0 for v in fp32["stages_ms"].values()) and fp32["total_ms"] > 0
    assert int8["status"] == "skipped" and int8["reason"]


def test_sparse_preset_gets_a_skipped_onnxruntime_row_with_the_reason():
    report = run_bench(_tiny("effocc-lidar", ("onnxruntime", "tensorrt"), points=300))
    ort_row, trt_row = report.rows
    assert ort_row.status == "skipped" and "rulebooks" in ort_row.reason
    assert trt_row.status == "skipped" and trt_row.reason


def test_points_must_be_positive():
    from flashocc.errors import ConfigError

    with pytest.raises(ConfigError, match="--points"):
        run_bench(_tiny("effocc-lidar-tiny", ("torch",), points=0))

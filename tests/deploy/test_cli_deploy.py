"""`flashocc export` (also exercised by the session exports) and `flashocc bench` from the command line."""
from __future__ import annotations

import json

import pytest

from flashocc.cli import main


def test_bench_reports_unavailable_backends_as_skipped(tmp_path, checkpoint, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "flashocc-tiny", "--backend", "tensorrt", "--precision", "fp16", "--no-ablation",
               "--repeats", "1", "--checkpoint", str(checkpoint), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert (row["backend"], row["precision"]) == ("tensorrt", "fp16")
    if row["status"] == "skipped":
        assert row["reason"] and "skipped" in capsys.readouterr().out
    else:
        assert row["status"] == "ok" and row["total_ms"] > 0


def test_bench_rejects_unknown_backend(capsys):
    assert main(["bench", "flashocc-tiny", "--backend", "tensorflow"]) == 1
    assert "unknown backend" in capsys.readouterr().err


def test_export_rejects_unknown_preset(tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'flashocc[deploy]')")
    assert main(["export", "flashocc-r50-m9", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "did you mean" in capsys.readouterr().err


def test_temporal_presets_refuse_the_precomputed_mode(tmp_path, capsys):
    # Their pooling indices move with every frame's ego motion: only the full graph can be exported
    # (tests/deploy/test_temporal_export.py exports and runs it).
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'flashocc[deploy]')")
    assert main(["export", "flashocc-tiny-m2", "--mode", "precomputed", "--out", str(tmp_path / "m2.onnx")]) == 1
    assert "mode='full'" in capsys.readouterr().err

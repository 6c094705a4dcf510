"""The issue's acceptance check: flashocc-r50-m0 exported in both modes runs in onnxruntime at 2 threads
with >= 99.9 % argmax agreement on the real fixture and a synthetic input.

Random weights (BatchNorm-calibrated; no real weights can be downloaded here). About 1.5 minutes
on 2 cores (two exports of a 40M-parameter model), so it is marked ``slow``: ``python -m pytest -m slow``.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["precomputed", "full"])
def test_m0_parity_two_threads(tmp_path, nuscenes_sample_dir, mode):
    from flashocc.data.dataset import DataConfig, OccDataset, collate_batch
    from flashocc.data.infos import load_infos
    from flashocc.deploy import OnnxOccModel, export_onnx
    from flashocc.deploy.bench import calibrate_random_model
    from flashocc.models.presets import build_model, example_batch

    torch.manual_seed(0)
    model = build_model("flashocc-r50-m0")
    calibrate_random_model(model, [example_batch(model.config, 1)])
    infos = load_infos(nuscenes_sample_dir / "n015-2018-07-24-11-22-45+0800.pkl")
    real = collate_batch([OccDataset(nuscenes_sample_dir, infos, DataConfig(load_occ=False))[0]])
    synthetic = example_batch(model.config, 1)
    path = export_onnx(model, tmp_path / f"m0_{mode}.onnx", mode=mode)
    runner = OnnxOccModel(path, threads=2, providers=["CPUExecutionProvider"])
    for batch in (real, synthetic):
        with torch.no_grad():
            ref = model(batch).numpy()
        logits = runner(batch)
        assert (logits.argmax(-1) == ref.argmax(-1)).mean() >= 0.999

"""Shared deploy fixtures: one calibrated random flashocc-tiny, its two exports (made once per session)
and the real fixture sample as a model batch."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from flashocc.deploy.bench import calibrate_random_model
from flashocc.models.presets import build_model, example_batch

PRESET = "flashocc-tiny"


@contextmanager
def one_torch_thread():
    """Small ops thrash with two intra-op threads on a loaded 2-core machine; onnxruntime sets its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    """Random weights (no real weights can be downloaded) with BatchNorm statistics from two random
    batches and a zero head bias, so the logits depend on the input."""
    torch.manual_seed(0)
    model = build_model(PRESET)
    with one_torch_thread():
        return calibrate_random_model(model, [example_batch(model.config, 1) for _ in range(2)])


@pytest.fixture(scope="session")
def synthetic_batch(tiny_model) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return example_batch(tiny_model.config, 1)


@pytest.fixture(scope="session")
def fixture_batch(nuscenes_sample_dir: Path, tiny_model) -> dict[str, torch.Tensor]:
    """The six real fixture images with their calibration, test-time transform at the tiny input size."""
    from flashocc.data.dataset import DataConfig, OccDataset, collate_batch
    from flashocc.data.infos import load_infos

    infos = load_infos(nuscenes_sample_dir / "n015-2018-07-24-11-22-45+0800.pkl")
    dataset = OccDataset(nuscenes_sample_dir, infos, DataConfig(input_size=tiny_model.config.input_size, load_occ=False))
    return collate_batch([dataset[0]])


@pytest.fixture(scope="session")
def reference(tiny_model, synthetic_batch, fixture_batch) -> dict[str, np.ndarray]:
    with torch.no_grad(), one_torch_thread():
        return {"synthetic": tiny_model(synthetic_batch).numpy(), "fixture": tiny_model(fixture_batch).numpy()}


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy_exports")


@pytest.fixture(scope="session")
def checkpoint(tiny_model, export_dir) -> Path:
    from flashocc.engine.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, export_dir / "tiny.pt")


@pytest.fixture(scope="session")
def exports(tiny_model, export_dir, checkpoint) -> dict[str, Path]:
    """{'full': ..., 'precomputed': ...}: the full graph through the CLI (with --checkpoint), the
    precomputed one through the Python API."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'flashocc[deploy]')")
    from flashocc.cli import main
    from flashocc.deploy import export_onnx

    full = export_dir / "tiny_full.onnx"
    with one_torch_thread():
        return _export_both(tiny_model, export_dir, checkpoint, full, main, export_onnx)


def _export_both(tiny_model, export_dir, checkpoint, full, main, export_onnx) -> dict[str, Path]:
    rc = main(["export", PRESET, "--checkpoint", str(checkpoint), "--out", str(full), "--mode", "full"])
    assert rc == 0 and full.is_file()
    pre = export_onnx(tiny_model, export_dir / "tiny_precomputed.onnx", mode="precomputed")
    return {"full": full, "precomputed": pre}

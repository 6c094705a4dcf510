"""`flashocc eval` / `flashocc predict` and `evaluate_model`: every eval config field is read, the scorer
gets the model's grid, and a prediction folder never mixes two runs."""
import ast
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import flashocc.engine.evaluate as evaluate_module
import flashocc.metrics.scorer as scorer_module
from flashocc.cli import main
from flashocc.config import EvalConfig, load_run_config
from flashocc.errors import ConfigError, RunFolderError
from flashocc.grid import OCC3D_NUSCENES, OccGrid

from test_train import MICRO


class CameraOracle(torch.nn.Module):
    """Predicts the GT where the camera sees and car (4) elsewhere (free when there is no GT); records
    the batch sizes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def predict(self, batch: dict) -> torch.Tensor:
        self.batch_sizes.append(batch["img"].shape[0])
        if "voxel_semantics" not in batch:
            return torch.full((batch["img"].shape[0], *OCC3D_NUSCENES.shape), 17, dtype=torch.uint8)
        gt = batch["voxel_semantics"].to(torch.uint8)
        return torch.where(batch["mask_camera"].bool(), gt, torch.full_like(gt, 4))


@pytest.fixture()
def fake_model(monkeypatch):
    """Replace checkpoint loading in the CLI: returns the oracle and records the use_ema it was asked for."""
    model = CameraOracle()
    calls: list[bool] = []

    def load(cfg, checkpoint, device, use_ema=True):
        calls.append(use_ema)
        return model

    monkeypatch.setattr(evaluate_module, "load_model_for_inference", load)
    return model, calls


def _eval(synth_root, tmp_path, *args) -> tuple[int, dict | None]:
    out = tmp_path / "eval.json"
    if out.exists():
        out.unlink()
    rc = main(["eval", "flashocc-tiny", *MICRO, "--checkpoint", "unused.pt", "--data", str(synth_root),
               "--json", str(out), *args])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


MIOU_ONLY = ("eval.metrics=('miou',)", "eval.workers=0")


def test_eval_metrics_come_from_the_config_unless_given(synth_root, tmp_path, fake_model, capsys):
    rc, result = _eval(synth_root, tmp_path, "eval.workers=0")            # default eval.metrics: miou, rayiou
    assert rc == 0 and "mIoU" in result and "RayIoU" in result
    rc, result = _eval(synth_root, tmp_path, "eval.workers=0", "eval.metrics=('miou', 'fscore')")
    assert rc == 0 and "F-score" in result and "RayIoU" not in result
    rc, result = _eval(synth_root, tmp_path, "eval.workers=0", "eval.metrics=('fscore',)", "--metrics", "miou")
    assert rc == 0 and "mIoU" in result and "F-score" not in result and "RayIoU" not in result
    capsys.readouterr()
    assert _eval(synth_root, tmp_path, "--metrics", "miou,iou")[0] == 1
    assert "eval.metrics: expected names from miou, rayiou, fscore" in capsys.readouterr().err


def test_eval_use_ema_comes_from_the_config_unless_no_ema(synth_root, tmp_path, fake_model):
    _, calls = fake_model
    for args in [(), ("eval.use_ema=False",), ("--no-ema",)]:
        assert _eval(synth_root, tmp_path, *MIOU_ONLY, *args)[0] == 0
    assert calls == [True, False, False]


def test_eval_mask_selects_the_scored_voxels(synth_root, tmp_path, fake_model):
    scores = {}
    for mask in ("camera", "lidar", "none"):
        rc, result = _eval(synth_root, tmp_path, *MIOU_ONLY, f"eval.mask={mask}")
        assert rc == 0 and result["mask"] == mask
        scores[mask] = result["mIoU"]
    assert scores["camera"] == 100.0                      # the oracle is exact where the camera sees
    assert scores["none"] < 100.0 and scores["lidar"] != scores["camera"]


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed (pip install numba)")
def test_eval_backend_reaches_the_ray_caster(synth_root, tmp_path, fake_model, monkeypatch):
    backends = []

    class SpyRayIoU(scorer_module.RayIoU):
        def update(self, pred, gt, origins):   # record the caster's backend; the casting is tested elsewhere
            backends.append(self.caster.backend)
            self._totals["num_samples"] += 1

    monkeypatch.setattr(scorer_module, "RayIoU", SpyRayIoU)
    for backend in ("torch", "numba"):
        rc, result = _eval(synth_root, tmp_path, "eval.workers=0", "eval.metrics=('rayiou',)", f"eval.backend={backend}")
        assert rc == 0 and "RayIoU" in result
    assert backends == ["torch"] * 3 + ["numba"] * 3


def test_eval_batch_size_and_workers_reach_the_loader(synth_root, tmp_path, fake_model, monkeypatch):
    model, _ = fake_model
    requested = []
    real_loader = torch.utils.data.DataLoader

    def spy_loader(*args, num_workers=0, **kwargs):
        requested.append(num_workers)
        return real_loader(*args, num_workers=0, **kwargs)   # no worker processes in a unit test

    monkeypatch.setattr(torch.utils.data, "DataLoader", spy_loader)
    assert _eval(synth_root, tmp_path, "eval.metrics=('miou',)")[0] == 0
    assert _eval(synth_root, tmp_path, "eval.metrics=('miou',)", "eval.workers=1", "eval.batch_size=2")[0] == 0
    assert requested == [2, 1]
    assert model.batch_sizes == [1, 1, 1, 2, 1]             # 3 val samples


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "eval.batch_size: expected an integer >= 1"),
    ("workers", -1, "eval.workers: expected an integer >= 0"),
    ("metrics", (), "eval.metrics: expected a non-empty list"),
    ("metrics", ("miou", "miou"), "eval.metrics: expected each metric once"),
    ("mask", "cam", "eval.mask: expected one of camera, lidar, none"),
    ("backend", "cuda", "eval.backend: expected one of auto, numba, torch"),
])
def test_eval_config_names_the_bad_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        EvalConfig(**{field: value})


def test_evaluate_model_scores_every_sample_on_the_given_grid(synth_root):
    cfg = load_run_config("flashocc-tiny", MICRO)
    dataset = evaluate_module.eval_dataset(cfg, synth_root)
    renamed = replace(OCC3D_NUSCENES, class_names=tuple(f"c{i}" for i in range(17)) + ("free",))
    result = evaluate_module.evaluate_model(CameraOracle(), dataset, torch.device("cpu"), ("miou",), grid=renamed,
                                            split="val.pkl")
    assert result["mIoU"] == 100.0 and list(result["mIoU_per_class"])[:2] == ["c0", "c1"]
    cov = result["coverage"]
    assert cov["complete"] and cov["scored"] == cov["listed"] == len(dataset) == result["num_samples"]
    assert cov["summary"] == f"scored {len(dataset)} of {len(dataset)} samples listed in val.pkl"
    small = OccGrid(lower=(-3.2, -3.2, -0.8), upper=(3.2, 3.2, 0.8))
    with pytest.raises(ValueError, match=r"16, 16, 4"):
        evaluate_module.evaluate_model(CameraOracle(), dataset, torch.device("cpu"), ("miou",), grid=small)
    no_gt = evaluate_module.OccDataset(synth_root, dataset.samples, replace(cfg.data, load_occ=False))
    with pytest.raises(ConfigError, match="data.load_occ"):
        evaluate_module.evaluate_model(CameraOracle(), no_gt, torch.device("cpu"), ("miou",))


def test_load_model_for_inference_prefers_the_ema_weights(tmp_path):
    from flashocc.models.presets import build_model

    cfg = load_run_config("flashocc-tiny", MICRO)
    raw, ema = build_model(cfg.model).state_dict(), build_model(cfg.model).state_dict()
    key = next(k for k, v in raw.items() if v.dtype.is_floating_point)
    raw[key] = torch.zeros_like(raw[key])
    ema[key] = torch.ones_like(ema[key])
    torch.save({"model": raw, "ema": {"state_dict": ema, "updates": 3}}, tmp_path / "last.pt")
    for use_ema, want in [(True, 1.0), (False, 0.0)]:
        model = evaluate_module.load_model_for_inference(cfg, tmp_path / "last.pt", torch.device("cpu"), use_ema)
        assert torch.all(model.state_dict()[key] == want)


def test_predict_refuses_a_folder_with_predictions_and_overwrite_clears_them(synth_root, tmp_path, fake_model,
                                                                             capsys):
    out = tmp_path / "preds"
    args = ["predict", "flashocc-tiny", *MICRO, "eval.workers=0", "--checkpoint", "unused.pt",
            "--data", str(synth_root), "--out", str(out)]
    assert main(args) == 0
    first = sorted(out.rglob("labels.npz"))
    assert len(first) == 3
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{out} already holds 3 prediction files" in err and "--out" in err and "--overwrite" in err

    stale = out / "scene-old" / ("f" * 32) / "labels.npz"
    stale.parent.mkdir(parents=True)
    np.savez_compressed(stale, semantics=np.zeros(OCC3D_NUSCENES.shape, np.uint8))
    np.savez_compressed(out / ("e" * 32 + ".npz"), semantics=np.zeros(OCC3D_NUSCENES.shape, np.uint8))
    (out / "notes.txt").write_text("not a prediction")
    assert main([*args, "--overwrite"]) == 0
    assert sorted(out.rglob("*.npz")) == first                      # the stale files (and folders) are gone
    assert not (out / "scene-old").exists() and (out / "notes.txt").is_file()

    (tmp_path / "a_file").write_text("")
    with pytest.raises(RunFolderError, match="is a file"):
        evaluate_module.prepare_prediction_dir(tmp_path / "a_file")


def test_to_device_lives_in_batch_and_evaluate_does_not_import_train():
    from flashocc import batch
    from flashocc.engine import train

    assert evaluate_module.to_device is batch.to_device and train.to_device is batch.to_device
    tree = ast.parse(Path(evaluate_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "flashocc.engine.train" not in imported
    moved = batch.to_device({"x": torch.zeros(1), "tokens": ["t"]}, torch.device("cpu"))
    assert moved["tokens"] == ["t"] and moved["x"].device.type == "cpu"

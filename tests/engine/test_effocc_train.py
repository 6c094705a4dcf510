"""EFFOcc end to end on the synthetic set with LiDAR: train -> eval -> predict for the fusion and LiDAR-only
tiny presets (dense LiDAR encoder, micro widths)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flashocc.cli import main

EFFOCC_MICRO = ["model.lidar_channels=8", "model.second_channels=(8,16)", "model.second_layers=(1,1)",
                "model.fpn_channels=(8,8)", "model.head_channels=8", "train.batch_size=1", "train.workers=0",
                "train.warmup_iters=1", "train.log_every=1"]
CAMERA_MICRO = ["model.input_size=(64,176)", "model.img_neck_channels=32", "model.bev_channels=8",
                "model.fuser_channels=16"]


# The fusion run (~30 s on 2 cores) is opt-in (`-m slow`); the LiDAR-only run covers the LiDAR path by default.
@pytest.mark.parametrize("preset, extra", [pytest.param("effocc-fusion-tiny", CAMERA_MICRO, marks=pytest.mark.slow),
                                           ("effocc-lidar-tiny", [])])
def test_effocc_train_eval_predict(synth_root, tmp_path, capsys, preset, extra):
    run = tmp_path / "run"
    assert main(["train", preset, *EFFOCC_MICRO, *extra, "train.max_iters=2", "--data", str(synth_root),
                 "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_occ" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(np.isfinite(r["loss_occ"]) for r in steps)

    assert main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pt"), "--data", str(synth_root),
                 "--json", str(run / "eval.json")]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["mIoU"] <= 100 and result["num_samples"] == 3

    preds = tmp_path / "preds"
    assert main(["predict", str(run / "config.yaml"), "--checkpoint", str(run / "last.pt"), "--data", str(synth_root),
                 "--out", str(preds)]) == 0
    files = sorted(preds.rglob("labels.npz"))
    assert len(files) == 3 and np.load(files[0])["semantics"].shape == (200, 200, 16)

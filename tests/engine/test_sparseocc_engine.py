"""SparseOcc end to end on the synthetic set: `flashocc train sparseocc-tiny` (one step, the SparseOcc data
pipeline: 8 frames, lidar2img, BGR 0..255) and `flashocc eval` on its checkpoint (RayIoU, which uses no
camera mask, first; mIoU for reference). Marked slow: about 50 s per command on 2 loaded CPU cores."""
import json
import math

import pytest

from flashocc.cli import main

FAST = ["train.batch_size=1", "train.workers=0", "train.warmup_iters=2", "train.log_every=1", "train.max_iters=1"]


@pytest.mark.slow
def test_sparseocc_tiny_trains_and_evaluates(synth_root, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "sparseocc-tiny", *FAST, "--data", str(synth_root), "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_sem_lovasz_0" in r]
    assert steps and all(math.isfinite(r["loss"]) and "loss_class_2" in r for r in steps)
    assert main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pt"), "--data", str(synth_root),
                 "--json", str(run / "eval.json")]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["RayIoU"] <= 1 and 0 <= result["mIoU"] <= 100 and result["num_samples"] > 0

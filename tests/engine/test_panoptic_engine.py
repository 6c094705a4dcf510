"""Panoptic-FlashOcc end to end on the synthetic set: train (instance targets), `flashocc eval --panoptic`
(RayPQ next to RayIoU and mIoU, the unmasked mIoU of a model trained without the mask), `flashocc predict`
(``instances`` in every labels.npz), and `flashocc evaluate --panoptic` on those files scoring the same.

One training step and one validation sample: every loss term, ray cast and instance assignment still runs
on the full 200x200x16 grid, which is what costs time on the CPU."""
import json

import numpy as np
import pytest

from flashocc.cli import main
from flashocc.data.infos import load_infos, save_infos

from test_train import MICRO

PANO = [*MICRO, "model.aspp_channels=8", "model.centre_channels=8"]


def test_panoptic_train_eval_predict_end_to_end(synth_root, tmp_path, capsys):
    infos = save_infos(load_infos(synth_root / "infos_val.pkl")[:1], tmp_path / "infos_one.pkl")
    one = [f"train_infos={infos}", f"val_infos={infos}"]
    run = tmp_path / "run"
    assert main(["train", "panoptic-flashocc-tiny", *PANO, *one, "train.max_iters=1", "--data", str(synth_root),
                 "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_occ" in r]
    assert steps and all(np.isfinite(r["task0.loss_heatmap"]) and np.isfinite(r["loss_voxel_lovasz"])
                         for r in steps)

    assert main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pt"), "--data", str(synth_root),
                 "--metrics", "miou,rayiou", "--panoptic", "--json", str(run / "eval.json")]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["RayPQ"] <= 1 and 0 <= result["RayIoU"] <= 1 and 0 <= result["mIoU"] <= 100
    assert 0 <= result["mIoU_unmasked"] <= 100  # trained without the camera mask: reported both ways
    assert "mIoU without the mask" in capsys.readouterr().out

    preds = tmp_path / "preds"
    assert main(["predict", str(run / "config.yaml"), "--checkpoint", str(run / "last.pt"), "--data", str(synth_root),
                 "--out", str(preds)]) == 0
    files = sorted(preds.rglob("labels.npz"))
    assert len(files) == result["num_samples"] == 1
    with np.load(files[0]) as z:
        assert z["instances"].shape == z["semantics"].shape == (200, 200, 16)
    assert main(["evaluate", "--pred", str(preds), "--gt", str(synth_root / "gts"), "--infos", str(infos),
                 "--metrics", "miou,rayiou", "--panoptic", "--json", str(tmp_path / "scored.json")]) == 0
    scored = json.loads((tmp_path / "scored.json").read_text())
    assert scored["RayPQ"] == pytest.approx(result["RayPQ"])  # the CLI scores what eval measured
    assert scored["mIoU"] == pytest.approx(result["mIoU"])

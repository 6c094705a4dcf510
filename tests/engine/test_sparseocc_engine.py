"""SparseOcc in the engine: the official per-parameter lr multipliers (train.lr_multipliers) and
`flashocc train` -> `flashocc eval` end to end on the synthetic set (the SparseOcc data pipeline: frames,
lidar2img, BGR 0..255; RayIoU, which uses no camera mask, and mIoU for reference)."""
import json
import math
from dataclasses import replace

import pytest
import torch

from flashocc.cli import main
from flashocc.config import TrainConfig, load_run_config
from flashocc.engine.train import lr_at, lr_param_groups
from flashocc.errors import ConfigError
from flashocc.models.sparseocc import build_sparseocc, sparseocc_tiny

# sparseocc-tiny shrunk to 2 frames of 64x128 images and fewer voxels, 2 steps: the whole flow in the default
# suite on 2 loaded cores. The full-size tiny preset runs the same code with more of everything.
SMALL = ["model.input_size=(64, 128)", "model.num_frames=2", "model.topk_training=(100, 400, 800)",
         "model.topk_testing=(100, 200, 400)", "model.num_queries=6"]
FAST = ["train.batch_size=1", "train.workers=0", "train.warmup_iters=2", "train.log_every=1", "train.max_iters=2",
        "eval.workers=0"]


def test_sparseocc_recipe_trains_the_backbone_and_sampling_offsets_at_a_tenth_of_the_lr():
    cfg = load_run_config("sparseocc-tiny")
    assert cfg.train.lr_multipliers == (("img_backbone", 0.1), ("sampling_offset", 0.1))
    model = build_sparseocc(sparseocc_tiny())
    groups = lr_param_groups(model, cfg.train)
    mult = {id(p): g["lr_mult"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(mult) == len(named)  # every parameter in exactly one group
    for name, p in named.items():
        expected = 0.1 if name.startswith("img_backbone.") or ".sampling_offset." in name else 1.0
        assert mult[id(p)] == expected, name
    # The mask decoder's offsets are named "sampling.offset": the official key does not reach them.
    assert mult[id(named["pts_bbox_head.transformer.decoder.decoder_layer.sampling.offset.weight"])] == 1.0
    assert all(g["lr"] == pytest.approx(cfg.train.lr * g["lr_mult"]) for g in groups)


def test_lr_multipliers_longest_pattern_wins_and_unknown_patterns_are_errors():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    tc = replace(TrainConfig(), lr=1.0, lr_multipliers=(("0", 0.5), ("0.bias", 0.0)))
    groups = {g["lr_mult"]: g["params"] for g in lr_param_groups(model, tc)}
    assert groups[0.0] == [model[0].bias] and groups[0.5] == [model[0].weight]
    assert groups[1.0] == [model[1].weight, model[1].bias]
    with pytest.raises(ConfigError, match="'img_backbone'"):
        lr_param_groups(model, replace(tc, lr_multipliers=(("img_backbone", 0.1),)))
    with pytest.raises(ConfigError, match="train.lr_multipliers"):
        replace(TrainConfig(), lr_multipliers=(("a", -1.0),))
    with pytest.raises(ConfigError, match="train.lr_multipliers"):
        replace(TrainConfig(), lr_multipliers=(("a", 1.0), ("a", 2.0)))
    # YAML gives lists; they become the typed pairs.
    assert replace(TrainConfig(), lr_multipliers=[["a", 0.1]]).lr_multipliers == (("a", 0.1),)
    assert lr_at(0, tc, 10, 100) == pytest.approx(tc.lr * tc.warmup_ratio)


def test_sparseocc_tiny_trains_and_evaluates(synth_root, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "sparseocc-tiny", *SMALL, *FAST, "--data", str(synth_root), "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_sem_lovasz_0" in r]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) and "loss_class_2" in r for r in steps)
    saved = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    lrs = sorted({g["lr_mult"] for g in saved["optimizer"]["param_groups"]})
    assert lrs == [0.1, 1.0]  # the recipe's multipliers reached the optimiser
    assert main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pt"), "--data", str(synth_root),
                 "--json", str(run / "eval.json")]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["RayIoU"] <= 1 and 0 <= result["mIoU"] <= 100 and result["num_samples"] > 0

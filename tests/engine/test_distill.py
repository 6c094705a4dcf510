"""Fusion -> camera distillation (EFFOcc fgbg_bev): loss terms on hand-made cases, region masks from the
ground truth vs the teacher's argmax, unlabelled samples kept out of the supervised losses, the frozen
teacher, inherit_head, and a student training step with a teacher on the synthetic set."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml

from flashocc.cli import main
from flashocc.config import load_run_config
from flashocc.engine.checkpoint import load_checkpoint, save_checkpoint
from flashocc.engine.distill import inherit_head, setup_distillation, teacher_targets, with_teacher_data
from flashocc.errors import ConfigError
from flashocc.grid import OccGrid
from flashocc.models.criterion import OccOutputs, OccupancyCriterion
from flashocc.models.distill import DistillConfig, DistillLoss, column_regions, region_classes
from flashocc.models.examples import example_batch
from flashocc.models.presets import build_model

MICRO = ["model.input_size=(64,176)", "model.img_neck_channels=32", "model.bev_channels=8",
         "model.encoder_channels=(8,16,32)", "model.bev_neck_channels=8", "model.head_channels=8",
         "train.batch_size=2", "train.workers=0", "train.warmup_iters=2", "train.log_every=1", "train.ema=False"]
FREE = 17
TERMS = [f"loss_distill_{kind}_{region}" for kind in ("bev", "logit") for region in ("fg", "bg", "empty")]


def _volume(b=1, x=2, y=2, z=2, fill=FREE):
    return torch.full((b, x, y, z), fill, dtype=torch.long)


def _teacher_batch(labels, bev, logits, labeled=None):
    batch = {"voxel_semantics": labels, "teacher_bev": bev, "teacher_logits": logits}
    if labeled is not None:
        batch["labeled"] = torch.tensor(labeled)
    return batch


def test_identical_student_and_teacher_give_zero_distillation():
    torch.manual_seed(0)
    labels = torch.randint(0, 18, (2, 4, 4, 3))
    bev, logits = torch.randn(2, 5, 4, 4), torch.randn(2, 4, 4, 3, 18)
    out = DistillLoss(DistillConfig(), FREE)(bev.clone(), logits.clone(), _teacher_batch(labels, bev, logits))
    assert list(out) == TERMS
    assert all(abs(float(v)) < 1e-6 for v in out.values())


def test_feature_and_logit_terms_on_a_hand_made_case():
    # One sample, 2x2 columns of 2 voxels: column (0,0) holds a car (4) -> foreground; (1,0) drivable
    # surface (11) -> background; (0,1) and (1,1) all free -> empty.
    labels = _volume()
    labels[0, 0, 0, 0], labels[0, 1, 0, 1] = 4, 11
    c = 3
    teacher_bev = torch.zeros(1, c, 2, 2)                      # (B, C, Dy, Dx)
    student_bev = teacher_bev.clone()
    student_bev[0, :, 0, 0] = 2.0                              # x=0, y=0 (foreground column): error 2 per channel
    student_bev[0, :, 1, 1] = 1.0                              # x=1, y=1 (empty column): error 1
    teacher_logits = torch.zeros(1, 2, 2, 2, 18)
    teacher_logits[..., 0] = 1.0
    student_logits = teacher_logits.clone()
    student_logits[0, 1, 0, 1] = -teacher_logits[0, 1, 0, 1]   # the background voxel: opposite, 1 - cos = 2
    out = DistillLoss(DistillConfig(bev_empty_weight=0.5), FREE)(
        student_bev, student_logits, _teacher_batch(labels, teacher_bev, teacher_logits))
    assert out["loss_distill_bev_fg"].item() == pytest.approx(4.0)          # (3 channels x 2²) / (1 column x 3)
    assert out["loss_distill_bev_bg"].item() == pytest.approx(0.0)
    assert out["loss_distill_bev_empty"].item() == pytest.approx(0.5 * 3 / (2 * 3))   # weighted, over 2 columns
    assert out["loss_distill_logit_bg"].item() == pytest.approx(2.0)        # 1 background voxel
    assert out["loss_distill_logit_fg"].item() == pytest.approx(0.0)
    assert out["loss_distill_logit_empty"].item() == pytest.approx(0.0)


def test_regions_follow_ground_truth_when_labelled_and_teacher_argmax_otherwise():
    labels = _volume(b=2)
    labels[:, 0, 0, 0] = 4                                     # GT: a car in column (0, 0) of both samples
    logits = torch.zeros(2, 2, 2, 2, 18)
    logits[..., FREE] = 1.0
    logits[:, 1, 1, 1, 15] = 5.0                               # teacher: manmade in column (1, 1), nothing else
    classes = region_classes(labels, logits, torch.tensor([True, False]))
    fg, bg, empty = column_regions(classes, 11, FREE)
    assert fg[0].tolist() == [[True, False], [False, False]] and not bg[0].any()     # labelled: GT
    assert not fg[1].any() and bg[1].tolist() == [[False, False], [False, True]]     # unlabelled: teacher
    assert empty[1].tolist() == [[True, True], [True, False]]
    # Without a labelled flag every sample is labelled.
    assert torch.equal(region_classes(labels, logits, None), labels)


def _criterion_case():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 2, 18, requires_grad=True)
    labels = torch.randint(0, 18, (2, 4, 4, 2), dtype=torch.uint8)
    mask = torch.randint(0, 2, (2, 4, 4, 2), dtype=torch.uint8)
    geometry = {"img": torch.zeros(2, 1, 3, 8, 8)}
    outputs = OccOutputs(logits, torch.zeros(2, 4, 1, 1), torch.zeros(2, 8, 1, 1), None, geometry)
    return outputs, labels, mask


def test_unlabelled_samples_never_reach_the_supervised_loss():
    criterion = OccupancyCriterion(OccGrid(lower=(-1.6, -1.6, -1.0), upper=(1.6, 1.6, 5.4), voxel_size=(0.8, 0.8, 3.2)),
                                   depth_bins=(1.0, 45.0, 1.0), downsample=8, input_size=(8, 8),
                                   affinity_loss_weight=1.0)
    outputs, labels, mask = _criterion_case()
    flagged = {"voxel_semantics": labels, "mask_camera": mask, "labeled": torch.tensor([True, False])}
    clean = criterion(outputs, flagged)
    # Poison the unlabelled sample: class ids no cross-entropy accepts, and every voxel "visible".
    poisoned_labels, poisoned_mask = labels.clone(), mask.clone()
    poisoned_labels[1], poisoned_mask[1] = 200, 1
    poisoned = criterion(outputs, {**flagged, "voxel_semantics": poisoned_labels, "mask_camera": poisoned_mask})
    alone = criterion(OccOutputs(outputs.logits[:1], outputs.depth[:2], outputs.context[:2], None,
                                 {"img": outputs.geometry["img"][:1]}),
                      {"voxel_semantics": labels[:1], "mask_camera": mask[:1]})
    for name in ("loss_occ", "loss_affinity"):
        assert torch.isfinite(poisoned[name]) and poisoned[name].item() == clean[name].item() == alone[name].item()
    # The unlabelled sample's logits get no gradient from the supervised terms.
    sum(poisoned.values()).backward()
    assert outputs.logits.grad[1].abs().sum() == 0 and outputs.logits.grad[0].abs().sum() > 0
    # A batch with no labelled sample: every term 0, finite, and backward still works.
    none = criterion(outputs, {**flagged, "voxel_semantics": poisoned_labels, "labeled": torch.tensor([False, False])})
    assert set(none) == {"loss_occ", "loss_affinity"} and all(v.item() == 0 for v in none.values())
    sum(none.values()).backward()


def test_distill_config_checks():
    with pytest.raises(ConfigError, match="distill.bev_fg_weight"):
        DistillConfig(bev_fg_weight=-1.0)
    with pytest.raises(ConfigError, match="distill.foreground_classes"):
        DistillConfig(foreground_classes=0)
    with pytest.raises(ConfigError, match="distill.teacher_checkpoint"):
        DistillConfig(teacher="flashocc-tiny").check()
    with pytest.raises(ConfigError, match="distill.teacher:"):
        DistillConfig(teacher_checkpoint="t.pt").check()
    with pytest.raises(ConfigError, match="distill.logit_empty_weight"):
        load_run_config("flashocc-tiny", ["distill.logit_empty_weight=nan"])


def _micro(extra=()):
    return load_run_config("flashocc-tiny", [*MICRO, *extra])


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A micro teacher: its run config (YAML) and a checkpoint."""
    from flashocc.config import save_run_config

    folder = tmp_path_factory.mktemp("teacher")
    cfg = _micro()
    torch.manual_seed(1)
    model = build_model(cfg.model)
    save_run_config(cfg, folder / "config.yaml")
    save_checkpoint(model, folder / "teacher.pt")
    return folder / "config.yaml", folder / "teacher.pt", model


def test_teacher_is_frozen_and_its_head_is_inherited(teacher_run):
    config, ckpt, original = teacher_run
    cfg = _micro([f"distill.teacher={config}", f"distill.teacher_checkpoint={ckpt}"])
    student = build_model(cfg.model).train()
    teacher = setup_distillation(cfg, student, torch.device("cpu"))
    assert all(not p.requires_grad for p in teacher.parameters())
    for key, value in original.occ_head.state_dict().items():
        assert torch.equal(student.occ_head.state_dict()[key], value)
        assert torch.equal(teacher.occ_head.state_dict()[key], value)
    teacher.train()
    batch = example_batch(cfg.model, batch_size=2)
    targets = teacher_targets(teacher, batch)
    assert not teacher.training and not any(t.requires_grad for t in targets.values())
    assert targets["teacher_bev"].shape == (2, 8, 200, 200) and targets["teacher_logits"].shape == (2, 200, 200, 16, 18)
    # The student's checkpoint holds nothing of the teacher.
    assert not [k for k in student.state_dict() if "teacher" in k or k.startswith("criterion")]


def test_inherit_head_refuses_a_head_of_another_shape(teacher_run):
    _, _, teacher = teacher_run
    student = build_model(_micro(["model.bev_neck_channels=16"]).model)
    with pytest.raises(ConfigError, match="distill.inherit_head"):
        inherit_head(student, teacher)


def test_teacher_data_needs_are_merged_and_conflicts_refused(teacher_run):
    config, ckpt, _ = teacher_run
    cfg = _micro([f"distill.teacher={config}", f"distill.teacher_checkpoint={ckpt}"])
    assert with_teacher_data(cfg).data == cfg.data                      # a camera teacher needs nothing more
    lidar_teacher = replace(cfg.model, depth_loss_weight=1.0)            # reads LiDAR depth maps
    assert with_teacher_data(cfg, lidar_teacher).data.load_depth is True
    other_size = replace(cfg.model, input_size=(128, 352))
    with pytest.raises(ConfigError, match="data.input_size"):
        with_teacher_data(cfg, other_size)


def test_official_student_checkpoint_with_teacher_keys_loads_strictly(tmp_path):
    cfg = _micro()
    student = build_model(cfg.model)
    state = {**student.state_dict(), "teacher_model.occ_head.final_conv.conv.weight": torch.zeros(1)}
    torch.save({"state_dict": state}, tmp_path / "official.pth")
    report = load_checkpoint(build_model(cfg.model), tmp_path / "official.pth", strict=True)
    assert report.ok


def test_cli_flags_set_the_distill_section(teacher_run, capsys):
    config, ckpt, _ = teacher_run
    assert main(["train", "flashocc-tiny", "--teacher", str(config), "--teacher-checkpoint", str(ckpt),
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["distill"]["teacher"] == str(config) and printed["distill"]["teacher_checkpoint"] == str(ckpt)


@pytest.fixture(scope="module")
def synth3(tmp_path_factory):
    """3 training scenes x 2 frames (plus a val scene), small images."""
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    return generate_synthetic_set(tmp_path_factory.mktemp("synth3"), SynthConfig(
        scenes=4, frames_per_scene=2, seed=0, image_size=(176, 99), lidar_azimuth_steps=180))


def test_student_training_step_with_a_teacher(synth3, teacher_run, tmp_path):
    from flashocc.engine.train import train

    config, ckpt, _ = teacher_run
    cfg = _micro(["train.max_iters=2", "data.labeled_scenes=1", f"distill.teacher={config}",
                  f"distill.teacher_checkpoint={ckpt}"])
    out = tmp_path / "student"
    summary = train(cfg, synth3, out, progress=False)
    assert summary["steps"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert {"loss_occ", *TERMS} <= set(row) and all(row[k] is not None and row[k] >= 0 for k in TERMS)
    labelled = (out / "labeled_scenes.txt").read_text().split()
    assert len(labelled) == 1                                    # 1 of the 3 training scenes
    assert "6 samples" in (out / "train.log").read_text()        # the student reads all of them
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["labeled_scenes"] == "1" and saved["distill"]["teacher"] == str(config)
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model"]
    assert not [k for k in state if k.startswith("teacher")]


def test_teacher_run_trains_on_labelled_scenes_only(synth3, tmp_path):
    from flashocc.engine.train import train

    cfg = _micro(["train.max_iters=1", "train.batch_size=1", "data.labeled_scenes=1"])
    train(cfg, synth3, tmp_path / "t", progress=False)
    log = (tmp_path / "t" / "train.log").read_text()
    assert "2 samples" in log                                   # 1 of the 3 scenes (2 frames each)
    assert "labelled scenes: 1" in log
    assert len((tmp_path / "t" / "labeled_scenes.txt").read_text().split()) == 1


def test_r50_distill_preset_is_the_official_student_layout():
    from flashocc.models.presets import PRESETS, count_parameters, get_config

    with torch.device("meta"):
        student, m1 = build_model("flashocc-r50-distill"), build_model("flashocc-r50-m1")
    assert count_parameters(student) == PRESETS["flashocc-r50-distill"][1] == 59_099_512
    assert list(student.state_dict()) == list(m1.state_dict())                 # official names: M1's
    assert student.occ_head.final_conv.conv.in_channels == 512 and get_config("flashocc-r50-distill").head_channels == 256


def test_effocc_fusion_tiny_teaches_flashocc_tiny_distill():
    student_cfg = load_run_config("flashocc-tiny-distill", ["distill.teacher=effocc-fusion-tiny",
                                                            "distill.teacher_checkpoint=t.pt"])
    data = with_teacher_data(student_cfg).data
    assert data.load_points and data.load_lidar_depth and data.input_size == student_cfg.data.input_size
    teacher, student = build_model("effocc-fusion-tiny"), build_model(student_cfg.model)
    inherit_head(student, teacher)
    for key, value in teacher.occ_head.state_dict().items():
        assert torch.equal(student.occ_head.state_dict()[key], value)

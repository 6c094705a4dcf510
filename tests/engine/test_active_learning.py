"""Voxel-level active learning (EFFOcc activate_al): the entropy selection on hand-made logits, the
cross-entropy restricted to the selected voxels (poisoned labels outside change nothing), masks flipped
with the labels, and two selection cycles on the synthetic set whose masks only grow and survive a resume."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from flashocc.cli import main
from flashocc.config import load_run_config
from flashocc.data.active_masks import (BATCH_KEY, MASKS_DIR, ActiveMasks, copy_masks, mask_path, read_mask,
                                        write_mask)
from flashocc.data.dataset import OccDataset
from flashocc.engine.active import entropy_selection, select_masks, voxel_entropy
from flashocc.errors import ConfigError, DataError, OutputPathError
from flashocc.grid import OccGrid
from flashocc.models.criterion import ACTIVE_MASK_KEY, OccOutputs, OccupancyCriterion, reads_voxel_selection
from flashocc.models.examples import example_batch
from flashocc.models.presets import build_model

MICRO = ["model.input_size=(64,176)", "model.img_neck_channels=32", "model.bev_channels=8",
         "model.encoder_channels=(8,16,32)", "model.bev_neck_channels=8", "model.head_channels=8",
         "train.batch_size=2", "train.workers=0", "train.warmup_iters=2", "train.log_every=1", "train.ema=False",
         "eval.workers=0"]

# 8 voxels (2x2x2), 3 classes: (softmax probabilities, flat index). Argmax classes 0 0 0 1 1 2 2 0.
PROBS = [(0.5, 0.25, 0.25), (0.9, 0.05, 0.05), (0.4, 0.3, 0.3), (0.3, 0.4, 0.3),
         (0.05, 0.9, 0.05), (0.2, 0.2, 0.6), (0.3, 0.3, 0.4), (0.34, 0.33, 0.33)]


def _hand_case():
    logits = torch.tensor(PROBS).log().reshape(2, 2, 2, 3)
    camera = torch.ones(2, 2, 2, dtype=torch.bool).reshape(-1)
    camera[6] = False                                     # voxel 6 is not seen by a camera
    previous = torch.zeros(8, dtype=torch.bool)
    previous[7] = True                                    # voxel 7 was selected in the last cycle
    return logits, camera.reshape(2, 2, 2), previous.reshape(2, 2, 2)


def _selected(mask: torch.Tensor) -> set[int]:
    return set(mask.reshape(-1).nonzero().squeeze(1).tolist())


def test_entropy_is_that_of_the_softmax():
    logits, _, _ = _hand_case()
    p = np.array(PROBS)
    assert torch.allclose(voxel_entropy(logits).reshape(-1), torch.tensor(-(p * np.log(p)).sum(1), dtype=torch.float32))


def test_per_class_selection_on_hand_made_logits():
    logits, camera, previous = _hand_case()
    # Candidates 0..5 (6 is outside the camera mask, 7 already selected); classes 0, 1, 2 among them.
    # Budget 3: one per class, the most uncertain: class 0 -> 2 (0.4/0.3/0.3), class 1 -> 3, class 2 -> 5.
    assert _selected(entropy_selection(logits, camera, previous, 3)) == {2, 3, 5, 7}
    # Budget 6: two per class; class 2 has one candidate only and gives just that one (no filler voxel).
    assert _selected(entropy_selection(logits, camera, previous, 6)) == {0, 2, 3, 4, 5, 7}
    # Budget 2 < 3 classes: a share of 0, nothing new; the previous selection is kept.
    assert _selected(entropy_selection(logits, camera, previous, 2)) == {7}
    # No previous cycle, no camera mask: voxels 6 and 7 are candidates (class 2 -> 6 beats 5, class 0 -> 7).
    assert _selected(entropy_selection(logits, None, None, 3)) == {7, 3, 6}


def test_global_selection_takes_the_top_entropies_ties_to_the_lower_index():
    logits, camera, previous = _hand_case()
    # Voxels 2 and 3 have the same entropy (a permutation of 0.4/0.3/0.3): 2 first.
    assert _selected(entropy_selection(logits, camera, previous, 1, per_class=False)) == {2, 7}
    assert _selected(entropy_selection(logits, camera, previous, 3, per_class=False)) == {0, 2, 3, 7}
    assert _selected(entropy_selection(logits, camera, previous, 100, per_class=False)) == {0, 1, 2, 3, 4, 5, 7}
    with pytest.raises(ConfigError, match="active budget"):
        entropy_selection(logits, camera, previous, -1)


# ---- the cross-entropy on selected voxels only -----------------------------------------------------
def _criterion_case():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 2, 18, requires_grad=True)
    labels = torch.randint(0, 18, (2, 4, 4, 2), dtype=torch.uint8)
    camera = torch.randint(0, 2, (2, 4, 4, 2), dtype=torch.uint8)
    selected = torch.rand(2, 4, 4, 2) < 0.3
    outputs = OccOutputs(logits, torch.zeros(2, 4, 1, 1), torch.zeros(2, 8, 1, 1), None, {"img": torch.zeros(2, 1, 3, 8, 8)})
    return outputs, labels, camera, selected


def _poison(labels, camera, selected):
    """Labels and camera mask changed everywhere outside the selection."""
    bad_labels = torch.where(selected, labels, (labels + 7) % 17)
    return bad_labels, torch.where(selected, camera, torch.ones_like(camera))


def test_cross_entropy_counts_the_selected_voxels_only():
    grid = OccGrid(lower=(-1.6, -1.6, -1.0), upper=(1.6, 1.6, 5.4), voxel_size=(0.8, 0.8, 3.2))
    criterion = OccupancyCriterion(grid, depth_bins=(1.0, 45.0, 1.0), downsample=8, input_size=(8, 8),
                                   affinity_loss_weight=1.0)
    outputs, labels, camera, selected = _criterion_case()
    batch = {"voxel_semantics": labels, "mask_camera": camera, ACTIVE_MASK_KEY: selected}
    clean = criterion(outputs, batch)
    bad_labels, bad_camera = _poison(labels, camera, selected)
    poisoned = criterion(outputs, {**batch, "voxel_semantics": bad_labels, "mask_camera": bad_camera})
    assert clean.keys() == poisoned.keys() == {"loss_occ", "loss_affinity"}
    for name in clean:
        assert torch.isfinite(clean[name]) and clean[name].item() == poisoned[name].item()
    # The CE is the mean over the selected voxels inside the camera mask.
    keep = selected & (camera > 0)
    expected = torch.nn.functional.cross_entropy(outputs.logits[keep], labels[keep].long())
    assert torch.allclose(clean["loss_occ"], expected)
    clean["loss_occ"].backward()
    grad = outputs.logits.grad.abs().sum(-1)
    assert grad[~keep].sum() == 0 and (grad[keep] > 0).all()
    # Without the selection key every camera voxel counts (the loss differs).
    assert criterion(outputs, {"voxel_semantics": labels, "mask_camera": camera})["loss_occ"].item() != clean["loss_occ"].item()


def test_every_supervised_term_of_a_model_ignores_unselected_voxels():
    # flashocc-tiny-demo: CE, ray depth targets and per-pixel classes, all read off the labels.
    cfg = load_run_config("flashocc-tiny-demo", MICRO)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    batch = example_batch(cfg.model, batch_size=2)
    shape = (2, *cfg.model.grid.shape)
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 18, shape, generator=g).to(torch.uint8)
    camera = torch.ones(shape, dtype=torch.uint8)
    selected = torch.rand(shape, generator=g) < 0.01
    base = {**batch, "voxel_semantics": labels, "mask_lidar": camera, "mask_camera": camera, BATCH_KEY: selected}
    clean = model(base)
    bad_labels, bad_camera = _poison(labels, camera, selected)
    poisoned = model({**base, "voxel_semantics": bad_labels, "mask_camera": bad_camera})
    assert {"loss_occ", "loss_depth", "loss_semantic"} <= clean.keys()
    for name in clean:
        assert torch.isfinite(clean[name]) and clean[name].item() == poisoned[name].item(), name
    full = model({**base, BATCH_KEY: torch.ones(shape, dtype=torch.bool)})
    assert full["loss_occ"].item() != clean["loss_occ"].item()


def test_criteria_that_override_forward_do_not_claim_to_read_the_selection():
    from flashocc.models.panoptic.criterion import PanopticCriterion

    grid = OccGrid(lower=(-1.6, -1.6, -1.0), upper=(1.6, 1.6, 5.4), voxel_size=(0.8, 0.8, 3.2))
    plain = OccupancyCriterion(grid, depth_bins=(1.0, 45.0, 1.0), downsample=8, input_size=(8, 8))
    assert reads_voxel_selection(plain) and not reads_voxel_selection(torch.nn.Identity())
    assert PanopticCriterion.forward is not OccupancyCriterion.forward   # so reads_voxel_selection says no
    assert BATCH_KEY == ACTIVE_MASK_KEY


# ---- mask files ----------------------------------------------------------------------------------------
def test_mask_files_round_trip_and_bad_files_are_refused(tmp_path):
    mask = np.zeros((4, 4, 2), dtype=bool)
    mask[1, 2, 0] = True
    path = write_mask(tmp_path, "tok_1", mask)
    assert path == tmp_path / "tok_1.npz" and np.array_equal(read_mask(path, (4, 4, 2)), mask)
    with pytest.raises(DataError, match=r"tok_1.npz: expected a voxel mask of bool \(4, 4, 3\)"):
        read_mask(path, (4, 4, 3))
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(DataError, match="torn.npz: cannot read the voxel mask"):
        read_mask(tmp_path / "torn.npz")
    np.savez(tmp_path / "other.npz", semantics=mask)
    with pytest.raises(DataError, match="other.npz: not a voxel mask"):
        read_mask(tmp_path / "other.npz")
    with pytest.raises(DataError, match="cannot name a mask file"):
        mask_path(tmp_path, "../escape")
    with pytest.raises(ValueError, match="3-D bool"):
        write_mask(tmp_path, "tok_2", mask.astype(np.uint8))
    copied = copy_masks(tmp_path, tmp_path / "copy")
    assert "tok_1" in ActiveMasks(copied).tokens and not list(tmp_path.glob(".copy.*"))
    with pytest.raises(OutputPathError, match="already exists"):
        copy_masks(tmp_path, copied)


@pytest.fixture(scope="module")
def synth3(tmp_path_factory):
    """3 training scenes x 2 frames (plus a val scene), small images."""
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    return generate_synthetic_set(tmp_path_factory.mktemp("synth3"), SynthConfig(
        scenes=4, frames_per_scene=2, seed=0, image_size=(176, 99), lidar_azimuth_steps=180))


def test_dataset_flips_a_mask_with_the_labels_and_flags_samples(synth3, tmp_path):
    from dataclasses import replace

    cfg = load_run_config("flashocc-tiny", MICRO + ["data.labeled_scenes=1", "data.flip_dx_ratio=1.0",
                                                    "data.flip_dy_ratio=0.0"])
    plain = OccDataset(synth3, synth3 / "infos_train.pkl", replace(cfg.data, flip_dx_ratio=0.0), train=True,
                       aug_seed=0, keep_unlabeled=True)
    labelled = set(plain.labeled_scene_names)
    masked = next(s for s in plain.samples if s.scene_name not in labelled)
    shape = tuple(plain[0]["voxel_semantics"].shape)
    mask = np.zeros(shape, dtype=bool)
    mask[3, 5, 1] = mask[100, 7, 2] = True
    write_mask(tmp_path, masked.token, mask)
    ds = OccDataset(synth3, synth3 / "infos_train.pkl", cfg.data, train=True, aug_seed=0, keep_unlabeled=True,
                    active_masks=ActiveMasks(tmp_path))
    for i, sample in enumerate(ds.samples):
        item = ds[i]
        got = item[BATCH_KEY]
        if sample.token == masked.token:
            assert got.dtype == torch.bool and np.array_equal(got.numpy(), mask[::-1])   # flipped along x, as the labels
            assert bool(item["labeled"])
        elif sample.scene_name in labelled:
            assert bool(got.all()) and bool(item["labeled"])                        # full labels
        else:
            assert not bool(got.any()) and not bool(item["labeled"])                # unlabelled, no mask


# ---- two cycles on the synthetic set ---------------------------------------------------------------------
def _train(cfg, data, out, **kw):
    from flashocc.engine.train import train

    return train(cfg, data, out, progress=False, **kw)


def test_two_cycles_grow_the_masks_and_a_resume_reads_the_runs_copy(synth3, tmp_path):
    labelled = ["data.labeled_scenes=1"]
    run0 = tmp_path / "run0"
    _train(load_run_config("flashocc-tiny", MICRO + labelled + ["train.max_iters=1"]), synth3, run0)
    # Cycle 1: no previous masks; the 4 samples of the 2 unlabelled scenes get 24 voxels each at most.
    first = select_masks(run0, synth3, tmp_path / "masks1", budget=24)
    assert first["cycle"] == 1 and first["samples"] == 4 and first["previous"] is None
    assert 0 < first["new_voxels"] == first["selected_voxels"] <= 4 * 24
    masks1 = {p.stem: read_mask(p) for p in (tmp_path / "masks1").glob("*.npz")}
    assert len(masks1) == 4
    with pytest.raises(OutputPathError, match="already holds 5 mask file"):
        select_masks(run0, synth3, tmp_path / "masks1", budget=24)

    run1 = tmp_path / "run1"
    cfg1 = load_run_config("flashocc-tiny", MICRO + labelled + ["train.max_iters=1", f"active.masks={tmp_path / 'masks1'}"])
    _train(cfg1, synth3, run1)
    log = (run1 / "train.log").read_text()
    assert "6 samples" in log and "active learning: 4 samples" in log   # 2 fully labelled + 4 with masks
    assert "data.label_subset=nested, data.label_seed=0" in log         # the draw is recorded with the run
    own = {p.stem: read_mask(p) for p in (run1 / MASKS_DIR).glob("*.npz")}
    assert own.keys() == masks1.keys() and all(np.array_equal(own[t], masks1[t]) for t in own)
    rows = [json.loads(line) for line in (run1 / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(row["loss_occ"] is not None and row["loss_occ"] > 0 for row in rows)

    # A resume reads the run's own copy: the source folder may be gone.
    shutil.rmtree(tmp_path / "masks1")
    resumed = load_run_config(str(run1 / "config.yaml"), ["train.max_iters=2"])
    assert _train(resumed, synth3, run1, resume=True)["steps"] == 2

    # Cycle 2 from run1 (through the CLI): every mask holds cycle 1's voxels and new ones.
    code = main(["active", "select", str(run1), "--data", str(synth3), "--out", str(tmp_path / "masks2"),
                 "--budget", "24", "--device", "cpu", "--json"])
    assert code == 0
    record = json.loads((tmp_path / "masks2" / "selection.json").read_text())
    assert record["cycle"] == 2 and record["previous"] == str(run1 / MASKS_DIR)
    masks2 = {p.stem: read_mask(p) for p in (tmp_path / "masks2").glob("*.npz")}
    assert masks2.keys() == masks1.keys()
    for token, before in masks1.items():
        after = masks2[token]
        assert (after | before == after).all() and after.sum() > before.sum()       # cycle 2 ⊇ cycle 1, grown
    assert record["selected_voxels"] == sum(int(m.sum()) for m in masks2.values())
    assert record["new_voxels"] == record["selected_voxels"] - sum(int(m.sum()) for m in masks1.values())


def test_training_with_masks_refuses_what_it_cannot_honour(synth3, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    write_mask(masks, "not-a-sample", np.zeros((200, 200, 16), dtype=bool))
    cfg = load_run_config("flashocc-tiny", MICRO + ["train.max_iters=1", f"active.masks={masks}"])
    with pytest.raises(ConfigError, match="none of the 1 masks"):
        _train(cfg, synth3, tmp_path / "run")
    own = tmp_path / "run2" / MASKS_DIR
    with pytest.raises(ConfigError, match="this run's own copy"):
        _train(load_run_config("flashocc-tiny", MICRO + [f"active.masks={own}"]), synth3, tmp_path / "run2")
    from flashocc.config import save_run_config

    teacher = save_run_config(load_run_config("flashocc-tiny", MICRO), tmp_path / "teacher.yaml")
    with pytest.raises(ConfigError, match="not combined with a teacher"):
        _train(load_run_config("flashocc-tiny", MICRO + [f"active.masks={masks}", f"distill.teacher={teacher}",
                                                         "distill.teacher_checkpoint=t.pt"]), synth3, tmp_path / "run3")
    with pytest.raises(FileNotFoundError, match="not a folder of voxel masks"):
        _train(load_run_config("flashocc-tiny", MICRO + [f"active.masks={tmp_path / 'none'}"]), synth3, tmp_path / "run4")

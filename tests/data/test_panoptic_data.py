"""Instance ids in the synthetic world's labels.npz and through OccDataset (``voxel_instances``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flashocc.data.dataset import DataConfig, OccDataset, collate_batch
from flashocc.data.infos import load_infos
from flashocc.data.occ3d import OccLabels, load_labels, save_labels
from flashocc.data.panoptic import DETECTION_CLASSES
from flashocc.data.synth import SynthConfig, generate_synthetic_set, scene_world
from flashocc.data.synth.voxelize import voxelize
from flashocc.errors import ConfigError, DataError, MissingFileError
from flashocc.grid import OCC3D_NUSCENES as GRID

TINY = SynthConfig(scenes=1, frames_per_scene=2, seed=5, image_size=(96, 54), lidar_azimuth_steps=120, val_scenes=0)
DET = [GRID.class_names.index(n) for n in DETECTION_CLASSES]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return generate_synthetic_set(tmp_path_factory.mktemp("pano") / "synth", TINY)


def test_synthetic_instances_follow_the_world_objects(synth_root: Path):
    world = scene_world(TINY, 0)
    for i, sample in enumerate(load_infos(synth_root / "infos_train.pkl")):
        labels = load_labels(synth_root / sample.occ_path, sample.token, instances=True)
        sem, inst = labels.semantics, labels.instances
        _, objects = voxelize(world, sample.ego2global, GRID, with_objects=True)
        det = np.isin(sem, DET)
        assert det.sum() > 100 and (inst[det] > 0).all() and (inst[sem == GRID.free_label] == 0).all()
        # One id per object: the id partition of the detection-class voxels is the object partition.
        pairs = np.unique(np.stack([inst[det], objects[det]]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
        n_things = pairs.shape[1]
        # Ids are 1..n for the objects in object order, then one per other class present, in class order.
        first_object = {int(o): int(i) for i, o in zip(*pairs)}
        assert [first_object[o] for o in sorted(first_object)] == list(range(1, n_things + 1))
        stuff = [c for c in GRID.semantic_classes if c not in DET and (sem == c).any()]
        for k, c in enumerate(stuff):
            assert set(np.unique(inst[sem == c])) == {n_things + 1 + k}
        assert inst.max() == n_things + len(stuff)


def test_dataset_loads_and_flips_instances_with_the_semantics(synth_root: Path):
    infos = synth_root / "infos_train.pkl"
    cfg = DataConfig(load_instances=True, flip_dx_ratio=1.0, flip_dy_ratio=1.0, input_size=(64, 176))
    ds = OccDataset(synth_root, infos, cfg, train=True, aug_seed=0)
    batch = collate_batch([ds[0], ds[1]])
    assert batch["voxel_instances"].shape == (2, 200, 200, 16) and batch["voxel_instances"].dtype == torch.uint8
    for b, sample in enumerate(ds.samples):
        labels = load_labels(synth_root / sample.occ_path, sample.token, instances=True)
        np.testing.assert_array_equal(batch["voxel_semantics"][b].numpy(), labels.semantics[::-1, ::-1])
        np.testing.assert_array_equal(batch["voxel_instances"][b].numpy(), labels.instances[::-1, ::-1])
    assert "voxel_instances" not in OccDataset(synth_root, infos, DataConfig(input_size=(64, 176)))[0]

    # instances_root reads the panoptic tree instead of the info's occ_path (the Occ3D arrays too).
    sample = ds.samples[0]
    other = synth_root / "occ3d_panoptic" / sample.scene_name / sample.token
    labels = load_labels(synth_root / sample.occ_path, sample.token, instances=True)
    marked = np.where(labels.semantics != GRID.free_label, 7, 0).astype(np.uint8)
    save_labels(OccLabels(labels.semantics, labels.mask_lidar, labels.mask_camera, instances=marked), other)
    cfg = DataConfig(load_instances=True, instances_root="occ3d_panoptic", input_size=(64, 176))
    item = OccDataset(synth_root, [sample], cfg)[0]
    np.testing.assert_array_equal(item["voxel_instances"].numpy(), marked)
    shutil.rmtree(synth_root / "occ3d_panoptic")
    with pytest.raises(MissingFileError, match=f"sample {sample.token}: .*occ3d_panoptic.*labels.npz not found"):
        OccDataset(synth_root, [sample], cfg)[0]


def test_plain_occ3d_labels_without_instances_are_refused_when_asked(data_root):
    root, sample = data_root
    cfg = DataConfig(load_instances=True, input_size=(64, 176))
    with pytest.raises(DataError, match=rf"sample {sample.token}: .*labels\.npz: no 'instances' array"):
        OccDataset(root, [sample], cfg)[0]


@pytest.mark.parametrize("fields, field", [({"load_instances": True, "load_occ": False}, "data.load_instances"),
                                           ({"instances_root": "occ3d_panoptic"}, "data.instances_root"),
                                           ({"load_instances": 1}, "data.load_instances")])
def test_instance_fields_are_checked(fields, field):
    with pytest.raises(ConfigError, match=field):
        DataConfig(**fields)

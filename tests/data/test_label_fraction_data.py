"""Training on part of the labels: data.labeled_fraction / labeled_scenes / label_subset select scenes; a
plain run drops the unlabelled scenes, a distillation student keeps them flagged (batch key ``labeled``)."""
from __future__ import annotations

import random

import pytest
import torch

from flashocc.config import load_run_config
from flashocc.data.dataset import DataConfig, OccDataset, collate_batch
from flashocc.data.infos import load_infos
from flashocc.errors import ConfigError, DataError, MissingFileError


@pytest.fixture(scope="module")
def synth3(tmp_path_factory):
    """3 training scenes x 2 frames (plus a val scene), small images."""
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    root = tmp_path_factory.mktemp("synth3")
    return generate_synthetic_set(root, SynthConfig(scenes=4, frames_per_scene=2, seed=0, image_size=(176, 99),
                                                    lidar_azimuth_steps=180))


def _cfg(**kw) -> DataConfig:
    return DataConfig(input_size=(64, 176), **kw)


def _scenes(dataset) -> list[str]:
    return sorted({s.scene_name for s in dataset.samples})


def test_fraction_keeps_only_labelled_scenes_for_a_plain_run(synth3):
    infos = synth3 / "infos_train.pkl"
    all_scenes = sorted({s.scene_name for s in load_infos(infos)})
    ds = OccDataset(synth3, infos, _cfg(labeled_fraction=0.34), train=True)   # round(0.34 * 3) = 1 scene
    assert len(ds.labeled_scene_names) == 1 and _scenes(ds) == ds.labeled_scene_names
    assert set(ds.labeled_scene_names) <= set(all_scenes)
    assert ds[0]["labeled"].item() is True
    bigger = OccDataset(synth3, infos, _cfg(labeled_fraction=0.67), train=True)
    assert set(ds.labeled_scene_names) < set(bigger.labeled_scene_names)   # nested by default


def test_student_sees_every_scene_flagged(synth3):
    infos = synth3 / "infos_train.pkl"
    ds = OccDataset(synth3, infos, _cfg(labeled_fraction=0.34), train=True, keep_unlabeled=True)
    assert len(ds) == len(load_infos(infos))
    flags = [bool(ds[i]["labeled"]) for i in range(len(ds))]
    expected = [s.scene_name in ds.labeled_scene_names for s in ds.samples]
    assert flags == expected and 0 < sum(flags) < len(flags)
    batch = collate_batch([ds[i] for i in range(len(ds))])
    assert batch["labeled"].dtype == torch.bool and batch["labeled"].tolist() == expected


def test_no_selection_and_evaluation_sets_are_untouched(synth3):
    infos = synth3 / "infos_train.pkl"
    full = OccDataset(synth3, infos, _cfg(), train=True)
    assert full.labeled_scene_names is None and "labeled" not in full[0]
    val = OccDataset(synth3, infos, _cfg(labeled_fraction=0.34), train=False)   # only training sets are cut
    assert val.labeled_scene_names is None and len(val) == len(load_infos(infos))


def test_count_file_and_effocc_draw(synth3, tmp_path):
    infos = synth3 / "infos_train.pkl"
    names = sorted({s.scene_name for s in load_infos(infos)})
    by_count = OccDataset(synth3, infos, _cfg(labeled_scenes="2", label_subset="effocc"), train=True)
    # EFFOcc's draw: sorted names, random.seed(42), random.sample.
    random.seed(42)
    assert by_count.labeled_scene_names == sorted(random.sample(names, 2))
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# chosen by hand\n{names[2]}\n\n{names[0]}\n")
    by_file = OccDataset(synth3, infos, _cfg(labeled_scenes=str(listing)), train=True)
    assert by_file.labeled_scene_names == [names[0], names[2]]


def test_label_selection_errors(synth3, tmp_path):
    infos = synth3 / "infos_train.pkl"
    with pytest.raises(ConfigError, match="data.labeled_fraction"):
        _cfg(labeled_fraction=1.5)
    with pytest.raises(ConfigError, match="data.labeled_scenes"):
        _cfg(labeled_fraction=0.5, labeled_scenes="2")
    with pytest.raises(ConfigError, match="data.label_subset"):
        _cfg(label_subset="random")
    with pytest.raises(ConfigError, match="data.labeled_scenes: expected at most 3"):
        OccDataset(synth3, infos, _cfg(labeled_scenes="5"), train=True)
    with pytest.raises(MissingFileError, match="neither a scene count nor a file"):
        OccDataset(synth3, infos, _cfg(labeled_scenes="no-such-file.txt"), train=True)
    bad = tmp_path / "bad.txt"
    bad.write_text("scene-9999\n")
    with pytest.raises(DataError, match="not in the training set"):
        OccDataset(synth3, infos, _cfg(labeled_scenes=str(bad)), train=True)


def test_fields_as_overrides():
    cfg = load_run_config("flashocc-tiny", ["data.labeled_scenes=280", "data.label_subset=effocc"])
    assert cfg.data.labeled_scenes == "280" and cfg.data.label_subset == "effocc"
    with pytest.raises(ConfigError, match="label_subset"):
        load_run_config("flashocc-tiny", ["data.label_subset=all"])

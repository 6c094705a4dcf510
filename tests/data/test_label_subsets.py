"""Scene-level label fractions: nested by construction, and EFFOcc's own (non-nested) draw reproduced."""
import random

import pytest

from flashocc.data import labeled_scenes
from flashocc.errors import ConfigError

SCENES = [f"scene-{i:04d}" for i in range(700)]  # nuScenes train has 700 scenes


def test_nested_fractions_are_prefixes_of_one_permutation():
    subsets = [set(labeled_scenes(SCENES, fraction=f)) for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)]
    assert [len(s) for s in subsets] == [35, 70, 140, 280, 420, 560, 700]
    assert all(a <= b for a, b in zip(subsets, subsets[1:]))
    assert labeled_scenes(reversed(SCENES), count=70) == labeled_scenes(SCENES, fraction=0.1)  # input order is irrelevant
    assert labeled_scenes(SCENES, count=70, seed=1) != labeled_scenes(SCENES, count=70)


def test_effocc_draw_is_reproduced_and_is_not_nested():
    def official(k):  # EFFOcc's load_annotations: sorted tokens, random.seed(42), random.sample
        random.seed(42)
        return sorted(random.sample(sorted(SCENES), k))

    for k in (35, 70, 140, 280):
        assert labeled_scenes(SCENES, count=k, method="effocc") == official(k)
    draws = {f: set(labeled_scenes(SCENES, fraction=f, method="effocc")) for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)}
    assert draws[0.05] <= draws[0.1] and draws[0.2] <= draws[0.4] <= draws[0.6] <= draws[0.8]
    assert len(draws[0.1] & draws[0.2]) == 67  # 10 % is not inside 20 %


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of"), ({"fraction": 0.5, "count": 3}, "exactly one of"), ({"fraction": 1.5}, r"\[0, 1\]"),
    ({"count": 701}, r"\[0, 700\]"), ({"count": 2.0}, "integer"), ({"fraction": 0.5, "method": "frames"}, "method"),
])
def test_bad_arguments_name_what_is_expected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        labeled_scenes(SCENES, **kwargs)


# --- data.label_seed: the seed of the nested permutation -------------------------------------------------
def _select(**fields):
    from pathlib import Path

    from flashocc.data.dataset import DataConfig, select_labeled_scenes
    return select_labeled_scenes(DataConfig(**fields), SCENES, Path("."))


def test_label_seed_zero_is_todays_nested_selection():
    # Frozen: the scenes every nested run drew before data.label_seed existed (seed 0, 700 names).
    today = ["scene-0026", "scene-0164", "scene-0304", "scene-0478", "scene-0543"]
    assert labeled_scenes(SCENES, count=5) == today
    assert _select(labeled_scenes="5") == today == _select(labeled_scenes="5", label_seed=0)
    assert _select(labeled_fraction=0.1) == labeled_scenes(SCENES, fraction=0.1, seed=0)


def test_other_label_seeds_give_other_nested_sets_each_nested_in_itself():
    by_seed = {seed: [set(_select(labeled_fraction=f, label_seed=seed)) for f in (0.1, 0.2, 0.4)] for seed in (0, 1, 7)}
    assert by_seed[1][0] != by_seed[0][0] and by_seed[7][0] != by_seed[1][0]
    for subsets in by_seed.values():
        assert subsets[0] < subsets[1] < subsets[2]   # each seed's own draw is nested
    assert set(_select(labeled_scenes="5", label_seed=3)) == set(labeled_scenes(SCENES, count=5, seed=3))


def test_label_seed_is_checked_and_recorded_in_the_run_config():
    from flashocc.config import config_to_dict, load_run_config
    from flashocc.data.dataset import DataConfig

    with pytest.raises(ConfigError, match="data.label_seed: expected an integer >= 0"):
        DataConfig(label_seed=-1)
    with pytest.raises(ConfigError, match="data.label_seed: expected 0 with data.label_subset=effocc"):
        DataConfig(label_seed=3, label_subset="effocc", labeled_fraction=0.5)
    for unused in ({}, {"labeled_scenes": "scenes.txt"}):   # nothing is drawn: a seed would be ignored
        with pytest.raises(ConfigError, match="data.label_seed: expected 0 unless scenes are drawn"):
            _select(label_seed=3, **unused)
    # The overrides may come in any order.
    assert load_run_config("flashocc-tiny", ["data.label_seed=5", "data.labeled_fraction=0.4"]).data.label_seed == 5
    # EFFOcc's draw keeps its own seed 42 whatever the nested seed default is.
    assert _select(labeled_scenes="70", label_subset="effocc") == labeled_scenes(SCENES, count=70, method="effocc")
    cfg = load_run_config("flashocc-tiny", ["data.labeled_fraction=0.4", "data.label_seed=5"])
    assert config_to_dict(cfg)["data"]["label_seed"] == 5

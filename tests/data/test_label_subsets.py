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

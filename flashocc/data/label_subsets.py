"""Which scenes are labelled: learning from a fraction of the labelled sequences (EFFOcc's scheme).

The unit is the scene (a sequence), never the frame: frames of one scene are near-duplicates, so a
frame-level draw would leak every scene into the "labelled" part. Two draws:

* ``"nested"`` (ours, the default): one fixed seeded permutation of the sorted names, and the first
  ``round(fraction * n)`` of it. Every smaller subset lies inside every larger one (20 % ⊂ 40 % ⊂ …),
  so a curve over fractions adds labels instead of swapping scenes. The seed is ``data.label_seed``
  (default 0): another seed draws another nested family, to measure how much a result owes to the draw.
* ``"effocc"``: EFFOcc's own draw, for comparing with its published splits: sort the scene tokens,
  ``random.seed(42)``, ``random.sample(tokens, k)`` (EFFOcc@9544ca0
  mmdet3d/datasets/nuscenes_dataset_occ.py, NuScenesDatasetOccpancy.load_annotations, options
  ``load_sequences`` / ``use_sequences_as_labeled``; pass scene *tokens* to get its very scenes).
  Python's sampler changes algorithm with
  ``k``, so these subsets are *not* nested: on 700 scenes 10 % ⊄ 20 % (67 of the 70 scenes overlap),
  while 5 % ⊂ 10 % and 20 % ⊂ 40 % ⊂ 60 % ⊂ 80 % hold (tests/data/test_label_subsets.py).
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal

import numpy as np

from flashocc.errors import ConfigError

EFFOCC_SEED = 42


def labeled_scenes(scene_names: Iterable[str], fraction: float | None = None, count: int | None = None,
                   seed: int | None = None, method: Literal["nested", "effocc"] = "nested") -> list[str]:
    """The labelled scenes among ``scene_names`` (duplicates ignored), sorted.

    Exactly one of ``fraction`` (0..1, giving ``round(fraction * n)`` scenes) or ``count`` (0..n).
    ``seed``: the permutation of ``"nested"`` (default 0) or the ``random.seed`` of ``"effocc"``
    (default 42, EFFOcc's). The same arguments always give the same list.
    """
    names = sorted(set(scene_names))
    n = len(names)
    if (fraction is None) == (count is None):
        raise ConfigError(f"labeled_scenes: give exactly one of fraction or count, found fraction={fraction!r}, "
                          f"count={count!r}")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ConfigError(f"labeled_scenes: fraction must be in [0, 1], found {fraction!r}")
        count = round(fraction * n)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= n:
        raise ConfigError(f"labeled_scenes: count must be an integer in [0, {n}] (the number of scenes), found {count!r}")
    if method == "nested":
        order = np.random.default_rng(0 if seed is None else seed).permutation(n)
        chosen = [names[i] for i in order[:count]]
    elif method == "effocc":
        draw = random.Random(EFFOCC_SEED if seed is None else seed)  # the same stream as random.seed(42)
        chosen = draw.sample(names, count)
    else:
        raise ConfigError(f"labeled_scenes: method must be 'nested' or 'effocc', found {method!r}")
    return sorted(chosen)

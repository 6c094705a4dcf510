"""SparseOcc's 8 frames: which past frames a sample reads, and the ``lidar2img`` / ``ego2lidar`` it feeds.

Upstream: SparseOcc@af4d9df loaders/pipelines/loading.py, LoadMultiViewImageFromMultiSweeps (frame
choice) and loaders/nuscenes_occ_dataset.py, NuSceneOcc.get_data_info (``lidar2img``).

The official per-sample "prev" list holds, per past keyframe interval (0.5 s), 5 camera sweeps (newest
first) and then the previous keyframe's cameras: 6 entries per interval. At test time entries
(k+1)·6−1, k = 0..6, are read (keyframes t−1 … t−7); in training (k+1)·interval−1 with a random
interval in [min(4, m), min(8, m)], m = ⌊len / 7⌋; indices past the end clamp to the last entry, and an
empty list (a scene's first keyframe) repeats the current images.

Our infos carry no camera sweeps yet (``SampleInfo.sweeps`` is LiDAR only), so the list is modelled
with its official length (6 entries per past keyframe of the scene) and each chosen entry is read from
the keyframe nearest to it in time: entry e lies (e+1)/6 keyframe intervals back. At test time this is
exactly the official choice (keyframes t−1 … t−7); in training, an entry between two keyframes is
replaced by the nearer one.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flashocc.data.infos import SampleInfo

NUM_PAST = 7                # past frames besides the keyframe (official num_frames 8)
ENTRIES_PER_INTERVAL = 6    # 5 camera sweeps + the previous keyframe per keyframe interval
TEST_INTERVAL = 6           # official test_interval: whole keyframe intervals
TRAIN_INTERVALS = (4, 8)    # official train_interval, inclusive


def max_keyframes_back(num_past: int) -> int:
    """The longest walk that can change a choice: min(8, m) saturates at m = 8, i.e. 8·num_past entries."""
    return -(-max(num_past, 1) * TRAIN_INTERVALS[1] // ENTRIES_PER_INTERVAL)


def prev_entry_indices(num_entries: int, train: bool, rng: np.random.Generator | None, num_past: int = NUM_PAST
                       ) -> list[int]:
    """Indices into an official "prev" list of ``num_entries`` entries, oldest last, one per past frame; []
    when it is empty (the caller repeats the current frame). ``rng`` draws the training interval."""
    if num_entries == 0:
        return []
    if train:
        if rng is None:
            raise ValueError("training frame choice needs a random generator")
        m = num_entries // max(num_past, 1)
        interval = int(rng.integers(min(TRAIN_INTERVALS[0], m), min(TRAIN_INTERVALS[1], m) + 1))
    else:
        interval = TEST_INTERVAL
    # interval 0 (fewer than 7 entries) gives index -1: Python's last entry, as upstream indexes it.
    return [min((k + 1) * interval - 1, num_entries - 1) % num_entries for k in range(num_past)]


def entry_to_keyframes_back(entry: int) -> int:
    """Keyframes back of the keyframe nearest to prev-list entry ``entry`` (entry 5 = t−1, 11 = t−2, ...)."""
    return max(1, round((entry + 1) / ENTRIES_PER_INTERVAL))


def past_keyframes(current: SampleInfo, by_token: Mapping[str, SampleInfo], limit: int) -> list[SampleInfo]:
    """[t−1, t−2, ...] keyframes of ``current``'s scene, following ``prev_token``, at most ``limit``."""
    out: list[SampleInfo] = []
    prev = current
    while len(out) < limit:
        candidate = by_token.get(prev.prev_token)
        if candidate is None or candidate.scene_token != current.scene_token:
            break
        out.append(candidate)
        prev = candidate
    return out


def sparseocc_frames(current: SampleInfo, by_token: Mapping[str, SampleInfo], train: bool,
                     rng: np.random.Generator | None, num_past: int = NUM_PAST) -> list[SampleInfo]:
    """[current, ``num_past`` past frames] as the official loader chooses them (see the module docstring)."""
    if num_past == 0:
        return [current]
    past = past_keyframes(current, by_token, max_keyframes_back(num_past))
    indices = prev_entry_indices(ENTRIES_PER_INTERVAL * len(past), train, rng, num_past)
    if not indices:
        return [current] * (1 + num_past)
    # Official loader sorts the chosen indices (newest first); clamped indices repeat the oldest frame.
    return [current] + [past[min(entry_to_keyframes_back(e), len(past)) - 1] for e in sorted(indices)]


def image_aug_matrix(post_rot: np.ndarray, post_tran: np.ndarray) -> np.ndarray:
    """4x4 on (u·d, v·d, d, 1): the resize/crop/flip of the pixel coordinates (u, v), which multiplies
    the translation by the depth (upstream RandomTransformImage puts a 3x3 image matrix in the top-left)."""
    mat = np.eye(4)
    mat[:2, :2] = np.asarray(post_rot, np.float64)[:2, :2]
    mat[:2, 2] = np.asarray(post_tran, np.float64)[:2]
    return mat


def lidar2img(current: SampleInfo, frame: SampleInfo, camera: str, post_rot: np.ndarray,
              post_tran: np.ndarray) -> np.ndarray:
    """4x4: the **current** LiDAR frame -> pixels of ``frame``'s ``camera`` image after the augmentation
    (static world: the current LiDAR pose composed with the past camera's pose, NuSceneOcc.get_data_info).
    Intrinsics are the frame's own camera's."""
    cam = frame.cams[camera]
    lidar2global = np.asarray(current.ego2global, np.float64) @ np.asarray(current.lidar2ego, np.float64)
    cam2global = np.asarray(cam.ego2global, np.float64) @ np.asarray(cam.sensor2ego, np.float64)
    viewpad = np.eye(4)
    viewpad[:3, :3] = np.asarray(cam.intrinsics, np.float64)
    return image_aug_matrix(post_rot, post_tran) @ viewpad @ np.linalg.inv(cam2global) @ lidar2global


def ego2lidar(current: SampleInfo, bda: np.ndarray) -> np.ndarray:
    """4x4: the (BEV-augmented) occupancy-grid ego frame -> the current LiDAR frame (the model multiplies
    each ``lidar2img`` by it, so its sampling points live in the grid's frame)."""
    bda4 = np.eye(4)
    bda4[:3, :3] = np.asarray(bda, np.float64)
    return np.linalg.inv(np.asarray(current.lidar2ego, np.float64)) @ np.linalg.inv(bda4)


__all__ = ["NUM_PAST", "max_keyframes_back", "prev_entry_indices", "entry_to_keyframes_back", "past_keyframes", "sparseocc_frames",
           "image_aug_matrix", "lidar2img", "ego2lidar"]

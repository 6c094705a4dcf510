"""SparseOcc's 8 frames: which past frames a sample reads, and the ``lidar2img`` / ``ego2lidar`` it feeds.

Upstream: SparseOcc@af4d9df loaders/pipelines/loading.py, LoadMultiViewImageFromMultiSweeps (frame
choice), loaders/nuscenes_occ_dataset.py, NuSceneOcc.collect_sweeps (the "prev" list) and get_data_info
(``lidar2img``), gen_sweep_info.py (the camera sweeps of a keyframe).

The official per-sample "prev" list holds, per past keyframe interval (0.5 s), the keyframe's 5 camera
sweeps (newest first) and then the previous keyframe's cameras: 6 entries per interval, walking back
until a keyframe without camera sweeps (a scene's first), at most 150 entries. At test time entries
(k+1)·6−1, k = 0..6, are read (keyframes t−1 … t−7). In training a list of at most 7 entries is read
whole and padded with its last entry; a longer one at (k+1)·interval−1 with a random interval in
[min(4, M), M], M = min(8, ⌊len / 7⌋). Indices past the end clamp to the last entry, an entry missing a
camera is replaced by the one before it, and an empty list (a scene's first keyframe) repeats the
current images.

Infos with camera sweeps (``SampleInfo.cam_sweeps``: ``flashocc data nuscenes``, ``flashocc data synth
--camera-sweeps 5``) give exactly that list. Older infos have none; the list is then modelled with its
official length (6 entries per past keyframe of the scene) and each chosen entry is read from the
keyframe nearest to it in time: entry e lies (e+1)/6 keyframe intervals back. At test time this is
exactly the official choice (keyframes t−1 … t−7); in training, an entry between two keyframes is
replaced by the nearer one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flashocc.data.infos import CameraInfo, SampleInfo
from flashocc.geometry import NUSCENES_CAMERAS

NUM_PAST = 7                # past frames besides the keyframe (official num_frames 8)
ENTRIES_PER_INTERVAL = 6    # 5 camera sweeps + the previous keyframe per keyframe interval
TEST_INTERVAL = 6           # official test_interval: whole keyframe intervals
TRAIN_INTERVALS = (4, 8)    # official train_interval, inclusive
MAX_ENTRIES = 150           # official collect_sweeps(into_past=150)


@dataclass(frozen=True)
class CameraFrame:
    """One entry of the "prev" list: the cameras of one camera sweep (or of a keyframe, as a SampleInfo is)."""

    token: str                      # "<keyframe token>/cam_sweep<i>": names the entry in errors
    cams: dict[str, CameraInfo]


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
        if num_entries <= num_past:  # official: the whole list, padded with its last entry
            return list(range(num_entries)) + [num_entries - 1] * (num_past - num_entries)
        high = min(num_entries // max(num_past, 1), TRAIN_INTERVALS[1])
        interval = int(rng.integers(min(high, TRAIN_INTERVALS[0]), high + 1))
    else:
        interval = TEST_INTERVAL
    return [min((k + 1) * interval - 1, num_entries - 1) for k in range(num_past)]


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


def prev_list(current: SampleInfo, by_token: Mapping[str, SampleInfo], limit: int = MAX_ENTRIES
              ) -> list[SampleInfo | CameraFrame]:
    """The official "prev" list from the recorded camera sweeps: per keyframe back, its camera sweeps (newest
    first) then the previous keyframe; ends at a keyframe without camera sweeps. The official walk reads
    ``infos[i − 1]`` as the previous keyframe; we follow ``prev_token`` and also end where it leads out of
    the info set or the scene."""
    out: list[SampleInfo | CameraFrame] = []
    sample = current
    while len(out) < limit and sample.cam_sweeps:
        prev = by_token.get(sample.prev_token)
        if prev is None or prev.scene_token != current.scene_token:
            break
        out += [CameraFrame(f"{sample.token}/cam_sweep{i}", cams) for i, cams in enumerate(sample.cam_sweeps)]
        out.append(prev)
        sample = prev
    return out


def has_camera_sweeps(current: SampleInfo) -> bool:
    """Whether ``current`` reads the exact official list (its camera sweeps are recorded)."""
    return bool(current.cam_sweeps)


def sparseocc_frames(current: SampleInfo, by_token: Mapping[str, SampleInfo], train: bool,
                     rng: np.random.Generator | None, num_past: int = NUM_PAST,
                     cameras: Sequence[str] = NUSCENES_CAMERAS) -> list[SampleInfo | CameraFrame]:
    """[current, ``num_past`` past frames] as the official loader chooses them (see the module docstring):
    the exact entries when ``current`` has camera sweeps, else the nearest keyframes. ``cameras``: an entry
    lacking one of them is replaced by the entry before it."""
    if num_past == 0:
        return [current]
    if has_camera_sweeps(current):
        entries = prev_list(current, by_token)
        indices = prev_entry_indices(len(entries), train, rng, num_past)
        if not indices:
            return [current] * (1 + num_past)
        chosen = []
        for i in sorted(indices):
            entry = entries[i]
            if any(name not in entry.cams for name in cameras):
                entry = entries[i - 1]  # official; i = 0 reads the last entry, as Python indexes -1
            chosen.append(entry)
        return [current] + chosen
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


def lidar2img(current: SampleInfo, frame: SampleInfo | CameraFrame, camera: str, post_rot: np.ndarray,
              post_tran: np.ndarray) -> np.ndarray:
    """4x4: the **current** LiDAR frame -> pixels of ``frame``'s ``camera`` image after the augmentation
    (static world: the current LiDAR pose composed with the past camera's pose, NuSceneOcc.get_data_info).
    Intrinsics and the ego pose (at the image's own timestamp) are the frame's own camera's."""
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


__all__ = ["NUM_PAST", "CameraFrame", "max_keyframes_back", "prev_entry_indices", "entry_to_keyframes_back",
           "past_keyframes", "prev_list", "has_camera_sweeps", "sparseocc_frames", "image_aug_matrix", "lidar2img",
           "ego2lidar"]

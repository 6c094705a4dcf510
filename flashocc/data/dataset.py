"""``OccDataset``: one code path for real nuScenes + Occ3D and the synthetic world.

It follows the official dataset and pipeline (FlashOCC@4084861
projects/mmdet3d_plugin/datasets/nuscenes_dataset_bevdet.py and datasets/pipelines/loading.py; see
docs/official-behaviour.md#adjacent-frames and the sections around it).

Layout under ``root``: camera JPEGs and LiDAR ``.bin`` files at the paths the infos give (relative to the
root), Occ3D labels at ``<occ_path>/labels.npz``. Files that are not at ``root/<path>`` are also looked for
flat in the root (``root/<file name>``: the mmdet3d demo layout of the fixture); nuScenes file names are
unique, so this cannot pick a wrong file.
"""
from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from flashocc.batch import LIST_KEYS
from flashocc.data import jpeg as J
from flashocc.data import lidar as L
from flashocc.data import transforms as T
from flashocc.data.infos import SampleInfo, load_infos
from flashocc.data.active_masks import BATCH_KEY, ActiveMasks
from flashocc.data.label_subsets import labeled_scenes
from flashocc.data.occ3d import load_labels
from flashocc.data.sparseocc_frames import ego2lidar, lidar2img, sparseocc_frames
from flashocc.errors import ConfigError, DataError, MissingFileError
from flashocc.geometry import NUSCENES_CAMERAS

log = logging.getLogger(__name__)

VOLUME_KEYS: tuple[str, ...] = ("voxel_semantics", "mask_lidar", "mask_camera")
INSTANCES_KEY = "voxel_instances"


@dataclass(frozen=True)
class DataConfig:
    """Data pipeline settings; defaults are the official FlashOcc-R50 ones (FlashOCC@4084861
    projects/configs/flashocc/flashocc-r50.py). How the official pipeline uses them, depth targets and
    adjacent frames included: docs/official-behaviour.md."""

    cameras: tuple[str, ...] = NUSCENES_CAMERAS   # order matters: docs/official-behaviour.md#camera-order
    input_size: tuple[int, int] = (256, 704)      # (H, W) of the network input
    # (H, W) of nuScenes images. As in the official code the augmentation uses each image's own size, so
    # other sizes (the synthetic world's 704x396) keep the same field of view; a mismatch is logged (info).
    src_size: tuple[int, int] = (900, 1600)
    resize: tuple[float, float] = (-0.06, 0.11)   # train: added to the base scale input_W / image_W
    resize_test: float = 0.0
    rot: tuple[float, float] = (-5.4, 5.4)        # degrees, train only
    flip: bool = True                             # random horizontal image flip, train only
    crop_h: tuple[float, float] = (0.0, 0.0)      # fraction of rows kept above the crop; 0 = bottom crop
    flip_dx_ratio: float = 0.5                    # BEV flips (bda), train only, applied to the GT too
    flip_dy_ratio: float = 0.5
    load_occ: bool = True                         # voxel_semantics, mask_lidar, mask_camera
    # voxel_instances from the Occ3D-panoptic 'instances' array, for panoptic models and RayPQ. Read from the
    # info's occ_path, or, when instances_root is set, from <root>/<instances_root>/<scene>/<token>/labels.npz
    # (the Occ3D arrays are then read from there too: FlashOCC@4084861 nuscenes_dataset_occ.py, evaluate,
    # swaps gts/ for occ3d_panoptic/ the same way).
    load_instances: bool = False
    instances_root: str = ""
    load_depth: bool = False                      # gt_depth (N, H, W) from LiDAR
    depth_range: tuple[float, float] = (1.0, 45.0)
    num_adjacent: int = 0                         # previous keyframes for temporal models
    # LiDAR (EFFOcc LiDAR-only and fusion models; flashocc.data.lidar, docs/official-behaviour.md#lidar-points-and-sweeps)
    load_points: bool = False                     # points: keyframe + sweeps in the grid's ego frame, flipped with bda
    sweeps: int = 10                              # info sweeps considered, newest first (the infos' max_sweeps)
    sweeps_used: int = 9                          # sweeps added to the keyframe: random in training, newest at test
    sweep_min_distance: float = 1.0               # metres: sweep points with |x|, |y| both below it are dropped
    pad_empty_sweeps: bool = True                 # no sweeps in the infos: repeat the keyframe (official quirk)
    load_lidar_depth: bool = False                # lidar_depth (N, H, W): keyframe + sweeps projected per camera
    # Learning from a part of the labels (flashocc.data.label_subsets; docs/few-labels.md):
    # the training scenes that count as labelled, by fraction, or by a count or a file of scene names
    # (labeled_scenes; "" = use labeled_fraction). A run without a teacher trains on those scenes only; a
    # distillation student reads every scene and flags each sample (batch key ``labeled``). Training sets only.
    labeled_fraction: float = 1.0
    labeled_scenes: str = ""
    label_subset: Literal["nested", "effocc"] = "nested"
    label_seed: int = 0                           # the seed of the "nested" permutation (EFFOcc's draw is fixed at 42)
    # "sparseocc" (SparseOccConfig.data_requirements; flashocc.data.sparseocc_frames): the official SparseOcc
    # choice of the 7 past frames, one resize/crop/flip draw for all images, images as BGR 0..255 (the model
    # normalises them) and the lidar2img / ego2lidar keys.
    pipeline: Literal["flashocc", "sparseocc"] = "flashocc"
    # JPEG decode reduced in the DCT (flashocc.data.jpeg), exact geometry, slightly different pixels:
    # "train" = training sets only, so evaluation keeps the official PIL preprocessing bit for bit;
    # "always" = evaluation too; "off" = never.
    fast_decode: Literal["off", "train", "always"] = "train"

    def __post_init__(self) -> None:
        # Each check is a callable so that a malformed value (None, a 3-tuple) fails its own check
        # instead of raising an unrelated TypeError from the next one.
        base = _base_scale(self.input_size, self.src_size)
        checks: list[tuple[str, Callable[[], bool], str]] = [
            ("cameras", lambda: _strings(self.cameras) and len(self.cameras) > 0, "at least one camera name"),
            ("cameras", lambda: set(self.cameras) <= set(NUSCENES_CAMERAS),
             f"names from {list(NUSCENES_CAMERAS)}"),
            ("cameras", lambda: len(set(self.cameras)) == len(self.cameras), "each camera at most once"),
            ("input_size", lambda: _ints(self.input_size, 2) and min(self.input_size) > 0,
             "(H, W), two integers > 0"),
            ("src_size", lambda: _ints(self.src_size, 2) and min(self.src_size) > 0, "(H, W), two integers > 0"),
            ("resize", lambda: _numbers(self.resize, 2) and self.resize[0] <= self.resize[1],
             "a (low, high) range of offsets added to the base scale input_W / image_W"),
            ("resize", lambda: base is not None and base + self.resize[0] > 0,
             f"low > -{base:.3f} (the base scale input_size W / src_size W), so the image keeps a size > 0"
             if base else "a valid input_size and src_size first"),
            ("resize_test", lambda: _numbers((self.resize_test,), 1) and base is not None
             and base + self.resize_test > 0,
             f"a number > -{base:.3f} (the base scale input_size W / src_size W)" if base else "a number"),
            ("rot", lambda: _numbers(self.rot, 2) and -180 <= self.rot[0] <= self.rot[1] <= 180,
             "a (low, high) range in degrees inside [-180, 180]"),
            ("flip", lambda: isinstance(self.flip, bool), "true or false"),
            ("crop_h", lambda: _numbers(self.crop_h, 2) and 0 <= self.crop_h[0] <= self.crop_h[1] < 1,
             "a (low, high) range inside [0, 1) (fraction of rows kept above the crop)"),
            ("flip_dx_ratio", lambda: _numbers((self.flip_dx_ratio,), 1) and 0 <= self.flip_dx_ratio <= 1,
             "a probability in [0, 1]"),
            ("flip_dy_ratio", lambda: _numbers((self.flip_dy_ratio,), 1) and 0 <= self.flip_dy_ratio <= 1,
             "a probability in [0, 1]"),
            ("load_occ", lambda: isinstance(self.load_occ, bool), "true or false"),
            ("load_instances", lambda: isinstance(self.load_instances, bool), "true or false"),
            ("load_instances", lambda: self.load_occ or not self.load_instances,
             "false when data.load_occ is false (instance ids come with the Occ3D labels)"),
            ("instances_root", lambda: isinstance(self.instances_root, str),
             "a folder relative to the data root (e.g. occ3d_panoptic), or '' for the info's occ_path"),
            ("instances_root", lambda: self.load_instances or not self.instances_root,
             "'' unless data.load_instances is true (it says where the instance ids are read)"),
            ("load_depth", lambda: isinstance(self.load_depth, bool), "true or false"),
            ("depth_range", lambda: _numbers(self.depth_range, 2) and 0 < self.depth_range[0] < self.depth_range[1],
             "(near, far) metres with 0 < near < far"),
            ("num_adjacent", lambda: _ints((self.num_adjacent,), 1) and self.num_adjacent >= 0, "an integer >= 0"),
            ("load_points", lambda: isinstance(self.load_points, bool), "true or false"),
            ("sweeps", lambda: _ints((self.sweeps,), 1) and self.sweeps >= 0, "an integer >= 0"),
            ("sweeps_used", lambda: _ints((self.sweeps_used,), 1) and self.sweeps_used >= 0, "an integer >= 0"),
            ("sweep_min_distance", lambda: _numbers((self.sweep_min_distance,), 1) and self.sweep_min_distance >= 0,
             "a distance >= 0 in metres (0 keeps every point)"),
            ("pad_empty_sweeps", lambda: isinstance(self.pad_empty_sweeps, bool), "true or false"),
            ("load_lidar_depth", lambda: isinstance(self.load_lidar_depth, bool), "true or false"),
            ("labeled_fraction", lambda: _numbers((self.labeled_fraction,), 1) and 0 <= self.labeled_fraction <= 1,
             "a fraction of the training scenes in [0, 1]"),
            ("labeled_scenes", lambda: isinstance(self.labeled_scenes, str), "a scene count or a file of scene names"),
            ("labeled_scenes", lambda: not self.labeled_scenes or self.labeled_fraction == 1.0,
             "'' when data.labeled_fraction is set (give one of the two)"),
            ("label_subset", lambda: self.label_subset in ("nested", "effocc"), "one of nested, effocc"),
            ("label_seed", lambda: _ints((self.label_seed,), 1) and self.label_seed >= 0, "an integer >= 0"),
            ("label_seed", lambda: self.label_seed == 0 or self.label_subset == "nested",
             "0 with data.label_subset=effocc (EFFOcc's draw always uses random.seed(42))"),
            ("pipeline", lambda: self.pipeline in ("flashocc", "sparseocc"), "one of flashocc, sparseocc"),
            ("fast_decode", lambda: self.fast_decode in ("off", "train", "always"), "one of off, train, always"),
        ]
        for name, ok, expected in checks:
            if not ok():
                raise ConfigError(f"data.{name}: expected {expected}, found {getattr(self, name)!r}")


def _ints(values: object, n: int) -> bool:
    return (isinstance(values, (tuple, list)) and len(values) == n
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values))


def _numbers(values: object, n: int) -> bool:
    return (isinstance(values, (tuple, list)) and len(values) == n
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def _strings(values: object) -> bool:
    return isinstance(values, (tuple, list)) and all(isinstance(v, str) for v in values)


def _base_scale(input_size: object, src_size: object) -> float | None:
    """input_W / image_W for nuScenes-sized images: ``sample_image_aug`` adds the resize offsets to it."""
    if _ints(input_size, 2) and _ints(src_size, 2) and min(*input_size, *src_size) > 0:
        return input_size[1] / src_size[1]
    return None


def resolve_data_path(root: Path, relative: str, token: str, what: str) -> Path:
    """``root/relative``, else ``root/<file name>``; the error names the sample and the path expected."""
    direct = root / relative
    if direct.exists():
        return direct
    flat = root / Path(relative).name
    if flat.exists():
        return flat
    raise MissingFileError(f"sample {token}: {what} not found: {direct} (nor {flat})")


class OccDataset(Dataset):
    """Keyframes sorted by timestamp (the official evaluation order: NuScenesDatasetBEVDet.load_annotations).

    Each item is a dict of tensors (T = 1 + num_adjacent frames, N cameras, frame-major: the N
    cameras of the current frame, then those of each previous frame):
      img (T*N, 3, H, W) float32 BGR-normalised; sensor2ego, ego2global (T*N, 4, 4); intrinsics,
      post_rots (T*N, 3, 3); post_trans (T*N, 3); bda (3, 3) — all float32;
      voxel_semantics, mask_lidar, mask_camera (Dx, Dy, Dz) uint8 (``load_occ``), flipped with the bda;
      voxel_instances (Dx, Dy, Dz) uint8 panoptic segment ids, 0 = free (``load_instances``), flipped alike;
      active_mask (Dx, Dy, Dz) bool, the voxels that supervise (``active_masks``: flashocc.data.active_masks);
      gt_depth (N, H, W) float32 metres of the current frame (``load_depth``, keyframe points only);
      points (M, 5) float32 x, y, z, intensity, Δt (``load_points``): keyframe + sweeps in the grid's
      ego frame, flipped with the bda; lidar_depth (N, H, W) float32 metres, 0 = no point
      (``load_lidar_depth``, keyframe + sweeps, a model input of the fusion models);
      plus ``token`` and ``scene_name`` strings.

    Augmentation randomness: ``aug_seed=None`` draws fresh entropy on every call; an int makes it a
    pure function of (aug_seed, epoch, index), independent of the worker count; call ``set_epoch``.
    """

    def __init__(self, root: str | os.PathLike, infos_file_or_list: str | os.PathLike | Sequence[SampleInfo],
                 config: DataConfig = DataConfig(), train: bool = False, *, aug_seed: int | None = None,
                 keep_unlabeled: bool = False, active_masks: ActiveMasks | None = None) -> None:
        self.root = Path(root)
        # Voxel-level active learning (flashocc.data.active_masks): each sample gets ``active_mask``.
        self.active_masks = active_masks
        if isinstance(infos_file_or_list, (str, os.PathLike)):
            infos_file_or_list = load_infos(infos_file_or_list)
        self.samples: list[SampleInfo] = sorted(infos_file_or_list, key=lambda s: s.timestamp)
        # Labelled scenes (training only): None = every sample is labelled and no ``labeled`` key is added.
        self.labeled_scene_names: list[str] | None = (
            select_labeled_scenes(config, [s.scene_name for s in self.samples], self.root) if train else None)
        if self.labeled_scene_names is not None and not keep_unlabeled:
            chosen = set(self.labeled_scene_names)
            self.samples = [s for s in self.samples if s.scene_name in chosen]
        self._labeled = None if self.labeled_scene_names is None else frozenset(self.labeled_scene_names)
        for sample in self.samples:
            missing = [cam for cam in config.cameras if cam not in sample.cams]
            if missing:
                raise DataError(f"sample {sample.token}: no camera record for {missing} (data.cameras); "
                                f"it has {list(sample.cams)}")
        self._by_token = {sample.token: sample for sample in self.samples}
        self.config = config
        self.train = train
        self.aug_seed = aug_seed
        self.epoch = 0
        self._warned_size = False
        # (camera, intrinsics) -> (W, H) and file of the first image seen with them, in this process.
        self._size_by_intrinsics: dict[tuple, tuple[tuple[int, int], Path, str]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def frames(self, index: int) -> list[SampleInfo]:
        """[current, t-1, ...]: official fallback to the current frame across a scene start.

        Upstream: FlashOCC@4084861 projects/mmdet3d_plugin/datasets/nuscenes_dataset_bevdet.py,
        NuScenesDatasetBEVDet.get_adj_info (docs/official-behaviour.md#adjacent-frames).

        The official code takes sorted index ``idx - offset`` and keeps it if it is in the same scene; we
        follow ``prev_token`` instead, which gives the same frames when scenes are contiguous in time (except
        that the official clamp to index 0 can reuse the dataset's first sample) and stays right when two
        vehicles' scenes interleave in time.
        """
        current = self.samples[index]
        out, prev = [current], current
        for _ in range(self.config.num_adjacent):
            candidate = self._by_token.get(prev.prev_token) if prev is not None else None
            prev = candidate if candidate is not None and candidate.scene_token == current.scene_token else None
            out.append(prev if prev is not None else current)
        return out

    def _rng(self, index: int) -> np.random.Generator:
        if self.aug_seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.aug_seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        cfg = self.config
        rng = self._rng(index) if self.train else None
        sparse = cfg.pipeline == "sparseocc"
        frames = sparseocc_frames(self.samples[index], self._by_token, self.train, rng, cfg.num_adjacent) if sparse else self.frames(index)
        current = frames[0]
        imgs, s2e, e2g, intrins, post_rots, post_trans = [], [], [], [], [], []
        augs: list[T.ImageAug] = []
        done: dict[Path, torch.Tensor] = {}  # a frame repeated at a scene start is decoded once
        fast = cfg.fast_decode == "always" or (cfg.fast_decode == "train" and self.train)
        for frame_i, frame in enumerate(frames):
            sizes = []
            for cam_i, name in enumerate(cfg.cameras):
                cam = frame.cams[name]
                path = resolve_data_path(self.root, cam.image_path, frame.token, f"{name} image")
                if path not in done:
                    # The fast path reads the size from the header: the reduction depends on the augmentation.
                    img = None if fast else T.load_image(path, frame.token)
                    size = J.image_size(path, frame.token) if fast else img.size
                    T.check_image_fits_intrinsics(size, cam.intrinsics, path, frame.token)
                    self._check_same_intrinsics_same_size(name, cam.intrinsics, size, path, frame.token)
                    sizes.append((name, path, size, cam.intrinsics))
                    if frame_i == 0:
                        self._check_size(size, frame.token, path)
                        # SparseOcc: one draw for all images (SparseOcc@af4d9df RandomTransformImage)
                        augs.append(augs[0] if sparse and augs else T.sample_image_aug(cfg, size, rng, self.train))
                    # every frame reuses its camera's augmentation (PrepareImageInputs.get_inputs)
                    if fast:
                        reduced = J.load_reduced(path, frame.token, augs[cam_i].resize_dims)
                        augmented = J.augment_reduced(reduced, augs[cam_i])
                    else:
                        augmented = T.augment_image(img, augs[cam_i])
                    done[path] = _bgr_255(augmented) if sparse else T.normalize_image(augmented)
                imgs.append(done[path])
                rot, tran = augs[cam_i].matrices()
                post_rots.append(rot)
                post_trans.append(tran)
                # Official quirk (loading.py, PrepareImageInputs.get_inputs): adjacent frames copy the current
                # intrinsics (docs/official-behaviour.md#adjacent-frames).
                intrins.append(current.cams[name].intrinsics)
                s2e.append(cam.sensor2ego)
                e2g.append(cam.ego2global)
            T.check_sample_sizes(sizes, frame.token)
        flip_dx, flip_dy = T.sample_bda_flips(cfg, rng, self.train)
        bda = T.bda_for_flips(flip_dx, flip_dy)
        if sparse:
            l2i = [lidar2img(current, frame, name, post_rots[i], post_trans[i])
                   for i, (frame, name) in enumerate((f, n) for f in frames for n in cfg.cameras)]
        out = {
            "img": torch.stack(imgs),
            "sensor2ego": _f32(s2e), "ego2global": _f32(e2g), "intrinsics": _f32(intrins),
            "post_rots": _f32(post_rots), "post_trans": _f32(post_trans),
            "bda": torch.from_numpy(bda),
            "token": current.token, "scene_name": current.scene_name,
        }
        if sparse:
            out.update(lidar2img=_f32(l2i), ego2lidar=_f32([ego2lidar(current, bda)])[0])
        if self._labeled is not None:
            out["labeled"] = torch.tensor(current.scene_name in self._labeled)
        if cfg.load_occ:
            out.update(self._load_occ(current, flip_dx, flip_dy))
            if self.active_masks is not None:
                labelled = self._labeled is None or current.scene_name in self._labeled
                entry = self.active_masks.sample_entry(current.token, labelled, tuple(out["voxel_semantics"].shape),
                                                       flip_dx, flip_dy)
                out[BATCH_KEY] = entry[BATCH_KEY]
                if "labeled" in out:
                    out["labeled"] = entry["labeled"]
        cam_rots, cam_trans = post_rots[:len(cfg.cameras)], post_trans[:len(cfg.cameras)]
        if cfg.load_depth:
            out["gt_depth"] = self._depth_maps(current, cam_rots, cam_trans)
        if cfg.load_points or cfg.load_lidar_depth:
            # Drawn after the image and BEV augmentation, so enabling LiDAR leaves those draws as they were.
            points = self.lidar_points(current, rng)
            if cfg.load_points:
                out["points"] = torch.from_numpy(L.to_grid_frame(points, current.lidar2ego, bda))
            if cfg.load_lidar_depth:
                out["lidar_depth"] = torch.from_numpy(L.lidar_depth_images(
                    points, current, cfg.cameras, cam_rots, cam_trans, cfg.input_size, cfg.depth_range))
        return out

    def lidar_points(self, sample: SampleInfo, rng: np.random.Generator | None = None) -> np.ndarray:
        """(M, 5) float32 keyframe + sweeps in the keyframe LiDAR frame (``flashocc.data.lidar``); ``rng``
        draws the sweeps in training, None takes the newest."""
        cfg = self.config
        settings = L.SweepSettings(cfg.sweeps, cfg.sweeps_used, cfg.sweep_min_distance, cfg.pad_empty_sweeps)
        return L.multi_sweep_points(sample, settings,
                                    lambda rel, what: resolve_data_path(self.root, rel, sample.token, what), rng)

    def _check_size(self, size: tuple[int, int], token: str, path: Path) -> None:
        if not self._warned_size and (size[1], size[0]) != tuple(self.config.src_size):
            self._warned_size = True
            log.info("sample %s: %s is %dx%d (WxH), DataConfig.src_size is %s (HxW); augmenting from the "
                     "image's own size", token, path, size[0], size[1], self.config.src_size)

    def _check_same_intrinsics_same_size(self, name: str, intrinsics: np.ndarray, size: tuple[int, int], path: Path,
                                         token: str) -> None:
        """One camera calibration belongs to one image size. A set whose frames were partly rewritten at
        another size (an interrupted regeneration with the old info files) passes the per-image check when
        the sizes are close, but not this one."""
        key = (name, *np.round(np.asarray(intrinsics, np.float64), 3).ravel().tolist())
        first = self._size_by_intrinsics.setdefault(key, (tuple(size), path, token))
        if first[0] != tuple(size):
            (w0, h0), path0, token0 = first
            raise DataError(
                f"sample {token}: {name} image {path} is {size[0]}x{size[1]}, but sample {token0} has the same "
                f"{name} intrinsics with a {w0}x{h0} image ({path0}); expected one image size per calibration. "
                f"Does the set mix images of two sizes (an interrupted regeneration)? Regenerate it or rebuild "
                f"the info files")

    def _load_occ(self, sample: SampleInfo, flip_dx: bool, flip_dy: bool) -> dict[str, torch.Tensor]:
        if sample.occ_path is None:
            raise DataError(f"sample {sample.token}: the info record has no occ_path; build infos with "
                             f"'flashocc data nuscenes --occ GTS' or set DataConfig(load_occ=False)")
        cfg = self.config
        path = self.root / sample.occ_path
        if cfg.load_instances and cfg.instances_root:
            path = self.root / cfg.instances_root / sample.scene_name / sample.token / "labels.npz"
            if not path.is_file():
                raise MissingFileError(f"sample {sample.token}: {path} not found (data.instances_root = "
                                       f"{cfg.instances_root!r}); write the panoptic labels with 'flashocc data "
                                       f"panoptic --out {self.root / cfg.instances_root}'")
        labels = load_labels(path, sample.token, instances=cfg.load_instances)
        arrays = (labels.semantics, labels.mask_lidar, labels.mask_camera)
        out = {key: torch.from_numpy(T.flip_volume(arr, flip_dx, flip_dy)) for key, arr in zip(VOLUME_KEYS, arrays)}
        if cfg.load_instances:
            out[INSTANCES_KEY] = torch.from_numpy(T.flip_volume(labels.instances, flip_dx, flip_dy))
        return out

    def _depth_maps(self, sample: SampleInfo, post_rots: list, post_trans: list) -> torch.Tensor:
        path = resolve_data_path(self.root, sample.lidar_path, sample.token, "LiDAR sweep")
        points = T.load_points(path, sample.token)
        maps = []
        for name, rot, tran in zip(self.config.cameras, post_rots, post_trans):
            cam = sample.cams[name]
            lidar2cam = T.lidar_to_camera(sample.lidar2ego, sample.ego2global, cam.sensor2ego, cam.ego2global)
            maps.append(T.lidar_depth_map(points, lidar2cam, cam.intrinsics, rot, tran, self.config.input_size,
                                          self.config.depth_range))
        return torch.from_numpy(np.stack(maps))


def select_labeled_scenes(cfg: DataConfig, scene_names: Sequence[str], root: Path) -> list[str] | None:
    """The labelled scenes of a training set (``data.labeled_fraction`` / ``data.labeled_scenes`` /
    ``data.label_subset``), or None when every scene is labelled. A relative file is read from the working
    directory, else from the data root."""
    names = sorted(set(scene_names))
    spec = cfg.labeled_scenes.strip()
    # Checked here, not in DataConfig, so that the order of the overrides does not matter.
    if cfg.label_seed != 0 and not (spec.isdigit() or (not spec and cfg.labeled_fraction < 1)):
        raise ConfigError(f"data.label_seed: expected 0 unless scenes are drawn (data.labeled_fraction < 1 or "
                          f"data.labeled_scenes a count; a file of names is no draw), found {cfg.label_seed}")
    if not spec and cfg.labeled_fraction == 1.0:
        return None
    if not spec:
        return labeled_scenes(names, fraction=cfg.labeled_fraction, seed=_label_seed(cfg), method=cfg.label_subset)
    if spec.isdigit():
        if int(spec) > len(names):
            raise ConfigError(f"data.labeled_scenes: expected at most {len(names)} scenes (the training set's), "
                              f"found {spec}")
        return labeled_scenes(names, count=int(spec), seed=_label_seed(cfg), method=cfg.label_subset)
    path = Path(spec) if Path(spec).is_absolute() or Path(spec).exists() else root / spec
    if not path.is_file():
        raise MissingFileError(f"data.labeled_scenes: {spec} is neither a scene count nor a file of scene names "
                               f"(looked for {Path(spec)} and {root / spec})")
    listed = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    unknown = sorted(set(listed) - set(names))
    if unknown:
        raise DataError(f"{path}: {len(unknown)} scene name(s) not in the training set, e.g. {unknown[:3]}; "
                        f"expected names such as {names[:3]}")
    return sorted(set(listed))


def _label_seed(cfg: DataConfig) -> int | None:
    """``data.label_seed`` for the nested draw; None keeps EFFOcc's own seed (42) for its draw."""
    return cfg.label_seed if cfg.label_subset == "nested" else None


def _bgr_255(img) -> torch.Tensor:
    """(3, H, W) float32 BGR 0..255, as mmcv reads the files (SparseOcc normalises inside the model)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img.convert("RGB"))[..., ::-1].transpose(2, 0, 1))).float()


def _f32(mats: list) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(m, dtype=np.float64) for m in mats]).astype(np.float32))


def collate_batch(samples: Sequence[dict]) -> dict:
    """Stack per-sample dicts into the batch dict of ``flashocc.batch`` plus ``tokens``/``scene_names``."""
    if not samples:
        raise ValueError("collate_batch got an empty list of samples")
    keys = set(samples[0])
    for sample in samples[1:]:
        if set(sample) != keys:
            raise ValueError(f"sample {sample.get('token')} has keys {sorted(sample)}, but sample "
                             f"{samples[0].get('token')} has {sorted(keys)}; mixed DataConfigs in one batch")
    tensor_keys = [key for key in sorted(keys) if isinstance(samples[0][key], torch.Tensor) and key not in LIST_KEYS]
    batch = {key: torch.stack([s[key] for s in samples]) for key in tensor_keys}
    for key in sorted(keys & set(LIST_KEYS)):
        batch[key] = [s[key] for s in samples]      # one (Nᵢ, C) tensor per sample: point counts differ
    batch["tokens"] = [s["token"] for s in samples]
    batch["scene_names"] = [s["scene_name"] for s in samples]
    return batch


def build_dataloader(dataset: Dataset, batch_size: int, workers: int = 0, shuffle: bool = False,
                     sampler: Sampler | None = None, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader with ``collate_batch``; ``seed`` fixes the shuffle order.

    Workers are not persistent, so ``OccDataset.set_epoch`` reaches them on every new epoch.
    """
    if sampler is not None and shuffle:
        raise ValueError("pass either shuffle=True or a sampler (which decides the order itself), not both")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, found {batch_size} and {workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      collate_fn=collate_batch, generator=generator, drop_last=drop_last)

"""Generate a synthetic Occ3D-nuScenes-shaped data set: JPEGs, LiDAR sweeps, labels.npz and info files.

Layout (the nuScenes/Occ3D one, so every reader handles synthetic and real data alike)::

    root/samples/CAM_*/<scene>__CAM_*__<timestamp>.jpg
    root/samples/LIDAR_TOP/<scene>__LIDAR_TOP__<timestamp>.pcd.bin   (M, 5) float32 x, y, z, intensity, ring
    root/sweeps/LIDAR_TOP/<scene>__LIDAR_TOP__<timestamp>.pcd.bin    the 20 Hz sweeps between keyframes
    root/sweeps/CAM_*/<scene>__CAM_*__<timestamp>.jpg                camera sweeps (opt-in: camera_sweeps)
    root/gts/<scene>/<token>/labels.npz                              semantics, mask_lidar, mask_camera, instances
    root/infos_train.pkl, root/infos_val.pkl                         flashocc.data.infos.save_infos
    root/synth_complete.json                                         written last: the set is complete

Every frame is a pure function of (config, scene index, frame index), so the output is the same
byte for byte whatever the number of workers.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from flashocc.atomic import atomic_write
from flashocc.data.infos import CameraInfo, SampleInfo, SweepInfo, save_infos
from flashocc.data.panoptic import number_objects
from flashocc.data.synth.lidar import simulate_lidar
from flashocc.data.synth.marker import FILES_PER_FRAME, INFO_FILES, MARKER_NAME, SOURCE, generator_files, marker_record
from flashocc.data.synth.masks import camera_visibility, lidar_visibility
from flashocc.data.synth.render import render_camera
from flashocc.data.synth.rig import Rig, nuscenes_rig
from flashocc.data.synth.voxelize import voxelize
from flashocc.data.synth.world import World, generate_world
from flashocc.geometry import NUSCENES_CAMERAS
from flashocc.grid import OCC3D_NUSCENES, OccGrid

logger = logging.getLogger(__name__)

_BASE_TIMESTAMP_US = 1_700_000_000_000_000
LIDAR_SWEEP_US = 50_000  # LIDAR_TOP spins at 20 Hz; nuScenes keyframes (2 Hz) are every 10th sweep


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes are (W, H); times in seconds; speeds in m/s; lengths in metres."""

    scenes: int = 10
    frames_per_scene: int = 20
    seed: int = 0
    image_size: tuple[int, int] = (704, 396)   # 1600x900 x 0.44: the official test-time input scale
    val_scenes: int | None = None              # None: the last max(1, scenes // 5) scenes
    frame_interval_s: float = 0.5              # nuScenes keyframes come at 2 Hz
    speed_range: tuple[float, float] = (3.0, 10.0)
    ground_z: float = -0.7                     # ego-frame ground height: Occ3D puts the road at z-index 0
    lidar_azimuth_steps: int = 1080            # ~34.5k rays per sweep, like the fixture's 34,688 points
    lidar_max_range: float = 70.0
    lidar_sweeps: int = 10                     # earlier 20 Hz sweeps recorded per keyframe (mmdet3d max_sweeps)
    # Camera images between keyframes, evenly spaced (5 at 0.5 s: nuScenes' 12 Hz), for SparseOcc's past frames
    # (SampleInfo.cam_sweeps); 0 renders keyframes only and leaves the set as it was before the field.
    camera_sweeps: int = 0
    jpeg_quality: int = 92
    workers: int = 1

    def validate(self) -> None:
        checks = [
            (self.scenes >= 1, "scenes", "an integer >= 1", self.scenes),
            (self.frames_per_scene >= 1, "frames_per_scene", "an integer >= 1", self.frames_per_scene),
            (len(self.image_size) == 2 and min(self.image_size) >= 8, "image_size", "(W, H) with both >= 8",
             self.image_size),
            (self.val_scenes is None or 0 <= self.val_scenes <= self.scenes, "val_scenes",
             f"None or 0..{self.scenes}", self.val_scenes),
            (self.frame_interval_s > 0, "frame_interval_s", "> 0", self.frame_interval_s),
            (0 < self.speed_range[0] <= self.speed_range[1], "speed_range", "0 < low <= high", self.speed_range),
            (-1.0 < self.ground_z < 0.0, "ground_z", "inside the lowest metre of the grid (-1, 0)", self.ground_z),
            (self.lidar_azimuth_steps >= 16, "lidar_azimuth_steps", ">= 16", self.lidar_azimuth_steps),
            (isinstance(self.lidar_sweeps, int) and not isinstance(self.lidar_sweeps, bool) and self.lidar_sweeps >= 0,
             "lidar_sweeps", "an integer >= 0 (sweeps before each keyframe, 20 Hz)", self.lidar_sweeps),
            (isinstance(self.camera_sweeps, int) and not isinstance(self.camera_sweeps, bool)
             and self.camera_sweeps >= 0, "camera_sweeps", "an integer >= 0 (camera images between keyframes)",
             self.camera_sweeps),
            (1 <= self.jpeg_quality <= 95, "jpeg_quality", "1..95", self.jpeg_quality),
            (self.workers >= 1, "workers", ">= 1", self.workers),
        ]
        for ok, name, expected, found in checks:
            if not ok:
                raise ValueError(f"SynthConfig.{name}: expected {expected}, got {found!r}")

    @property
    def num_val_scenes(self) -> int:
        if self.val_scenes is not None:
            return self.val_scenes
        return max(1, self.scenes // 5)


@dataclass
class SynthFrame:
    """One simulated keyframe. Labels and masks are (200, 200, 16) uint8 in the LiDAR ego frame."""

    images: dict[str, np.ndarray]          # camera name -> (H, W, 3) uint8 RGB
    depths: dict[str, np.ndarray]          # camera name -> (H, W) float32 first-hit distance (inf: sky)
    points: np.ndarray                     # (M, 5) float32 in the LiDAR frame
    ranges: np.ndarray                     # (32, n_azimuth) LiDAR range image
    semantics: np.ndarray
    mask_lidar: np.ndarray
    mask_camera: np.ndarray
    ego2global: np.ndarray                 # (4, 4) at the LiDAR time
    cam_ego2global: dict[str, np.ndarray] = field(default_factory=dict)  # each camera's own ego pose
    # uint8 segment ids from the world's objects, numbered like Occ3D-panoptic (flashocc.data.panoptic)
    instances: np.ndarray | None = None


def scene_world(config: SynthConfig, scene_index: int, grid: OccGrid = OCC3D_NUSCENES) -> World:
    """The deterministic world of one scene (numpy Generator seeded by (seed, scene_index))."""
    rng = np.random.default_rng([config.seed, scene_index])
    speed = float(rng.uniform(*config.speed_range))
    duration = (config.frames_per_scene - 1) * config.frame_interval_s + 0.1
    return generate_world(rng, speed, duration, config.ground_z, grid.colors)


def simulate_frame(world: World, rig: Rig, time_s: float, grid: OccGrid = OCC3D_NUSCENES,
                   lidar_azimuth_steps: int = 1080, lidar_max_range: float = 70.0) -> SynthFrame:
    """Render the six cameras, the LiDAR sweep, the labels and both masks at ``time_s`` (seconds).

    Labels and masks live in the ego frame at the LiDAR time; each camera renders from the ego
    pose at its own exposure time (``Camera.time_offset_us``), as in nuScenes. The voxel ``grid``
    must be the Occ3D one for files that the data pipeline reads (it checks the shapes).
    """
    corners = world.primitives.corners()
    ego2global = world.ego_pose(time_s)
    images, depths, cam_poses = {}, {}, {}
    mask_camera = np.zeros(grid.shape, bool)
    for cam in rig.cameras:
        cam_pose = world.ego_pose(time_s + cam.time_offset_us * 1e-6)
        cam2global = cam_pose @ cam.cam2ego
        rgb, depth = render_camera(world, corners, cam.intrinsics, cam2global, rig.image_size)
        images[cam.name], depths[cam.name], cam_poses[cam.name] = rgb, depth, cam_pose
        ego2cam = np.linalg.inv(cam2global) @ ego2global
        mask_camera |= camera_visibility(grid, ego2cam, cam.intrinsics, depth)
    lidar2global = ego2global @ rig.lidar2ego
    points, ranges = simulate_lidar(world, corners, lidar2global, rig.lidar_pitches(), lidar_azimuth_steps,
                                    lidar_max_range)
    mask_lidar = lidar_visibility(grid, np.linalg.inv(rig.lidar2ego), rig.lidar_pitches(), ranges)
    semantics, objects = voxelize(world, ego2global, grid, with_objects=True)
    instances = number_objects(semantics, objects, grid, where=f"synthetic frame at {time_s:.2f} s")
    return SynthFrame(images, depths, points, ranges, semantics, mask_lidar.astype(np.uint8),
                      mask_camera.astype(np.uint8), ego2global, cam_poses, instances)


def simulate_sweep(world: World, rig: Rig, time_s: float, lidar_azimuth_steps: int = 1080,
                   lidar_max_range: float = 70.0) -> np.ndarray:
    """(M, 5) float32 points of a LiDAR sweep at ``time_s``, in the LiDAR frame of that time."""
    lidar2global = world.ego_pose(time_s) @ rig.lidar2ego
    return simulate_lidar(world, world.primitives.corners(), lidar2global, rig.lidar_pitches(), lidar_azimuth_steps,
                          lidar_max_range)[0]


def frame_sweeps(config: SynthConfig, frame_index: int) -> tuple[list[tuple[int, int | None]], list[int]]:
    """The sweeps of keyframe ``frame_index`` on the scene's 20 Hz clock, newest first, as (time in µs from
    the scene start, the keyframe at that time or None), and the times of the sweep files this keyframe
    writes: those after the previous keyframe (every later keyframe that needs one finds it written).

    As in nuScenes the chain passes through earlier keyframes: at 2 Hz the 10th sweep is the previous
    keyframe's own file. The first keyframe's sweeps lie before the scene start (the ego path extends
    backwards), so every keyframe has a full set.
    """
    key = _keyframe_us(config, frame_index)
    newest = -(-key // LIDAR_SWEEP_US) - 1            # the last 20 Hz tick strictly before the keyframe
    keyframes = {_keyframe_us(config, k): k for k in range(frame_index)}
    refs = [((newest - j) * LIDAR_SWEEP_US, None) for j in range(config.lidar_sweeps)]
    refs = [(t, keyframes.get(t)) for t, _ in refs]
    after = _keyframe_us(config, frame_index - 1) if frame_index > 0 else None
    return refs, [t for t, k in refs if k is None and (after is None or t > after)]


def camera_sweep_times(config: SynthConfig, frame_index: int) -> list[float]:
    """Times (s) of keyframe ``frame_index``'s camera sweeps, newest first, evenly between it and the previous
    keyframe; none for a scene's first keyframe (as nuScenes infos: SparseOcc@af4d9df gen_sweep_info.py)."""
    if frame_index == 0:
        return []
    step = config.frame_interval_s / (config.camera_sweeps + 1)
    return [frame_index * config.frame_interval_s - (j + 1) * step for j in range(config.camera_sweeps)]


def render_cameras(world: World, rig: Rig, time_s: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The six images at ``time_s`` (each from the ego pose at its own exposure time) and those ego poses."""
    corners = world.primitives.corners()
    images, poses = {}, {}
    for cam in rig.cameras:
        poses[cam.name] = world.ego_pose(time_s + cam.time_offset_us * 1e-6)
        images[cam.name] = render_camera(world, corners, cam.intrinsics, poses[cam.name] @ cam.cam2ego,
                                         rig.image_size)[0]
    return images, poses


def sweep_file_count(config: SynthConfig) -> int:
    per_scene = sum(len(frame_sweeps(config, f)[1]) + len(NUSCENES_CAMERAS) * len(camera_sweep_times(config, f))
                    for f in range(config.frames_per_scene))
    return config.scenes * per_scene


def recorded_config(config: SynthConfig) -> dict:
    """The config as the info files store it: without the worker count (it changes nothing in the output)
    and without ``camera_sweeps`` when 0, so sets written before that field stay byte-identical and valid."""
    return {k: v for k, v in asdict(config).items() if k != "workers" and not (k == "camera_sweeps" and v == 0)}


def generate_synthetic_set(out: str | os.PathLike, config: SynthConfig = SynthConfig(),
                           progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a synthetic set under ``out`` and return its root. ``progress(done, total)`` is called per frame."""
    config.validate()
    root = Path(out)
    _remove_previous_set(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(s, f) for s in range(config.scenes) for f in range(config.frames_per_scene)]
    samples: list[SampleInfo] = []
    if config.workers == 1:
        for i, (s, f) in enumerate(jobs):
            samples.append(_as_from_worker(_write_frame(root, config, s, f)))
            if progress:
                progress(i + 1, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            futures = [pool.submit(_write_frame, root, config, s, f) for s, f in jobs]
            for i, fut in enumerate(futures):
                samples.append(fut.result())
                if progress:
                    progress(i + 1, len(jobs))
    n_val = config.num_val_scenes
    val_names = {_scene_name(config, s) for s in range(config.scenes - n_val, config.scenes)}
    train = [x for x in samples if x.scene_name not in val_names]
    val = [x for x in samples if x.scene_name in val_names]
    if not train:
        logger.warning("only %d scene(s): the train split reuses the val scenes", config.scenes)
        train = val
    # The worker count changes nothing in the output, so it stays out of the (byte-identical) info files.
    meta = {"source": SOURCE, "config": recorded_config(config)}
    save_infos(train, root / "infos_train.pkl", meta)
    save_infos(val, root / "infos_val.pkl", meta)
    # Last: the marker says every file above is in place (flashocc.data.synth.marker).
    files = len(jobs) * FILES_PER_FRAME + sweep_file_count(config) + len(INFO_FILES)
    record = marker_record(config, files, len(train), len(val))
    with atomic_write(root / MARKER_NAME, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    logger.info("wrote %d train and %d val frames to %s", len(train), len(val), root)
    return root


def _remove_previous_set(root: Path) -> None:
    """Delete an earlier synthetic set in ``root``, marker first; refuse a folder holding anything else.

    Leftover frames of a larger earlier set, or old info files beside half-rewritten frames, would
    otherwise be read as part of the new set.
    """
    old = generator_files(root)  # raises before anything is deleted
    if not old:
        return
    logger.info("removing the previous synthetic set in %s (%d files)", root, len(old))
    old.sort(key=lambda p: (p.name != MARKER_NAME, p.name not in INFO_FILES))
    for path in old:
        path.unlink(missing_ok=True)
    folders = {folder for path in old for folder in path.parents if root in folder.parents}
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        try:
            folder.rmdir()
        except OSError:  # not empty
            pass


# ---- per-frame writing -------------------------------------------------------------------------
_WORLDS: dict[tuple[SynthConfig, int], World] = {}


def _scene_name(config: SynthConfig, scene_index: int) -> str:
    return f"synth-{config.seed:04d}-{scene_index:04d}"


def _keyframe_us(config: SynthConfig, frame_index: int) -> int:
    return round(frame_index * config.frame_interval_s * 1e6)


def _lidar_file(folder: str, scene: str, timestamp: int) -> str:
    return f"{folder}/LIDAR_TOP/{scene}__LIDAR_TOP__{timestamp}.pcd.bin"


def _token(*parts: object) -> str:
    return hashlib.md5("/".join(str(p) for p in ("flashocc-synth", *parts)).encode()).hexdigest()


def _write_frame(root: Path, config: SynthConfig, scene_index: int, frame_index: int) -> SampleInfo:
    key = (config, scene_index)
    if key not in _WORLDS:
        _WORLDS.clear()  # frames arrive scene by scene: keep one world per process
        _WORLDS[key] = scene_world(config, scene_index)
    world = _WORLDS[key]
    rig = nuscenes_rig(config.image_size)
    time_s = frame_index * config.frame_interval_s
    frame = simulate_frame(world, rig, time_s, OCC3D_NUSCENES, config.lidar_azimuth_steps, config.lidar_max_range)
    scene = _scene_name(config, scene_index)
    token = _token(config.seed, scene_index, frame_index)
    scene_start = _BASE_TIMESTAMP_US + scene_index * 10**9
    timestamp = scene_start + _keyframe_us(config, frame_index)
    cams = {}
    for cam in rig.cameras:
        ts = timestamp + cam.time_offset_us
        rel = f"samples/{cam.name}/{scene}__{cam.name}__{ts}.jpg"
        buf = io.BytesIO()
        Image.fromarray(frame.images[cam.name]).save(buf, "JPEG", quality=config.jpeg_quality)
        _write_atomic(root / rel, buf.getvalue())
        cams[cam.name] = CameraInfo(rel, cam.intrinsics.copy(), cam.cam2ego.copy(), frame.cam_ego2global[cam.name], ts)
    cam_sweeps = []
    for t in camera_sweep_times(config, frame_index):
        images, poses = render_cameras(world, rig, t)
        entry = {}
        for cam in rig.cameras:
            ts = scene_start + round(t * 1e6) + cam.time_offset_us
            rel = f"sweeps/{cam.name}/{scene}__{cam.name}__{ts}.jpg"
            buf = io.BytesIO()
            Image.fromarray(images[cam.name]).save(buf, "JPEG", quality=config.jpeg_quality)
            _write_atomic(root / rel, buf.getvalue())
            entry[cam.name] = CameraInfo(rel, cam.intrinsics.copy(), cam.cam2ego.copy(), poses[cam.name], ts)
        cam_sweeps.append(entry)
    lidar_rel = _lidar_file("samples", scene, timestamp)
    _write_atomic(root / lidar_rel, frame.points.astype(np.float32).tobytes())
    refs, own = frame_sweeps(config, frame_index)
    for t in own:
        points = simulate_sweep(world, rig, t * 1e-6, config.lidar_azimuth_steps, config.lidar_max_range)
        _write_atomic(root / _lidar_file("sweeps", scene, scene_start + t), points.astype(np.float32).tobytes())
    global2lidar = np.linalg.inv(frame.ego2global @ rig.lidar2ego)
    sweeps = []
    for t, k in refs:
        # A keyframe in the chain keeps its own pose (its time in seconds, as it was rendered).
        pose = world.ego_pose(t * 1e-6 if k is None else k * config.frame_interval_s)
        sweeps.append(SweepInfo(_lidar_file("sweeps" if k is None else "samples", scene, scene_start + t),
                                global2lidar @ pose @ rig.lidar2ego, scene_start + t))
    occ_rel = f"gts/{scene}/{token}"
    _write_atomic(root / occ_rel / "labels.npz", _npz_bytes(
        semantics=frame.semantics, mask_lidar=frame.mask_lidar, mask_camera=frame.mask_camera,
        instances=frame.instances))
    prev = _token(config.seed, scene_index, frame_index - 1) if frame_index > 0 else ""
    return SampleInfo(token=token, scene_name=scene, scene_token=_token(config.seed, scene_index), timestamp=timestamp,
                      lidar_path=lidar_rel, lidar2ego=rig.lidar2ego.copy(), ego2global=frame.ego2global, cams=cams,
                      occ_path=occ_rel, prev_token=prev, sweeps=sweeps, cam_sweeps=cam_sweeps)


def _as_from_worker(sample: SampleInfo) -> SampleInfo:
    """Round-trip through pickle, as results from a worker process are.

    Pickle memoises shared objects (the camera-name keys, numpy dtypes), and unpickled samples share
    fewer of them; giving both paths the same history keeps the info files byte-identical for any
    worker count.
    """
    return pickle.loads(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    """np.savez_compressed with fixed zip timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, npy.getvalue())
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)

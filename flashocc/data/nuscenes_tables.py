"""Build our info files straight from the nuScenes JSON tables (no mmdet3d, no nuscenes-devkit).

Reads ``<root>/<version>/{scene,sample,sample_data,calibrated_sensor,sensor,ego_pose}.json`` and writes
``infos_train.pkl`` / ``infos_val.pkl`` (``flashocc.data.infos.save_infos``) with the official scene split
(``nuscenes_splits``). Per sample: the LIDAR_TOP keyframe's calibration and ego pose, and for every camera
its own calibration, intrinsics and ego pose at its own timestamp, as FlashOCC@4084861
tools/create_data_bevdet.py stores them (docs/official-behaviour.md#info-files), plus up to ``max_sweeps``
earlier LIDAR_TOP sweeps as mmdet3d's ``create_nuscenes_infos(max_sweeps=10)`` records them for EFFOcc
(docs/official-behaviour.md#lidar-points-and-sweeps), and the ``camera_sweeps`` earlier images of every
camera as SparseOcc@af4d9df gen_sweep_info.py records them (``SampleInfo.cam_sweeps``). Scenes are written
in name order, samples in sequence order; ``prev_token`` comes from the sample table.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashocc.data.infos import CameraInfo, SampleInfo, SweepInfo, check_quaternion, save_infos, validate_sample
from flashocc.data.nuscenes_splits import scene_split
from flashocc.data.occ3d import labels_file
from flashocc.geometry import NUSCENES_CAMERAS, make_transform

log = logging.getLogger(__name__)

LIDAR_CHANNEL = "LIDAR_TOP"
TABLES: tuple[str, ...] = ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")
MAX_SWEEPS = 10  # EFFOcc's bevdetv3 infos (mmdet3d create_data.py nuscenes_data_prep, max_sweeps=10)
CAMERA_SWEEPS = 5  # SparseOcc@af4d9df gen_sweep_info.py: 5 camera sweeps per keyframe (12 Hz between 2 Hz)


@dataclass
class NuScenesInfosResult:
    """What ``build_nuscenes_infos`` wrote: file per split, sample counts, samples without Occ3D labels."""

    files: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    missing_labels: int = 0


def load_tables(root: str | os.PathLike, version: str, names: Sequence[str] = TABLES) -> dict[str, dict[str, dict]]:
    """Each table in ``names`` as {token: record}, in file order; errors name the missing or unreadable file."""
    folder = Path(root) / version
    tables = {}
    for name in names:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"nuScenes table not found: {path}; expected the {version} JSON tables "
                                    f"(from v1.0-trainval_meta.tgz or v1.0-mini.tgz) in {folder}; "
                                    f"for the mini set pass --version v1.0-mini")
        try:
            records = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON table ({exc})") from exc
        if not isinstance(records, list) or not all(isinstance(r, dict) and "token" in r for r in records):
            raise ValueError(f"{path}: expected a JSON list of records with a 'token' field")
        tables[name] = {r["token"]: r for r in records}
    return tables


def samples_from_tables(tables: dict[str, dict[str, dict]], root: Path, version: str,
                        occ_root: Path | None = None, cameras: tuple[str, ...] = NUSCENES_CAMERAS,
                        max_sweeps: int = MAX_SWEEPS, camera_sweeps: int = CAMERA_SWEEPS
                        ) -> dict[str, list[SampleInfo]]:
    """{"train": [...], "val": [...]} following the official split of ``version``."""
    sensors = tables["sensor"]
    channel_of = {tok: sensors[cs["sensor_token"]]["channel"] for tok, cs in tables["calibrated_sensor"].items()}
    wanted = set(cameras) | {LIDAR_CHANNEL}
    keyframes: dict[tuple[str, str], dict] = {}
    for sd in tables["sample_data"].values():
        channel = channel_of.get(sd["calibrated_sensor_token"])
        if sd.get("is_key_frame") and channel in wanted:
            keyframes[(sd["sample_token"], channel)] = sd
    split_of = {name: split for split, names in scene_split(version).items() for name in names}
    out: dict[str, list[SampleInfo]] = {split: [] for split in ("train", "val")}
    for scene in sorted(tables["scene"].values(), key=lambda s: s["name"]):
        split = split_of.get(scene["name"])
        if split is None:
            log.info("scene %s is in neither split of %s; skipped", scene["name"], version)
            continue
        token, seen = scene["first_sample_token"], set()
        while token:
            if token in seen:
                raise ValueError(f"{version}/sample.json: the 'next' chain of {scene['name']} loops at {token}")
            seen.add(token)
            sample = _get(tables, "sample", token, version)
            out[split].append(_sample_info(tables, keyframes, sample, scene, root, occ_root, cameras, version,
                                           max_sweeps, camera_sweeps))
            token = sample["next"]
    return out


def _sample_info(tables, keyframes, sample: dict, scene: dict, root: Path, occ_root: Path | None,
                 cameras: tuple[str, ...], version: str, max_sweeps: int = MAX_SWEEPS,
                 camera_sweeps: int = CAMERA_SWEEPS) -> SampleInfo:
    token = sample["token"]

    def keyframe(channel: str) -> tuple[dict, dict, dict]:
        sd = keyframes.get((token, channel))
        if sd is None:
            raise ValueError(f"sample {token}: no {channel} keyframe in {root / version / 'sample_data.json'}")
        cs = _get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], version)
        pose = _get(tables, "ego_pose", sd["ego_pose_token"], version)
        return sd, cs, pose

    def transform(record: dict, table: str):
        try:
            return make_transform(check_quaternion(record["rotation"]), record["translation"])
        except ValueError as exc:
            raise ValueError(f"sample {token}: {root / version / (table + '.json')} record {record['token']}: "
                             f"field 'rotation': {exc}") from exc

    lidar_sd, lidar_cs, lidar_pose = keyframe(LIDAR_CHANNEL)
    lidar2global = transform(lidar_pose, "ego_pose") @ transform(lidar_cs, "calibrated_sensor")
    global2lidar = np.linalg.inv(lidar2global)
    sweeps, sd, seen = [], lidar_sd, {lidar_sd["token"]}
    # mmdet3d nuscenes_converter.py, _fill_trainval_infos: follow 'prev' from the keyframe; the chain also
    # passes through the previous keyframes (so 10 sweeps at 20 Hz end at the keyframe 0.5 s earlier).
    while len(sweeps) < max_sweeps and sd.get("prev"):
        if sd["prev"] in seen:
            raise ValueError(f"sample {token}: {version}/sample_data.json: the 'prev' chain of {LIDAR_CHANNEL} "
                             f"loops at {sd['prev']}")
        sd = _get(tables, "sample_data", sd["prev"], version)
        seen.add(sd["token"])
        cs = _get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], version)
        pose = _get(tables, "ego_pose", sd["ego_pose_token"], version)
        # obtain_sensor2top: sweep LiDAR -> its ego -> global -> keyframe ego -> keyframe LiDAR.
        sweep2lidar = global2lidar @ transform(pose, "ego_pose") @ transform(cs, "calibrated_sensor")
        sweeps.append(SweepInfo(data_path=sd["filename"], sensor2lidar=sweep2lidar, timestamp=int(sd["timestamp"])))
    def camera(sd: dict, name: str) -> CameraInfo:
        cs = _get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], version)
        pose = _get(tables, "ego_pose", sd["ego_pose_token"], version)
        return CameraInfo(image_path=sd["filename"], intrinsics=_intrinsics(cs, token, name),
                          sensor2ego=transform(cs, "calibrated_sensor"), ego2global=transform(pose, "ego_pose"),
                          timestamp=int(sd["timestamp"]))

    cam_keyframes = {name: keyframe(name)[0] for name in cameras}
    cams = {name: camera(sd, name) for name, sd in cam_keyframes.items()}
    cam_sweeps = _camera_sweeps(tables, cam_keyframes, camera, camera_sweeps, version) if sample.get("prev") else []
    info = SampleInfo(
        token=token, scene_name=scene["name"], scene_token=scene["token"], timestamp=int(sample["timestamp"]),
        lidar_path=lidar_sd["filename"], lidar2ego=transform(lidar_cs, "calibrated_sensor"),
        ego2global=transform(lidar_pose, "ego_pose"), cams=cams,
        occ_path=_occ_path(root, occ_root, scene["name"], token), prev_token=sample.get("prev", "") or "",
        sweeps=sweeps, cam_sweeps=cam_sweeps,
    )
    validate_sample(info, source=str(root / version))
    return info


def _camera_sweeps(tables, cam_keyframes: dict[str, dict], camera, count: int, version: str
                   ) -> list[dict[str, CameraInfo]]:
    """``count`` steps back along every camera's ``prev`` chain, newest first (gen_sweep_info.py,
    add_sweep_info). As upstream, the steps do not look at ``is_key_frame``: where a camera took only 4
    images in the interval, the 5th step is the previous keyframe's image. Where a chain ends, the rest
    repeat the last complete entry (upstream; it fails if the first step already has none: we record
    none, and the frame choice then models the sweeps from the keyframes)."""
    current = dict(cam_keyframes)
    out: list[dict[str, CameraInfo]] = []
    for _ in range(count):
        entry: dict[str, CameraInfo] | None = {}
        for name in cam_keyframes:
            if not current[name].get("prev"):
                entry = None
                break
            current[name] = _get(tables, "sample_data", current[name]["prev"], version)
            entry[name] = camera(current[name], name)
        if entry is None:
            if not out:
                return []
            entry = out[-1]
        out.append(entry)
    return out


def _intrinsics(cs: dict, token: str, camera: str) -> np.ndarray:
    k = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"sample {token}: calibrated_sensor.json record {cs['token']} ({camera}): field "
                         f"'camera_intrinsic' must be 3x3, found shape {k.shape}")
    return k


def _occ_path(root: Path, occ_root: Path | None, scene_name: str, token: str) -> str:
    """``gts/<scene>/<token>`` relative to the root when the Occ3D folder lies inside it, else absolute."""
    if occ_root is None:
        return f"gts/{scene_name}/{token}"
    folder = occ_root.resolve() / scene_name / token
    try:
        return folder.relative_to(root.resolve()).as_posix()
    except ValueError:
        return folder.as_posix()


def _get(tables: dict, table: str, token: str, version: str) -> dict:
    try:
        return tables[table][token]
    except KeyError:
        raise ValueError(f"{version}/{table}.json has no record with token {token}") from None


def build_nuscenes_infos(root: str | os.PathLike, out: str | os.PathLike, version: str = "v1.0-trainval",
                         occ: str | os.PathLike | None = None, max_sweeps: int = MAX_SWEEPS,
                         camera_sweeps: int = CAMERA_SWEEPS) -> NuScenesInfosResult:
    """Write ``<out>/infos_train.pkl`` and ``<out>/infos_val.pkl`` from the nuScenes tables under ``root``,
    with up to ``max_sweeps`` earlier LiDAR sweeps per sample (0: none, as FlashOcc's own infos) and
    ``camera_sweeps`` earlier images per camera (SparseOcc's past frames; 0: none).

    ``occ`` is the Occ3D ``gts`` folder (default ``<root>/gts``); samples without ``labels.npz`` there are
    counted and logged, not dropped (a test split has none).
    """
    root = Path(root)
    occ_root = Path(occ) if occ is not None else None
    if occ_root is not None and not occ_root.is_dir():
        raise FileNotFoundError(f"Occ3D folder not found: {occ_root}; expected the 'gts' folder of Occ3D-nuScenes")
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 0:
        raise ValueError(f"max_sweeps: expected an integer >= 0, found {max_sweeps!r}")
    if isinstance(camera_sweeps, bool) or not isinstance(camera_sweeps, int) or camera_sweeps < 0:
        raise ValueError(f"camera_sweeps: expected an integer >= 0, found {camera_sweeps!r}")
    splits = samples_from_tables(load_tables(root, version), root, version, occ_root, max_sweeps=max_sweeps,
                                 camera_sweeps=camera_sweeps)
    result = NuScenesInfosResult()
    for split, samples in splits.items():
        result.missing_labels += sum(not labels_file(root / s.occ_path).is_file() for s in samples)
        meta = {"version": version, "split": split, "root": str(root.resolve()), "source": "nuscenes-tables"}
        result.files[split] = save_infos(samples, Path(out) / f"infos_{split}.pkl", metadata=meta)
        result.counts[split] = len(samples)
    if result.missing_labels:
        log.info("%d samples have no labels.npz under %s", result.missing_labels, occ_root or root / "gts")
    return result

"""Sample info records: our own format, plus readers for BEVDet and mmdet3d info pickles.

One ``SampleInfo`` per keyframe. Paths are relative to the data root. Transforms are float64
4x4 matrices: ``sensor2ego`` (camera -> that camera's ego), ``ego2global`` (that camera's own ego
pose at its timestamp). Our own files are pickles of plain containers and numpy arrays, read with a
restricted unpickler like every other info file.

``load_infos`` recognises three layouts and always returns validated ``list[SampleInfo]``:
* ours: ``{"format": "flashocc-infos", "version", "metadata", "samples"}`` (``save_infos``);
* BEVDet / FlashOcc ``bevdetv2-nuscenes_infos_*.pkl``: ``{"infos": [...], "metadata"}`` with
  quaternion (w, x, y, z) poses, per-camera ego poses, ``occ_path`` and ``scene_name``
  (FlashOCC@4084861 tools/create_data_bevdet.py; docs/official-behaviour.md#info-files);
* mmdet3d v1.x: ``{"metainfo", "data_list"}`` with 4x4 matrices (the fixture's format).
"""
from __future__ import annotations

import logging
import math
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.data.safe_pickle import RefusedPickle, restricted_loads
from flashocc.errors import DataError, MissingFileError, UnsafeFileError
from flashocc.geometry import NUSCENES_CAMERAS, make_transform

log = logging.getLogger(__name__)

FORMAT_NAME = "flashocc-infos"
FORMAT_VERSION = 1


@dataclass
class CameraInfo:
    image_path: str                 # relative to the data root
    intrinsics: np.ndarray          # (3, 3)
    sensor2ego: np.ndarray          # (4, 4) camera -> ego at the camera's timestamp
    ego2global: np.ndarray          # (4, 4) the camera's own ego pose
    timestamp: int = 0              # microseconds


@dataclass
class SweepInfo:
    """An earlier LIDAR_TOP sweep of a keyframe, as mmdet3d's ``create_nuscenes_infos(max_sweeps=10)``
    records it (mmdet3d 1.0 tools/data_converter/nuscenes_converter.py, obtain_sensor2top)."""

    data_path: str                  # relative to the data root; (M, 5) float32 like the keyframe file
    sensor2lidar: np.ndarray        # (4, 4) sweep LiDAR -> keyframe LiDAR, ego motion included
    timestamp: int                  # microseconds


@dataclass
class SampleInfo:
    token: str
    scene_name: str
    scene_token: str
    timestamp: int                  # microseconds (LiDAR keyframe)
    lidar_path: str                 # relative to the data root; (M, 5) float32 x, y, z, intensity, ring
    lidar2ego: np.ndarray           # (4, 4)
    ego2global: np.ndarray          # (4, 4) ego pose at the LiDAR timestamp
    cams: dict[str, CameraInfo] = field(default_factory=dict)  # keyed by camera name, NUSCENES_CAMERAS order
    occ_path: str | None = None     # folder holding labels.npz, relative to the data root
    prev_token: str = ""            # previous keyframe of the same scene ("" at a scene start)
    sweeps: list[SweepInfo] = field(default_factory=list)  # newest first; empty in FlashOcc's own infos
    # Camera sweeps before this keyframe, newest first, one {camera: record} per sweep (5 in SparseOcc@af4d9df
    # gen_sweep_info.py; each record's ego2global is the ego pose at that sweep's timestamp). Empty at a scene
    # start and in files written before camera sweeps (flashocc.data.sparseocc_frames then models them).
    cam_sweeps: list[dict[str, CameraInfo]] = field(default_factory=list)


def sample_to_dict(sample: SampleInfo) -> dict:
    d = asdict(sample)
    if not d["cam_sweeps"]:
        del d["cam_sweeps"]  # files without camera sweeps stay byte-identical to those written before the field
    return d


def sample_from_dict(d: dict) -> SampleInfo:
    cams = {name: CameraInfo(**cam) for name, cam in d["cams"].items()}
    sweeps = [SweepInfo(**sweep) for sweep in d.get("sweeps", [])]  # files written before sweeps have none
    cam_sweeps = [{name: CameraInfo(**cam) for name, cam in entry.items()} for entry in d.get("cam_sweeps", [])]
    return SampleInfo(**{**d, "cams": cams, "sweeps": sweeps, "cam_sweeps": cam_sweeps})


def save_infos(samples: list[SampleInfo], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write our info file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "metadata": dict(metadata or {}),
               "samples": [sample_to_dict(s) for s in samples]}
    with atomic_write(path) as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def safe_load_pickle(path: str | os.PathLike):
    """Unpickle an info file allowing only numpy arrays, dtypes, scalars and plain containers.

    Raises ``UnsafeFileError`` (naming the file and the refused global) for a pickle that asks for
    anything else, before any of it runs; ``DataError`` naming the file for every other failure.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"info file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the info file ({type(exc).__name__}: {exc})") from exc
    try:
        return restricted_loads(data)
    except RefusedPickle as exc:
        raise UnsafeFileError(f"{path}: not a readable info pickle: {exc} (nothing in it was run)") from exc
    except Exception as exc:  # a corrupt stream fails in many ways (EOFError, UnpicklingError, ValueError, ...)
        reason = _clip(exc) or ("the file ends before the pickle does" if isinstance(exc, EOFError) else "no details")
        raise DataError(f"{path}: not a readable info pickle ({type(exc).__name__}: {reason})") from exc


def load_infos(path: str | os.PathLike) -> list[SampleInfo]:
    """Read an info file in any supported layout (ours, BEVDet, mmdet3d v1.x) and validate every sample.

    Every error is a ``DataError`` (``UnsafeFileError`` for a pickle that asks to run code) naming the
    file and, for a bad record, the sample token and the field.
    """
    path = Path(path)
    payload = safe_load_pickle(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT_NAME:
        if payload.get("version") != FORMAT_VERSION:
            raise DataError(f"{path}: {FORMAT_NAME} version {payload.get('version')!r} is not supported "
                            f"(expected {FORMAT_VERSION})")
        reader, records = _read_ours, payload.get("samples")
    elif isinstance(payload, dict) and "data_list" in payload:
        reader, records = _read_mmdet3d, payload["data_list"]
    elif isinstance(payload, dict) and "infos" in payload:
        reader, records = _read_bevdet, payload["infos"]
    else:
        found = (f"dict with keys {sorted(map(str, payload))[:8]}" if isinstance(payload, dict)
                 else type(payload).__name__)
        raise DataError(
            f"{path}: not an info file: expected a {FORMAT_NAME} dict, a BEVDet pkl ({{'infos': [...]}}) or an "
            f"mmdet3d v1.x pkl ({{'metainfo', 'data_list'}}); found a {found}")
    if not isinstance(records, list):
        raise DataError(f"{path}: the sample list must be a list, found {type(records).__name__}")
    samples = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {i} must be a dict, found {type(record).__name__}")
        token = record.get("token", f"<record {i}>")
        try:
            sample = reader(record)
        except Exception as exc:  # a foreign record with a wrong type fails anywhere (KeyError, TypeError, ...)
            raise DataError(f"{path}: sample {token!s:.64}: cannot read the record ({type(exc).__name__}: "
                            f"{_clip(exc)})") from exc
        validate_sample(sample, source=str(path))
        samples.append(sample)
    link_previous_samples(samples)
    log.info("read %d samples from %s", len(samples), path)
    return samples


def _clip(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


_STRING_FIELDS = ("token", "scene_name", "scene_token", "lidar_path", "prev_token")


def validate_sample(sample: SampleInfo, source: str = "<memory>") -> None:
    """Check field types, shapes, finiteness, that every pose is rigid and every intrinsics matrix a camera
    matrix; raises ``DataError`` naming the file, the sample token and the field."""
    if not isinstance(sample.token, str) or not sample.token:
        raise DataError(f"{source}: a sample has an empty or non-text token ({sample.token!r:.64})")
    where = f"{source}: sample {sample.token}"
    for name in _STRING_FIELDS:
        if not isinstance(getattr(sample, name), str):
            raise DataError(f"{where}: field '{name}' must be text, found {type(getattr(sample, name)).__name__}")
    if sample.occ_path is not None and not isinstance(sample.occ_path, str):
        raise DataError(f"{where}: field 'occ_path' must be text or None, found {type(sample.occ_path).__name__}")
    _check_timestamp(sample.timestamp, f"{where}: field 'timestamp'")
    _check_pose(sample.lidar2ego, f"{where}: field 'lidar2ego'")
    _check_pose(sample.ego2global, f"{where}: field 'ego2global'")
    if not isinstance(sample.cams, dict) or not sample.cams:
        raise DataError(f"{where}: field 'cams' is empty; expected the six camera records")
    _check_cameras(sample.cams, where, "cams")
    if not isinstance(sample.cam_sweeps, list):
        raise DataError(f"{where}: field 'cam_sweeps' must be a list of {{camera: record}} dicts, found "
                        f"{type(sample.cam_sweeps).__name__}")
    for i, entry in enumerate(sample.cam_sweeps):
        if not isinstance(entry, dict) or not entry:
            raise DataError(f"{where}: field 'cam_sweeps[{i}]' must be a non-empty {{camera: record}} dict, found "
                            f"{type(entry).__name__}")
        _check_cameras(entry, where, f"cam_sweeps[{i}]")
        for name, cam in entry.items():
            if cam.timestamp > sample.timestamp:
                raise DataError(f"{where}: field 'cam_sweeps[{i}].{name}.timestamp' is {cam.timestamp}, after the "
                                f"keyframe's {sample.timestamp}; expected earlier camera sweeps only")
    if not isinstance(sample.sweeps, list):
        raise DataError(f"{where}: field 'sweeps' must be a list of sweep records, found "
                        f"{type(sample.sweeps).__name__}")
    for i, sweep in enumerate(sample.sweeps):
        if not isinstance(sweep, SweepInfo):
            raise DataError(f"{where}: field 'sweeps[{i}]' must be a sweep record, found {type(sweep).__name__}")
        if not isinstance(sweep.data_path, str) or not sweep.data_path:
            raise DataError(f"{where}: field 'sweeps[{i}].data_path' must be a non-empty path, found "
                            f"{sweep.data_path!r:.64}")
        _check_timestamp(sweep.timestamp, f"{where}: field 'sweeps[{i}].timestamp'")
        if sweep.timestamp > sample.timestamp:
            # Δt = keyframe - sweep time becomes a point feature; a later "sweep" is a mixed-up record.
            raise DataError(f"{where}: field 'sweeps[{i}].timestamp' is {sweep.timestamp}, after the keyframe's "
                            f"{sample.timestamp}; expected earlier sweeps only")
        _check_pose(sweep.sensor2lidar, f"{where}: field 'sweeps[{i}].sensor2lidar'")


def _check_cameras(cams: dict, where: str, field_name: str) -> None:
    for name, cam in cams.items():
        if not isinstance(name, str) or not isinstance(cam, CameraInfo):
            raise DataError(f"{where}: field '{field_name}' must map camera names to camera records, found "
                            f"{type(name).__name__} -> {type(cam).__name__}")
        if not isinstance(cam.image_path, str) or not cam.image_path:
            raise DataError(f"{where}: field '{field_name}.{name}.image_path' must be a non-empty path, found "
                            f"{cam.image_path!r:.64}")
        _check_timestamp(cam.timestamp, f"{where}: field '{field_name}.{name}.timestamp'")
        _check_pose(cam.sensor2ego, f"{where}: field '{field_name}.{name}.sensor2ego'")
        _check_pose(cam.ego2global, f"{where}: field '{field_name}.{name}.ego2global'")
        _check_intrinsics(cam.intrinsics, f"{where}: field '{field_name}.{name}.intrinsics'")


def _as_matrix(value, shape: tuple[int, ...], where: str, what: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} must be a finite {what}, found {type(value).__name__} ({exc})") from exc
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise DataError(f"{where} must be a finite {what}, found shape {m.shape}"
                        + ("" if m.shape != shape else f": {m.tolist()}"))
    return m


def _check_timestamp(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{where} must be an integer (microseconds), found {type(value).__name__}")


def _check_intrinsics(matrix, where: str, tol: float = 1e-6) -> None:
    """A pinhole camera matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0.

    A last row other than [0, 0, 1] (e.g. K[2, 2] = 0) would divide every projected depth by zero or by
    a wrong scale, and a non-positive focal length mirrors the image.
    """
    k = _as_matrix(matrix, (3, 3), where, "3x3 camera matrix")
    if np.abs(k[2] - np.array([0.0, 0.0, 1.0])).max() > tol:
        raise DataError(f"{where}: the last row must be [0, 0, 1], found {k[2].tolist()}; expected a camera matrix "
                        f"[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise DataError(f"{where}: expected positive focal lengths fx = K[0, 0] and fy = K[1, 1], found {k.tolist()}")


def _check_pose(matrix: np.ndarray, where: str, tol: float = 1e-3) -> None:
    m = _as_matrix(matrix, (4, 4), where, "4x4 transform")
    rot = m[:3, :3]
    err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    det = float(np.linalg.det(rot))
    if err > tol or abs(det - 1.0) > tol:
        raise DataError(f"{where}: the 3x3 part is not a rotation (max |R^T R - I| = {err:.3g}, det = {det:.4g}); "
                        f"expected an orthonormal matrix with det +1")
    if np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tol:
        raise DataError(f"{where}: the last row must be [0, 0, 0, 1], found {m[3].tolist()}")


def link_previous_samples(samples: list[SampleInfo]) -> None:
    """Fill empty ``prev_token`` from timestamp order within each scene (BEVDet and mmdet3d files lack it)."""
    last_in_scene: dict[str, SampleInfo] = {}
    for sample in sorted(samples, key=lambda s: s.timestamp):
        if not sample.scene_token:
            continue  # unknown scene: no temporal neighbours are claimed
        prev = last_in_scene.get(sample.scene_token)
        if not sample.prev_token and prev is not None:
            sample.prev_token = prev.token
        last_in_scene[sample.scene_token] = sample


def data_relative_path(path: str, anchors: tuple[str, ...] = ("samples", "sweeps")) -> str:
    """Turn a path from a foreign info file into one relative to the data root.

    BEVDet infos hold ``./data/nuscenes/samples/CAM_FRONT/x.jpg`` (relative to the training CWD) or an
    absolute path on the machine that built them. We keep everything from the last anchor folder
    (``samples``/``sweeps`` for sensor files, ``gts`` for Occ3D folders) so they resolve under any root;
    a path without an anchor is kept as is (minus a leading ``./``).
    """
    posix = PurePosixPath(str(path).replace("\\", "/"))  # also drops a leading "./"
    hits = [i for i, part in enumerate(posix.parts[:-1]) if part in anchors]
    return "/".join(posix.parts[hits[-1]:]) if hits else posix.as_posix()


def _matrix(value, shape: tuple[int, ...], field_name: str) -> np.ndarray:
    if np.iscomplexobj(value):  # the cast below would drop the imaginary part with only a warning
        raise ValueError(f"field '{field_name}' must hold real numbers, found a complex array")
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"field '{field_name}' must be a {shape} array of numbers, found {type(value).__name__} "
                         f"({exc})") from exc
    if out.shape != shape:
        raise ValueError(f"field '{field_name}' must have shape {shape}, found {out.shape}")
    return out


def _read_ours(d: dict) -> SampleInfo:
    sample = sample_from_dict(d)
    sample.lidar2ego = _matrix(sample.lidar2ego, (4, 4), "lidar2ego")
    sample.ego2global = _matrix(sample.ego2global, (4, 4), "ego2global")
    for name, cam in sample.cams.items():
        cam.intrinsics = _matrix(cam.intrinsics, (3, 3), f"cams.{name}.intrinsics")
        cam.sensor2ego = _matrix(cam.sensor2ego, (4, 4), f"cams.{name}.sensor2ego")
        cam.ego2global = _matrix(cam.ego2global, (4, 4), f"cams.{name}.ego2global")
    for i, sweep in enumerate(sample.sweeps):
        sweep.sensor2lidar = _matrix(sweep.sensor2lidar, (4, 4), f"sweeps[{i}].sensor2lidar")
    for i, entry in enumerate(sample.cam_sweeps):
        for name, cam in entry.items():
            cam.intrinsics = _matrix(cam.intrinsics, (3, 3), f"cam_sweeps[{i}].{name}.intrinsics")
            cam.sensor2ego = _matrix(cam.sensor2ego, (4, 4), f"cam_sweeps[{i}].{name}.sensor2ego")
            cam.ego2global = _matrix(cam.ego2global, (4, 4), f"cam_sweeps[{i}].{name}.ego2global")
    return sample


def _read_bevdet(d: dict) -> SampleInfo:
    """One ``bevdetv2-nuscenes_infos_*.pkl`` record (tools/create_data_bevdet.py; quaternions are w, x, y, z)."""
    cams = {}
    for name, cam in d["cams"].items():
        cams[name] = CameraInfo(
            image_path=data_relative_path(cam["data_path"]),
            intrinsics=_matrix(cam["cam_intrinsic"], (3, 3), f"cams.{name}.cam_intrinsic"),
            sensor2ego=make_transform(check_quaternion(cam["sensor2ego_rotation"]), _matrix(
                cam["sensor2ego_translation"], (3,), f"cams.{name}.sensor2ego_translation")),
            ego2global=make_transform(check_quaternion(cam["ego2global_rotation"]), _matrix(
                cam["ego2global_translation"], (3,), f"cams.{name}.ego2global_translation")),
            timestamp=int(cam.get("timestamp", 0)),
        )
    occ = d.get("occ_path")
    return SampleInfo(
        token=str(d["token"]), scene_name=str(d.get("scene_name", "")), scene_token=str(d.get("scene_token", "")),
        timestamp=int(d["timestamp"]), lidar_path=data_relative_path(d["lidar_path"]),
        lidar2ego=make_transform(check_quaternion(d["lidar2ego_rotation"]),
                                 _matrix(d["lidar2ego_translation"], (3,), "lidar2ego_translation")),
        ego2global=make_transform(check_quaternion(d["ego2global_rotation"]),
                                  _matrix(d["ego2global_translation"], (3,), "ego2global_translation")),
        cams=_camera_order(cams), occ_path=None if occ is None else data_relative_path(occ, ("gts",)),
        sweeps=[_bevdet_sweep(sweep, i) for i, sweep in enumerate(d.get("sweeps") or [])],
    )


def _bevdet_sweep(sweep: dict, i: int) -> SweepInfo:
    """One entry of ``sweeps`` (EFFOcc's ``bevdetv3-nuscenes_infos_*.pkl``, mmdet3d 1.0 obtain_sensor2top):
    points map to the keyframe LiDAR as p @ sensor2lidar_rotation.T + sensor2lidar_translation."""
    out = np.eye(4)
    out[:3, :3] = _matrix(sweep["sensor2lidar_rotation"], (3, 3), f"sweeps[{i}].sensor2lidar_rotation")
    out[:3, 3] = _matrix(sweep["sensor2lidar_translation"], (3,), f"sweeps[{i}].sensor2lidar_translation")
    return SweepInfo(data_path=data_relative_path(sweep["data_path"]), sensor2lidar=out,
                     timestamp=int(sweep["timestamp"]))


def _read_mmdet3d(d: dict) -> SampleInfo:
    """One mmdet3d v1.x ``data_list`` record (timestamps in seconds, 4x4 matrices).

    mmdet3d v1.x stores no per-camera ego pose, but its ``lidar2cam`` was built through both ego poses
    (lidar -> lidar-ego -> global -> camera-ego -> camera), so each camera's own ego pose is recovered as
    ego2global · lidar2ego · lidar2cam⁻¹ · cam2ego⁻¹ (on the fixture it moves 0.005-0.37 m, in proportion
    to the exposure delay, with z = 0 as nuScenes poses have). Without ``lidar2cam`` every camera gets
    the sample's (LiDAR) ego2global and the ego motion between exposures is not compensated.
    Bare file names are placed under mmdet3d's default prefixes ``samples/<CHANNEL>/``; the dataset
    also finds them flat in the root (the layout of the mmdet3d demo data).
    """
    ego2global = _matrix(d["ego2global"], (4, 4), "ego2global")
    lidar = d["lidar_points"]
    lidar2ego = _matrix(lidar["lidar2ego"], (4, 4), "lidar_points.lidar2ego")
    cams = {}
    for name, cam in d["images"].items():
        if not cam.get("img_path"):
            continue  # mmdet3d leaves cameras without a keyframe image as empty dicts
        cam2ego = _matrix(cam["cam2ego"], (4, 4), f"images.{name}.cam2ego")
        cam_ego2global = ego2global.copy()
        if cam.get("lidar2cam") is not None:
            lidar2cam = _matrix(cam["lidar2cam"], (4, 4), f"images.{name}.lidar2cam")
            cam_ego2global = ego2global @ lidar2ego @ np.linalg.inv(lidar2cam) @ np.linalg.inv(cam2ego)
        cams[name] = CameraInfo(
            image_path=_with_prefix(cam["img_path"], f"samples/{name}"),
            intrinsics=_matrix(cam["cam2img"], (3, 3), f"images.{name}.cam2img"),
            sensor2ego=cam2ego, ego2global=cam_ego2global, timestamp=_microseconds(cam.get("timestamp", 0)),
        )
    return SampleInfo(
        token=str(d["token"]), scene_name=str(d.get("scene_name", "")), scene_token=str(d.get("scene_token", "")),
        timestamp=_microseconds(d["timestamp"]), lidar_path=_with_prefix(lidar["lidar_path"], "samples/LIDAR_TOP"),
        lidar2ego=lidar2ego, ego2global=ego2global, cams=_camera_order(cams), occ_path=d.get("occ_path"),
        sweeps=[_mmdet3d_sweep(sweep, i) for i, sweep in enumerate(d.get("lidar_sweeps") or [])],
    )


def _mmdet3d_sweep(sweep: dict, i: int) -> SweepInfo:
    """One ``lidar_sweeps`` entry of mmdet3d v1.x (tools/dataset_converters/update_infos_to_v2.py).

    Its ``lidar2sensor`` is the true inverse of the 1.0 sensor2lidar, so we invert it back. mmdet3d
    v1.x's own LoadPointsFromMultiSweeps applies it as p @ R - t, which adds R^T·T instead of T
    (open-mmlab/mmdetection3d#3054, PR #3007); EFFOcc and the 1.0 loaders are not affected.
    """
    lidar2sensor = _matrix(sweep["lidar_points"]["lidar2sensor"], (4, 4), f"lidar_sweeps[{i}].lidar2sensor")
    return SweepInfo(data_path=_with_prefix(sweep["lidar_points"]["lidar_path"], "sweeps/LIDAR_TOP"),
                     sensor2lidar=np.linalg.inv(lidar2sensor), timestamp=_microseconds(sweep["timestamp"]))


def check_quaternion(value) -> np.ndarray:
    """A unit quaternion (w, x, y, z) as a float64 (4,) array; raises ValueError otherwise."""
    q = _matrix(value, np.shape(value), "quaternion").reshape(-1)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or not math.isclose(float(np.linalg.norm(q)), 1.0, abs_tol=1e-3):
        raise ValueError(f"expected a unit quaternion (w, x, y, z), found {q.tolist()}")
    return q


def _microseconds(ts) -> int:
    """mmdet3d v1.x stores seconds as float; nuScenes and our records use integer microseconds."""
    return int(ts) if isinstance(ts, (int, np.integer)) else int(round(float(ts) * 1e6))


def _with_prefix(path: str, prefix: str) -> str:
    return f"{prefix}/{path}" if "/" not in str(path) else data_relative_path(path)


def _camera_order(cams: dict[str, CameraInfo]) -> dict[str, CameraInfo]:
    """Key cameras in the model order; the info insertion order differs
    (docs/official-behaviour.md#camera-order)."""
    known = [name for name in NUSCENES_CAMERAS if name in cams]
    return {name: cams[name] for name in known + sorted(set(cams) - set(known))}

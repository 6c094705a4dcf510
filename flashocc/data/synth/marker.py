"""Which files a synthetic set consists of, and whether one is complete.

``generate_synthetic_set`` removes ``synth_complete.json`` before it writes anything and writes it
(atomically) after everything else, with its config and file count. A folder without a valid marker
is a set that was interrupted, changed afterwards, or never was one. Only files the generator names
itself are ever deleted: anything else in the folder (a real nuScenes tree, a user's file) makes
``generator_files`` refuse instead.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from flashocc.errors import RunFolderError
from flashocc.geometry import NUSCENES_CAMERAS

if TYPE_CHECKING:
    from flashocc.data.synth.generate import SynthConfig

MARKER_NAME = "synth_complete.json"
MARKER_FORMAT = "flashocc-synth-complete"
SOURCE = "flashocc-synth"               # metadata["source"] of the info files the generator writes
INFO_FILES = ("infos_train.pkl", "infos_val.pkl")
FILES_PER_FRAME = len(NUSCENES_CAMERAS) + 2   # six JPEGs, one LiDAR keyframe, one labels.npz (plus sweeps/)

_SCENE = r"synth-\d{4,}-\d{4,}"
_SENSOR_FILE = re.compile(rf"^{_SCENE}__(?P<sensor>[A-Z_]+)__\d+\.(jpg|pcd\.bin)$")
_SCENE_DIR = re.compile(rf"^{_SCENE}$")
_TOKEN_DIR = re.compile(r"^[0-9a-f]{32}$")
_TEMP = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")   # flashocc.atomic.atomic_write temp files


def config_record(config: SynthConfig) -> dict:
    """The config as the marker and the info files store it: JSON types, without the worker count
    (it changes nothing in the output) and without ``camera_sweeps`` when 0 (sets written before it
    stay valid)."""
    skip = {"workers"} | ({"camera_sweeps"} if config.camera_sweeps == 0 else set())
    return json.loads(json.dumps({k: v for k, v in asdict(config).items() if k not in skip}))


def generator_files(root: Path) -> list[Path]:
    """Every file under ``root`` that the generator writes (marker and leftover temp files included).

    Raises RunFolderError naming the first entry the generator would not have written; symlinks count
    as foreign, so nothing is ever followed out of ``root``.
    """
    if not root.exists():
        return []
    if root.is_symlink() or not root.is_dir():
        raise RunFolderError(f"{root}: expected a folder for a synthetic set, found a file or link")
    found: list[Path] = []
    for entry in sorted(root.iterdir()):
        if _is_file(entry) and _strip_temp(entry.name) in (*INFO_FILES, MARKER_NAME):
            if entry.name in INFO_FILES and not _is_synthetic_infos(entry):
                _refuse(root, entry, "an info file the synthetic generator did not write")
            found.append(entry)
        elif _is_dir(entry) and entry.name == "samples":
            found += _sensor_files(root, entry)
        elif _is_dir(entry) and entry.name == "sweeps":
            found += _sensor_files(root, entry)  # LiDAR and (opt-in) camera sweeps
        elif _is_dir(entry) and entry.name == "gts":
            found += _label_files(root, entry)
        else:
            _refuse(root, entry, "not a file the synthetic generator writes")
    return found


def synthetic_set_problem(root: Path, config: SynthConfig | None = None) -> str | None:
    """None when ``root`` holds a complete synthetic set (of ``config``, when given); else why not."""
    root = Path(root)
    marker = root / MARKER_NAME
    if not marker.is_file():
        if not root.is_dir() or not any(root.iterdir()):
            return "the folder is empty or missing"
        return f"no {MARKER_NAME}: the set is incomplete (generation was interrupted) or not a synthetic set"
    try:
        record = json.loads(marker.read_text())
        written, files = record["config"], int(record["files"])
        if record.get("format") != MARKER_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{marker} is unreadable ({type(exc).__name__}: {exc})"
    if config is not None and written != config_record(config):
        changed = sorted(k for k in {*written, *config_record(config)}
                         if written.get(k) != config_record(config).get(k))
        return (f"it was generated with other settings ({', '.join(f'{k}={written.get(k)!r}' for k in changed)}; "
                f"requested {', '.join(f'{k}={config_record(config).get(k)!r}' for k in changed)})")
    try:
        on_disk = [p for p in generator_files(root) if p.name != MARKER_NAME and not _TEMP.match(p.name)]
    except RunFolderError:
        on_disk = None  # foreign files beside a complete set do not make it incomplete
    if on_disk is not None and len(on_disk) != files:
        return f"{marker} lists {files} files but {len(on_disk)} are there (files were removed or added)"
    if any(not (root / name).is_file() for name in INFO_FILES):
        return f"an info file ({' or '.join(INFO_FILES)}) is missing"
    return None


def written_config(root: Path) -> dict | None:
    """The config recorded in ``root``'s marker, if it has a readable one."""
    try:
        return json.loads((Path(root) / MARKER_NAME).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def marker_record(config: SynthConfig, files: int, train: int, val: int) -> dict:
    return {"format": MARKER_FORMAT, "version": 1, "config": config_record(config), "files": files,
            "frames": {"train": train, "val": val}}


def _sensor_files(root: Path, samples: Path, sensors: tuple[str, ...] = (*NUSCENES_CAMERAS, "LIDAR_TOP")) -> list[Path]:
    found = []
    for sensor_dir in sorted(samples.iterdir()):
        if not _is_dir(sensor_dir) or sensor_dir.name not in sensors:
            _refuse(root, sensor_dir, f"the synthetic generator only writes {samples.name}/<{'|'.join(sensors)}>/")
        for path in sorted(sensor_dir.iterdir()):
            match = _SENSOR_FILE.match(_strip_temp(path.name))
            if not _is_file(path) or match is None or match["sensor"] != sensor_dir.name:
                _refuse(root, path, "not a synthetic image or LiDAR sweep (synth-<seed>-<scene>__<sensor>__<time>)")
            found.append(path)
    return found


def _label_files(root: Path, gts: Path) -> list[Path]:
    found = []
    for scene in sorted(gts.iterdir()):
        if not _is_dir(scene) or not _SCENE_DIR.match(scene.name):
            _refuse(root, scene, "not a synthetic scene folder (synth-<seed>-<scene>)")
        for token in sorted(scene.iterdir()):
            if not _is_dir(token) or not _TOKEN_DIR.match(token.name):
                _refuse(root, token, "not a sample-token folder")
            for path in sorted(token.iterdir()):
                if not _is_file(path) or _strip_temp(path.name) != "labels.npz":
                    _refuse(root, path, "the synthetic generator writes only labels.npz there")
                found.append(path)
    return found


def _is_synthetic_infos(path: Path) -> bool:
    from flashocc.data.infos import safe_load_pickle

    try:
        payload = safe_load_pickle(path)
    except ValueError:
        return False
    return isinstance(payload, dict) and (payload.get("metadata") or {}).get("source") == SOURCE


def _strip_temp(name: str) -> str:
    match = _TEMP.match(name)
    return match["target"] if match else name


def _is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _refuse(root: Path, entry: Path, why: str) -> None:
    raise RunFolderError(
        f"{root}: holds {entry.relative_to(root)}, {why}; refusing to write a synthetic set there, because that "
        f"would delete or overwrite files the generator did not write. Choose an empty or new folder")

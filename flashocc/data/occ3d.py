"""Occ3D-nuScenes ground truth: ``gts/<scene>/<token>/labels.npz`` (metrics_and_data.md §1.1, flashocc.md §4.5).

Three uint8 arrays indexed [x, y, z] in the LiDAR-keyframe ego frame: ``semantics`` (0..17, 17 = free),
``mask_lidar`` and ``mask_camera`` (0/1).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.grid import OCC3D_NUSCENES, OccGrid

LABEL_KEYS: tuple[str, ...] = ("semantics", "mask_lidar", "mask_camera")
LABELS_FILE = "labels.npz"


@dataclass
class OccLabels:
    semantics: np.ndarray    # (Dx, Dy, Dz) uint8, 0..num_classes-1
    mask_lidar: np.ndarray   # (Dx, Dy, Dz) uint8 0/1
    mask_camera: np.ndarray  # (Dx, Dy, Dz) uint8 0/1


def labels_file(occ_dir: str | os.PathLike) -> Path:
    """Info files store the sample's folder; the archive inside it is always ``labels.npz``."""
    occ_dir = Path(occ_dir)
    return occ_dir if occ_dir.suffix == ".npz" else occ_dir / LABELS_FILE


def load_labels(path: str | os.PathLike, token: str = "?", grid: OccGrid = OCC3D_NUSCENES) -> OccLabels:
    """Load and validate one ``labels.npz`` (or the folder holding it).

    Errors name the sample token and the file: missing file, unreadable archive, missing key, wrong
    shape or dtype, labels out of range.
    """
    path = labels_file(path)
    where = f"sample {token}: {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: Occ3D labels not found; expected gts/<scene>/<token>/labels.npz "
                                f"(pass the Occ3D 'gts' folder with --occ when building infos)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in LABEL_KEYS if key in archive.files}
            present = list(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{where}: corrupt labels archive ({type(exc).__name__}: {exc})") from exc
    missing = [key for key in LABEL_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; expected {list(LABEL_KEYS)}, found {present}")
    labels = OccLabels(**arrays)
    validate_labels(labels, where, grid)
    return labels


def validate_labels(labels: OccLabels, where: str, grid: OccGrid = OCC3D_NUSCENES) -> None:
    for key in LABEL_KEYS:
        arr = getattr(labels, key)
        if arr.shape != grid.shape or arr.dtype != np.uint8:
            raise ValueError(f"{where}: '{key}' must be uint8 {grid.shape}, found {arr.dtype} {arr.shape}")
    top = int(labels.semantics.max(initial=0))
    if top >= grid.num_classes:
        bad = np.argwhere(labels.semantics >= grid.num_classes)[0].tolist()
        raise ValueError(f"{where}: 'semantics' has label {top} (e.g. at {bad}); expected 0..{grid.num_classes - 1}")
    for key in ("mask_lidar", "mask_camera"):
        if int(getattr(labels, key).max(initial=0)) > 1:
            raise ValueError(f"{where}: '{key}' must hold 0/1, found {int(getattr(labels, key).max())}")


def save_labels(labels: OccLabels, path: str | os.PathLike, grid: OccGrid = OCC3D_NUSCENES) -> Path:
    """Write ``labels.npz`` (compressed, as Occ3D does) atomically; ``path`` may be the sample folder."""
    path = labels_file(path)
    validate_labels(labels, str(path), grid)
    with atomic_write(path) as f:
        np.savez_compressed(f, **{key: getattr(labels, key) for key in LABEL_KEYS})
    return path

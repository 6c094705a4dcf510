"""Voxel masks of active learning: one file per sample, ``<folder>/<token>.npz``.

A mask marks the voxels whose labels a sample trains on; ``flashocc.engine.active`` selects them.
EFFOcc keeps them per ``sample_idx`` in RAM or as pickles (EFFOcc@9544ca0
mmdet3d/models/detectors/active_fusionocc.py, ActiveFlashFusionOCC, ``save_active_selection_to_disk``);
here each is an npz holding one bool array (key ``selected``), read with ``allow_pickle=False`` so a
mask file never runs code, and written atomically. Masks are in the frame of the stored labels (before
the BEV flips of training); the data pipeline flips a mask with the labels it belongs to.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from flashocc.atomic import atomic_write, current_umask
from flashocc.data import transforms as T
from flashocc.errors import DataError, MissingFileError, OutputPathError

MASK_KEY = "selected"
BATCH_KEY = "active_mask"        # (B, Dx, Dy, Dz) bool in a training batch
MASKS_DIR = "active_masks"       # a run's own copy of the masks it trains with
SELECTION_FILE = "selection.json"
# Sample tokens become file names: nuScenes tokens are hex, synthetic ones words and digits.
_TOKEN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def mask_path(folder: str | os.PathLike, token: str) -> Path:
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise DataError(f"sample token {token!r} cannot name a mask file: expected letters, digits, '_', '-', '.'")
    return Path(folder) / f"{token}.npz"


def write_mask(folder: str | os.PathLike, token: str, mask: np.ndarray) -> Path:
    """Write one sample's mask (a 3-D bool array) atomically."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.ndim != 3:
        raise ValueError(f"a voxel mask is a 3-D bool array, got {mask.dtype} {mask.shape}")
    path = mask_path(folder, token)
    with atomic_write(path) as f:
        np.savez_compressed(f, **{MASK_KEY: mask})
    return path


def read_mask(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A mask file's bool array; anything else (a torn file, another array, another grid) is a DataError
    naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if MASK_KEY not in data.files:
                raise DataError(f"{path}: not a voxel mask (expected the array '{MASK_KEY}', found {data.files})")
            mask = data[MASK_KEY]
    except FileNotFoundError:
        raise MissingFileError(f"voxel mask not found: {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the voxel mask ({type(exc).__name__}: {exc})") from None
    if mask.dtype != np.bool_ or mask.ndim != 3 or (shape is not None and tuple(mask.shape) != tuple(shape)):
        want = f"bool {tuple(shape)}" if shape is not None else "a 3-D bool array"
        raise DataError(f"{path}: expected a voxel mask of {want} (the labels' grid), found {mask.dtype} {mask.shape}")
    return mask


def mask_tokens(folder: str | os.PathLike) -> frozenset[str]:
    """The tokens of the masks in ``folder`` (an existing folder; it may hold no mask yet)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"active.masks: {folder} is not a folder of voxel masks (write one with "
                               f"'flashocc active select')")
    return frozenset(p.stem for p in folder.glob("*.npz") if not p.name.startswith("."))


class ActiveMasks:
    """The masks of one folder, read lazily per sample (a folder may hold thousands)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.tokens = mask_tokens(self.folder)

    def get(self, token: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return read_mask(mask_path(self.folder, token), shape) if token in self.tokens else None

    def sample_entry(self, token: str, labelled: bool, shape: tuple[int, ...], flip_dx: bool, flip_dy: bool
                     ) -> dict[str, torch.Tensor]:
        """A training sample's ``active_mask`` (flipped like its labels) and whether it is supervised: a
        sample with a mask trains on its selected voxels; one without on all of its labels when its scene
        is labelled, on none when not."""
        mask = self.get(token, shape)
        if mask is None:
            mask = np.full(shape, labelled, dtype=bool)
        return {BATCH_KEY: torch.from_numpy(T.flip_volume(mask, flip_dx, flip_dy)),
                "labeled": torch.tensor(labelled or token in self.tokens)}


def copy_masks(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the mask files (and the selection record) of ``source`` into a new folder ``dest``: built
    beside it under a temporary name and renamed, so ``dest`` is complete or absent after a kill."""
    source, dest = Path(source), Path(dest)
    mask_tokens(source)  # a clear error when the source is missing
    if dest.exists():
        raise OutputPathError(f"{dest} already exists; the masks are copied into a new folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmpdir"))
    except OSError as exc:
        raise OutputPathError(f"cannot write {dest}: {exc.strerror or exc}") from None
    try:
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix in (".npz", ".json"):
                shutil.copyfile(path, tmp / path.name)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp alone leaves the folder private (0700)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


__all__ = ["MASK_KEY", "BATCH_KEY", "MASKS_DIR", "SELECTION_FILE", "mask_path", "write_mask", "read_mask",
           "mask_tokens", "ActiveMasks", "copy_masks"]

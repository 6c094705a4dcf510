"""``flashocc viz``: turn label files (a ``labels.npz``, a folder or a run's predictions) into pictures.

For each occupancy file ``<stem>_3d.png`` and ``<stem>_bev.png`` are written; with ground truth
``<stem>_compare.png``; with an info file ``<stem>_cameras.png``; with ``instances`` (files holding
instance ids) ``<stem>_instances.png``; with ``gif`` a ``sequence.gif``
(and ``sequence.mp4`` when imageio-ffmpeg is installed) over all files in time order.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.bev import add_legend_strip, render_bev
from flashocc.viz.cameras import CameraCalib, render_cameras
from flashocc.viz.common import legend_entries, load_labels_npz, save_image
from flashocc.viz.compare import render_comparison
from flashocc.viz.instances import load_instances_npz, render_instances
from flashocc.viz.render import render_voxels, side_by_side
from flashocc.viz.video import mp4_available, save_sequence_gif, save_sequence_mp4

logger = logging.getLogger(__name__)

_GENERIC_NAMES = ("labels", "pred", "prediction", "occ")


@dataclass
class CameraSet:
    """What the camera overlay needs for one sample: image paths and calibration to its ego frame."""

    images: list[Path]
    cams: list[CameraCalib]
    names: list[str]
    timestamp: int = 0


@dataclass
class VizOutputs:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_label_files(path: str | os.PathLike) -> list[Path]:
    """A single ``.npz`` file, or every ``.npz`` under a folder (``<scene>/<token>/labels.npz`` trees too)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no occupancy file or folder at {path}")
    files = sorted(p for p in path.rglob("*.npz") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no .npz occupancy files under {path} (expected labels.npz or pred.npz files)")
    return files


def sample_key(path: Path) -> str:
    """The sample token a file stands for: its folder for ``<token>/labels.npz``, else its stem."""
    return path.parent.name if path.stem in _GENERIC_NAMES else path.stem


def output_stem(path: Path, root: Path) -> str:
    """A flat, unique name for a file's pictures: its path below ``root`` joined with '_'."""
    if root.is_file():
        return sample_key(path)
    rel = path.relative_to(root)
    parts = list(rel.parent.parts) + ([] if path.stem in _GENERIC_NAMES else [path.stem])
    return "_".join(parts) or path.stem


def load_camera_sets(info_or_dir: str | os.PathLike, data_root: str | os.PathLike | None = None) -> dict[str, CameraSet]:
    """Per-sample camera images and calibration from an info file (ours, BEVDet or mmdet3d).

    A folder must hold exactly one ``.pkl`` info file. Image paths resolve under ``data_root``
    (default: the info file's folder), or flat in it. The camera's ``sensor2ego`` is chained to
    the sample (LiDAR) ego: sample ego -> global -> camera ego -> camera, so moving-ego offsets
    between exposures are honoured where the info file records them.
    """
    from flashocc.data.infos import load_infos

    path = Path(info_or_dir)
    if path.is_dir():
        pkls = sorted(path.glob("*.pkl"))
        if len(pkls) != 1:
            raise FileNotFoundError(f"--images {path}: expected one .pkl info file in the folder, found {len(pkls)}")
        path = pkls[0]
    root = Path(data_root) if data_root is not None else path.parent
    sets = {}
    for sample in load_infos(path):
        global2ego = np.linalg.inv(sample.ego2global)
        images, cams = [], []
        for name, cam in sample.cams.items():
            images.append(_resolve(root, cam.image_path, sample.token))
            cams.append(CameraCalib(global2ego @ cam.ego2global @ cam.sensor2ego, cam.intrinsics))
        sets[sample.token] = CameraSet(images, cams, list(sample.cams), sample.timestamp)
    return sets


def _resolve(root: Path, relative: str, token: str) -> Path:
    direct = root / relative
    if direct.is_file():
        return direct
    flat = root / Path(relative).name  # the mmdet3d demo layout keeps images flat beside the pkl
    if flat.is_file():
        return flat
    raise FileNotFoundError(f"sample {token}: camera image not found: {direct} (nor {flat})")


def _index_gt(gt: Path) -> dict[str, Path]:
    return {sample_key(p): p for p in find_label_files(gt)}


def visualize(
    path: str | os.PathLike,
    out: str | os.PathLike = "viz",
    gt: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    mask: str = "camera",
    gif: bool = False,
    grid: OccGrid = OCC3D_NUSCENES,
    data_root: str | os.PathLike | None = None,
    fps: float = 2.0,
    instances: bool = False,
) -> VizOutputs:
    """Render every occupancy file at ``path`` into ``out``; returns the files written.

    ``mask="camera"`` hides voxels outside ``mask_camera`` (from the GT file when given, else from
    the file itself; files without one are drawn whole), ``"none"`` draws everything. ``gt`` is a
    ``labels.npz`` (single input) or a folder matched by sample token. ``images`` is an info file
    (or a folder holding one) for the camera overlays, matched by token; a single sample with a
    single info record is paired directly. ``instances`` also draws each file's instance ids
    (``instances`` or ``pano_inst``) one colour per id, and makes those pictures the GIF frames.
    """
    if mask not in ("camera", "none"):
        raise ValueError(f"mask must be 'camera' or 'none', found {mask!r}")
    root = Path(path)
    files = find_label_files(root)
    out = Path(out)
    result = VizOutputs()
    gt_index = {} if gt is None else _index_gt(Path(gt))
    single_gt = next(iter(gt_index.values())) if gt is not None and Path(gt).is_file() else None
    camera_sets = {} if images is None else load_camera_sets(images, data_root)
    frames = []
    for file in files:
        key, stem = sample_key(file), output_stem(file, root)
        labels, own_mask = load_labels_npz(file, grid)
        gt_file = single_gt if single_gt is not None else gt_index.get(key)
        gt_labels, gt_mask = load_labels_npz(gt_file, grid) if gt_file is not None else (None, None)
        if gt is not None and gt_file is None:
            result.notes.append(f"{file}: no ground truth for sample {key} under {gt}")
        view_mask = None
        if mask == "camera":
            view_mask = gt_mask if gt_mask is not None else own_mask
        view = render_voxels(labels, mask=view_mask, grid=grid)
        bev = render_bev(labels, grid, mask=view_mask)
        result.files.append(save_image(view, out / f"{stem}_3d.png"))
        result.files.append(save_image(add_legend_strip(bev, legend_entries(labels, grid)), out / f"{stem}_bev.png"))
        if gt_labels is not None:
            compare = render_comparison(labels, gt_labels, mask=view_mask, grid=grid)
            result.files.append(save_image(compare, out / f"{stem}_compare.png"))
        panoptic = None
        if instances:
            ids = load_instances_npz(file, grid)
            if ids is None:
                result.notes.append(f"{file}: no 'instances' or 'pano_inst' array; no instance picture")
            else:
                panoptic = render_instances(labels, ids, mask=view_mask, grid=grid)
                result.files.append(save_image(panoptic, out / f"{stem}_instances.png"))
        cams = camera_sets.get(key)
        if cams is None and len(camera_sets) == 1 and len(files) == 1:
            cams = next(iter(camera_sets.values()))
        if cams is not None:
            overlay = render_cameras(cams.images, cams.cams, labels, mask=view_mask, grid=grid, names=cams.names)
            result.files.append(save_image(overlay, out / f"{stem}_cameras.png"))
        elif images is not None:
            result.notes.append(f"{file}: sample {key} is not in {images}; no camera overlay")
        if gif:
            # A video frame: the 3D view with its legend, and the BEV map beside it.
            frame = panoptic if panoptic is not None else side_by_side(view, bev)
            frames.append((cams.timestamp if cams is not None else 0, len(frames), frame))
    if gif:
        # Time order when the info file gives timestamps, else the (sorted) file order.
        ordered = [im for _, _, im in sorted(frames, key=lambda f: (f[0], f[1]))]
        result.files.append(save_sequence_gif(ordered, out / "sequence.gif", fps=fps))
        if mp4_available():
            result.files.append(save_sequence_mp4(ordered, out / "sequence.mp4", fps=fps))
        else:
            logger.info("MP4 skipped: pip install imageio imageio-ffmpeg to also get sequence.mp4")
    for note in result.notes:
        logger.warning(note)
    return result

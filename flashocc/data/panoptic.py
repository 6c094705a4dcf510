"""Occ3D-panoptic instance ground truth: ``occ3d_panoptic/<scene>/<token>/labels.npz``.

The official files (SparseOcc@af4d9df gen_instance_info.py, process_add_instance_info; FlashOCC@4084861
reads the same tree for RayPQ) hold the three Occ3D arrays plus ``instances``, uint8 segment ids over
the voxels, numbered per sample:

1. boxes of the 10 detection classes, in annotation order, each give a new id (from 1) to the occupied
   voxel centres inside them that have the box's class and no id yet; a box that claims no voxel gets
   no id;
2. every other class present (not free) gets one id, in class order;
3. occupied voxels still without an id take the id of the nearest centre among the boxes of their
   class that claimed voxels, enlarged by 0.8 m in length, width and height, that contain them;
   voxels in none of those keep 0, as do free voxels.

Boxes come from the nuScenes tables (``sample_annotation``, ``instance``, ``category``) in the global
frame and are moved to the sample's ego frame (the LIDAR_TOP keyframe's ego pose, as Occ3D's voxels).
The official script moves the mmdet3d info boxes from the LiDAR frame to the same ego frame; both
start from the same annotation.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashocc.data.infos import SampleInfo, check_quaternion
from flashocc.data.occ3d import LABELS_FILE, OccLabels, labels_file, load_labels, save_labels
from flashocc.errors import DataError
from flashocc.geometry import quaternion_to_rotation
from flashocc.grid import OCC3D_NUSCENES, OccGrid

log = logging.getLogger(__name__)

PANOPTIC_DIR = "occ3d_panoptic"
# The nuScenes detection classes, in devkit order (gen_instance_info.py, det_class_names).
DETECTION_CLASSES: tuple[str, ...] = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle",
                                      "motorcycle", "pedestrian", "traffic_cone", "barrier")
# nuScenes category -> detection class, as the info files name boxes (mmdet3d NuScenesDataset.NameMapping);
# other categories (animals, ambulances, debris, ...) give no box.
CATEGORY_TO_DETECTION: dict[str, str] = {
    "movable_object.barrier": "barrier", "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus", "vehicle.car": "car", "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle", "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian", "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian", "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer", "vehicle.truck": "truck",
}
BOX_MARGIN = 0.8      # metres added to w, l and h for the leftover pass ("roughly 2 voxels")
# uint8 ids 1..254. The official script would wrap past 255, and 255 already means free / ignore in
# SparseOcc's segment loader (loaders/pipelines/loading.py, LoadOccGTFromFile), so 254 is the honest limit.
MAX_SEGMENTS = 254
ANNOTATION_TABLES: tuple[str, ...] = ("sample_annotation", "instance", "category")


@dataclass
class EgoBoxes:
    """N boxes in the ego frame: ``center`` (N, 3) m, ``size`` (N, 3) extents along the box axes (length
    along x, width along y, height along z), ``rotation`` (N, 3, 3) box -> ego, ``label`` (N,) Occ3D class."""

    center: np.ndarray
    size: np.ndarray
    rotation: np.ndarray
    label: np.ndarray
    tokens: tuple[str, ...] = ()     # annotation tokens, for messages

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def empty(cls) -> EgoBoxes:
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0, np.int64))

    @classmethod
    def from_yaw(cls, center: Sequence, size: Sequence, yaw: Sequence[float], label: Sequence[int]) -> EgoBoxes:
        """Boxes turned by ``yaw`` (rad, counter-clockwise about z) from the ego axes."""
        yaw = np.asarray(yaw, np.float64).reshape(-1)
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.zeros((len(yaw), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
        return cls(np.asarray(center, np.float64).reshape(-1, 3), np.asarray(size, np.float64).reshape(-1, 3), rot,
                   np.asarray(label, np.int64).reshape(-1))

    def subset(self, keep: np.ndarray) -> EgoBoxes:
        tokens = tuple(np.asarray(self.tokens, dtype=object)[keep]) if self.tokens else ()
        return EgoBoxes(self.center[keep], self.size[keep], self.rotation[keep], self.label[keep], tokens)


def points_in_boxes(points: np.ndarray, boxes: EgoBoxes, margin: float = 0.0) -> np.ndarray:
    """(P, N) bool: point p lies in box n grown by ``margin`` metres on each full extent, faces included
    (nuscenes-devkit geometry_utils.points_in_box compares with <=)."""
    if not len(points) or not len(boxes):
        return np.zeros((len(points), len(boxes)), bool)
    half = (boxes.size + margin) / 2                                        # (N, 3)
    offset = points[:, None, :] - boxes.center[None]                        # (P, N, 3)
    local = np.einsum("pnk,nkj->pnj", offset, boxes.rotation)               # box axes: R^T (p - c)
    return np.all(np.abs(local) <= half[None], axis=-1)


def assign_instances(semantics: np.ndarray, boxes: EgoBoxes, grid: OccGrid = OCC3D_NUSCENES,
                     where: str = "sample") -> np.ndarray:
    """The uint8 ``instances`` volume of one sample from its semantics and ego-frame boxes (module docstring).

    More than ``MAX_SEGMENTS`` segments raise a ``DataError`` naming ``where`` instead of wrapping.
    """
    if semantics.shape != grid.shape:
        raise DataError(f"{where}: semantics of shape {semantics.shape}, expected {grid.shape}")
    det = [grid.class_names.index(n) for n in DETECTION_CLASSES if n in grid.class_names]
    flat = np.flatnonzero(semantics.reshape(-1) != grid.free_label)
    sem = semantics.reshape(-1)[flat].astype(np.int64)
    points = grid.voxel_centers().reshape(-1, 3)[flat]
    inst = np.zeros(len(flat), np.int64)

    # 1. The first box (annotation order) of the voxel's class that contains it claims it.
    first = np.full(len(flat), -1, np.int64)
    for c in np.unique(boxes.label):
        on_class = np.flatnonzero(sem == c)
        of_class = np.flatnonzero(boxes.label == c)
        inside = points_in_boxes(points[on_class], boxes.subset(of_class))
        hit = inside.any(axis=1)
        first[on_class[hit]] = of_class[inside[hit].argmax(axis=1)]
    claimed = np.unique(first[first >= 0])                 # sorted: ids follow the annotation order
    box_id = np.zeros(len(boxes), np.int64)
    box_id[claimed] = np.arange(1, len(claimed) + 1)
    inst[first >= 0] = box_id[first[first >= 0]]

    # 2. One id per other present class, in class order.
    next_id = len(claimed) + 1
    for c in grid.semantic_classes:
        if c in det:
            continue
        on_class = sem == c
        if on_class.any():
            inst[on_class] = next_id
            next_id += 1
    total = next_id - 1
    if total > MAX_SEGMENTS:
        raise DataError(f"{where}: {total} segments ({len(claimed)} boxes claim voxels, {total - len(claimed)} "
                        f"other classes), more than the {MAX_SEGMENTS} ids a uint8 'instances' array holds "
                        f"(255 marks free); refusing to wrap ids")

    # 3. Leftovers: the nearest centre among the enlarged claiming boxes of the voxel's class that hold it.
    # Ties keep the earlier box, as the official strict "<" update does.
    grown = boxes.subset(claimed)
    for c in np.unique(grown.label):
        left = np.flatnonzero((inst == 0) & (sem == c))
        of_class = np.flatnonzero(grown.label == c)
        if not len(left):
            continue
        inside = points_in_boxes(points[left], grown.subset(of_class), BOX_MARGIN)
        dist = np.square(points[left][:, None, :] - grown.center[of_class][None]).sum(-1)
        dist = np.where(inside, dist, np.inf)
        hit = inside.any(axis=1)
        inst[left[hit]] = of_class[dist[hit].argmin(axis=1)] + 1   # claiming box k has id k + 1
    out = np.zeros(semantics.size, np.uint8)
    out[flat] = inst
    return out.reshape(semantics.shape)


def number_objects(semantics: np.ndarray, objects: np.ndarray, grid: OccGrid = OCC3D_NUSCENES,
                   where: str = "sample") -> np.ndarray:
    """``instances`` with the official id conventions from a per-voxel object index (-1: none).

    For data whose objects are known voxel by voxel (the synthetic world): detection-class voxels take
    one id per object in object order (steps 1 and 3 of the module docstring with exact objects),
    then every other present class one id, in class order. Detection-class voxels without an object
    keep 0.
    """
    if objects.shape != semantics.shape:
        raise DataError(f"{where}: object volume of shape {objects.shape}, expected {semantics.shape}")
    det = np.isin(semantics, [grid.class_names.index(n) for n in DETECTION_CLASSES if n in grid.class_names])
    keyed = det & (objects >= 0)
    found = np.unique(objects[keyed])
    out = np.zeros(semantics.shape, np.int64)
    out[keyed] = np.searchsorted(found, objects[keyed]) + 1
    next_id = len(found) + 1
    for c in grid.semantic_classes:
        on_class = (semantics == c) & ~det
        if on_class.any():
            out[on_class] = next_id
            next_id += 1
    if next_id - 1 > MAX_SEGMENTS:
        raise DataError(f"{where}: {next_id - 1} segments, more than the {MAX_SEGMENTS} ids a uint8 "
                        f"'instances' array holds (255 marks free); refusing to wrap ids")
    return out.astype(np.uint8)


# ---- nuScenes boxes ----------------------------------------------------------------------------
def annotations_by_sample(tables: Mapping[str, Mapping[str, dict]]) -> dict[str, list[dict]]:
    """{sample token: its sample_annotation records in table order}: the order of the devkit's
    ``sample['anns']``, hence of the info files' ``gt_boxes``."""
    out: dict[str, list[dict]] = {}
    for ann in tables["sample_annotation"].values():
        out.setdefault(ann["sample_token"], []).append(ann)
    return out


def category_of(ann: dict, tables: Mapping[str, Mapping[str, dict]], source: str) -> str:
    """The category name of an annotation (through its instance, as the devkit does)."""
    if "category_name" in ann:
        return ann["category_name"]
    try:
        instance = tables["instance"][ann["instance_token"]]
        return tables["category"][instance["category_token"]]["name"]
    except KeyError as exc:
        raise DataError(f"{source}: sample_annotation {ann.get('token')} refers to a missing instance or "
                        f"category record ({exc.args[0]})") from None


def boxes_in_ego(annotations: Sequence[dict], tables: Mapping[str, Mapping[str, dict]], ego2global: np.ndarray,
                 grid: OccGrid = OCC3D_NUSCENES, source: str = "sample_annotation.json") -> EgoBoxes:
    """The detection-class boxes among ``annotations`` (global frame) in the ego frame of ``ego2global``."""
    rows = []
    for ann in annotations:
        name = CATEGORY_TO_DETECTION.get(category_of(ann, tables, source))
        if name is None or name not in grid.class_names:
            continue
        try:
            rot = quaternion_to_rotation(check_quaternion(ann["rotation"]))
            center = np.asarray(ann["translation"], np.float64).reshape(3)
            w, length, h = np.asarray(ann["size"], np.float64).reshape(3)   # nuScenes stores (w, l, h)
        except (KeyError, ValueError) as exc:
            raise DataError(f"{source}: sample_annotation {ann.get('token')}: expected 'translation' (3), "
                            f"'size' (w, l, h) and a unit quaternion 'rotation' ({exc})") from None
        rows.append((center, (length, w, h), rot, grid.class_names.index(name), ann.get("token", "")))
    if not rows:
        return EgoBoxes.empty()
    g2e = np.linalg.inv(ego2global)
    center = np.stack([r[0] for r in rows]) @ g2e[:3, :3].T + g2e[:3, 3]
    rotation = g2e[:3, :3][None] @ np.stack([r[2] for r in rows])
    return EgoBoxes(center, np.asarray([r[1] for r in rows], np.float64), rotation,
                    np.asarray([r[3] for r in rows], np.int64), tuple(r[4] for r in rows))


# ---- the command -------------------------------------------------------------------------------
@dataclass
class PanopticResult:
    """What ``build_panoptic_gt`` wrote: files, segment counts, and occupied voxels left without an id."""

    files: list[Path] = field(default_factory=list)
    boxes: int = 0                  # detection-class boxes seen
    max_segments: int = 0
    unassigned_voxels: int = 0


def source_labels(sample: SampleInfo, root: Path, occ: Path | None) -> Path:
    """The Occ3D ``labels.npz`` of a sample: ``occ/<scene>/<token>`` when given, else the info's ``occ_path``."""
    if occ is not None:
        return occ / (sample.scene_name or "") / sample.token / LABELS_FILE
    if not sample.occ_path:
        raise DataError(f"sample {sample.token}: the info record has no occ_path; pass the Occ3D gts folder (--occ)")
    return labels_file(root / sample.occ_path)


def build_panoptic_gt(root: str | os.PathLike, infos: Sequence[SampleInfo], out: str | os.PathLike,
                      version: str = "v1.0-trainval", occ: str | os.PathLike | None = None,
                      grid: OccGrid = OCC3D_NUSCENES, progress: Callable[[], None] | None = None) -> PanopticResult:
    """Write ``out/<scene>/<token>/labels.npz`` (Occ3D arrays + ``instances``) for every sample of ``infos``.

    Boxes come from ``root/<version>/{sample_annotation,instance,category}.json``; the voxels from the
    Occ3D ``gts`` folder ``occ`` (default: each info's ``occ_path`` under ``root``).
    """
    from flashocc.data.nuscenes_tables import load_tables

    root, out = Path(root), Path(out)
    occ_root = Path(occ) if occ is not None else None
    if occ_root is not None and not occ_root.is_dir():
        raise FileNotFoundError(f"Occ3D folder not found: {occ_root}; expected the 'gts' folder of Occ3D-nuScenes")
    tables = load_tables(root, version, ANNOTATION_TABLES)
    source = str(root / version / "sample_annotation.json")
    by_sample = annotations_by_sample(tables)
    result = PanopticResult()
    for sample in infos:
        if not sample.scene_name:
            raise DataError(f"sample {sample.token}: the info record has no scene_name; the output layout is "
                            f"<scene>/<token>/labels.npz")
        labels = load_labels(source_labels(sample, root, occ_root), sample.token, grid)
        boxes = boxes_in_ego(by_sample.get(sample.token, []), tables, sample.ego2global, grid, source)
        inst = assign_instances(labels.semantics, boxes, grid, where=f"sample {sample.token}")
        result.boxes += len(boxes)
        result.max_segments = max(result.max_segments, int(inst.max(initial=0)))
        result.unassigned_voxels += int(((inst == 0) & (labels.semantics != grid.free_label)).sum())
        panoptic = OccLabels(labels.semantics, labels.mask_lidar, labels.mask_camera, instances=inst)
        result.files.append(save_labels(panoptic, out / sample.scene_name / sample.token, grid))
        if progress is not None:
            progress()
    log.info("wrote %d panoptic labels under %s (%d boxes, at most %d segments per sample)", len(result.files),
             out, result.boxes, result.max_segments)
    return result


__all__ = ["PANOPTIC_DIR", "DETECTION_CLASSES", "CATEGORY_TO_DETECTION", "BOX_MARGIN", "MAX_SEGMENTS", "EgoBoxes",
           "points_in_boxes", "assign_instances", "number_objects", "boxes_in_ego", "annotations_by_sample",
           "build_panoptic_gt", "PanopticResult"]

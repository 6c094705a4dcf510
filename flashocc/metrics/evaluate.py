"""Score a directory of dumped predictions against an Occ3D ``gts/`` tree (``flashocc evaluate``).

Prediction layouts, all keyed by the nuScenes sample token:

* ours: ``<scene>/<token>/labels.npz`` with key ``semantics`` (written by ``flashocc predict``);
* the official ``show_dir``: ``<scene>/<token>/pred.npz`` with key ``pred``;
* flat: ``<token>.npz`` with key ``semantics``, ``pred`` or ``arr_0`` (challenge submission).

Ground truth: ``<gt_dir>/<scene>/<token>/labels.npz`` with ``semantics``, ``mask_camera``,
``mask_lidar``. RayIoU origins come from the info file's poses.

Panoptic (``ScoreConfig.panoptic``, RayPQ): the ground truth is the Occ3D-panoptic tree (its
``labels.npz`` also hold ``instances``) and each prediction file also holds instance ids, in one of
the layouts ``load_panoptic_prediction`` reads.

With the split's info file every sample it lists must have a prediction and every prediction must be
for a listed sample, so that a partial or mixed folder never prints a score that looks like the
split's; ``allow_missing`` / ``ignore_extra`` relax this, and the report then says so. Scoring itself
is ``flashocc.metrics.scorer.OccScorer``, the same scorer as ``flashocc eval``.
"""
from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.data.occ3d import read_npz
from flashocc.errors import ConfigError, DataError, MissingFileError
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import as_label_volume, as_mask
from flashocc.metrics.raypq import as_instance_volume
from flashocc.metrics.scorer import EXAMPLES_SHOWN, OccScorer, ScoreConfig

_PRED_KEYS: tuple[str, ...] = ("semantics", "pred", "arr_0")
# Panoptic semantics: SparseOcc's pano_sem replaces its sem_pred when instances are scored
# (SparseOcc@af4d9df loaders/nuscenes_occ_dataset.py, NuSceneOcc.evaluate); pred_occ is the key of
# FlashOCC@4084861 BEVDepthPano.simple_test results.
_PANO_SEM_KEYS: tuple[str, ...] = ("pano_sem", "semantics", "pred_occ", "pred", "arr_0")
_INSTANCE_KEYS: tuple[str, ...] = ("instances", "pano_inst")
_SPARSE_KEY = "occ_loc"


def index_ground_truth(gt_dir: str | os.PathLike) -> dict[str, Path]:
    """{token: labels.npz} for an Occ3D ``gts/`` tree (``gt_dir`` or ``gt_dir/gts``)."""
    root = Path(gt_dir)
    if not root.is_dir():
        raise MissingFileError(f"ground-truth folder not found: {root}")
    if (root / "gts").is_dir():
        root = root / "gts"
    found = {p.parent.name: p for p in root.glob("*/*/labels.npz")}
    if not found:
        raise MissingFileError(f"no <scene>/<token>/labels.npz under {root}; expected an Occ3D gts/ tree")
    return found


def prediction_files(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """(token, file) of every prediction under ``root`` in any of the three layouts, sorted by path."""
    root = Path(root)
    found = [(p.parent.name, p) for p in root.glob("*/*/labels.npz")]
    found += [(p.parent.name, p) for p in root.glob("*/*/pred.npz")]
    found += [(p.stem, p) for p in root.glob("*.npz")]
    return sorted(found, key=lambda x: str(x[1]))


def index_predictions(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """{token: .npz} for any of the three prediction layouts (see the module docstring)."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise MissingFileError(f"prediction folder not found: {root}")
    found: dict[str, Path] = {}
    for token, path in prediction_files(root):
        if token in found:
            raise DataError(f"two predictions for sample {token}: {found[token]} and {path}")
        found[token] = path
    if not found:
        raise MissingFileError(f"no predictions under {root}: expected <scene>/<token>/labels.npz, "
                               f"<scene>/<token>/pred.npz or <token>.npz")
    return found


def load_prediction(path: Path, grid: OccGrid = OCC3D_NUSCENES, token: str | None = None) -> np.ndarray:
    """The label volume of one prediction file; every failure is a ``DataError`` naming the file (and token)."""
    where = f"sample {token}: {path}" if token else str(path)
    arrays, present = read_npz(path, _PRED_KEYS, where, "prediction archive")
    key = next((k for k in _PRED_KEYS if k in arrays), None)
    if key is None:
        raise DataError(f"{where}: no prediction array; expected one of keys {list(_PRED_KEYS)}, found {present}")
    return _as_data(as_label_volume, arrays[key], f"{where} [{key}]", grid)


def load_panoptic_prediction(path: Path, grid: OccGrid = OCC3D_NUSCENES,
                             token: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(semantics, instance ids) of one panoptic prediction file; failures are ``DataError`` naming the file.

    Dense (X, Y, Z) volumes: ours (``semantics`` + ``instances``, ``flashocc predict``), or the result
    dicts of the official panoptic models saved with ``np.savez``: FlashOcc's ``pred_occ`` + ``pano_inst``
    (stuff voxels carry their class id as instance id), SparseOcc's ``pano_sem`` + ``pano_inst``. SparseOcc's
    sparse form, with ``occ_loc`` (N, 3) voxel indices and (N,) values, is made dense with free / 0
    elsewhere (SparseOcc@af4d9df models/utils.py, sparse2dense).
    """
    where = f"sample {token}: {path}" if token else str(path)
    arrays, present = read_npz(path, _PANO_SEM_KEYS + _INSTANCE_KEYS + (_SPARSE_KEY,), where, "prediction archive")
    sem_key = next((k for k in _PANO_SEM_KEYS if k in arrays), None)
    inst_key = next((k for k in _INSTANCE_KEYS if k in arrays), None)
    if sem_key is None or inst_key is None:
        need = [] if sem_key else [f"semantics (one of {list(_PANO_SEM_KEYS)})"]
        need += [] if inst_key else [f"instance ids (one of {list(_INSTANCE_KEYS)})"]
        raise DataError(f"{where}: a panoptic prediction needs {' and '.join(need)}; found keys {present}")
    sem, inst = arrays[sem_key], arrays[inst_key]
    if _SPARSE_KEY in arrays:
        loc = arrays[_SPARSE_KEY]
        sem = _densify(loc, sem, grid.free_label, grid, f"{where} [{sem_key}]")
        inst = _densify(loc, inst, 0, grid, f"{where} [{inst_key}]")
    sem = _as_data(as_label_volume, sem, f"{where} [{sem_key}]", grid)
    return sem, _as_data(as_instance_volume, inst, f"{where} [{inst_key}]", sem.shape)


def _densify(loc: np.ndarray, values: np.ndarray, empty: int, grid: OccGrid, where: str) -> np.ndarray:
    """A dense volume from (N, 3) voxel indices and (N,) values (a leading batch axis of 1 is dropped)."""
    loc, values = np.asarray(loc), np.asarray(values)
    if loc.ndim == 3 and loc.shape[0] == 1:
        loc = loc[0]
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if loc.ndim != 2 or loc.shape[1] != 3 or values.shape != loc.shape[:1] or not np.issubdtype(loc.dtype, np.integer):
        raise DataError(f"{where}: sparse prediction: expected integer occ_loc (N, 3) and values (N,), found "
                        f"{loc.dtype} {loc.shape} and {values.shape}")
    shape = np.asarray(grid.shape)
    if len(loc) and ((loc < 0).any() or (loc >= shape).any()):
        bad = loc[((loc < 0) | (loc >= shape)).any(axis=1)][0].tolist()
        raise DataError(f"{where}: sparse prediction: occ_loc {bad} lies outside the {grid.shape} grid")
    out = np.full(grid.shape, empty, dtype=values.dtype if np.issubdtype(values.dtype, np.integer) else np.int64)
    out[loc[:, 0], loc[:, 1], loc[:, 2]] = values
    return out


def load_ground_truth(path: Path, grid: OccGrid = OCC3D_NUSCENES, token: str | None = None,
                      instances: bool = False,
                      masks: Sequence[str] = ("mask_camera", "mask_lidar")) -> dict[str, np.ndarray]:
    """semantics, the ``masks`` (default mask_camera and mask_lidar) and with ``instances`` the
    Occ3D-panoptic ``instances`` of one ``labels.npz``; failures are ``DataError`` naming the file."""
    where = f"sample {token}: {path}" if token else str(path)
    keys = ("semantics",) + tuple(masks) + (("instances",) if instances else ())
    z, present = read_npz(path, keys, where, "ground-truth archive")
    missing = [k for k in keys if k not in z]
    if missing:
        hint = ("; RayPQ needs the Occ3D-panoptic ground truth (occ3d_panoptic/<scene>/<token>/labels.npz, "
                "written by 'flashocc data panoptic')" if "instances" in missing else "")
        raise DataError(f"{where}: missing keys {missing}; Occ3D labels.npz holds semantics, mask_lidar, "
                        f"mask_camera (found {present}){hint}")
    sem = _as_data(as_label_volume, z["semantics"], f"{where} [semantics]", grid)
    out = {"semantics": sem}
    out.update({m: _as_data(as_mask, z[m], f"{where} [{m}]", sem.shape) for m in masks})
    if instances:
        out["instances"] = _as_data(as_instance_volume, z["instances"], f"{where} [instances]", sem.shape)
    return out


def _as_data(check: Callable[..., np.ndarray], *args) -> np.ndarray:
    # The array checks raise plain ValueError / TypeError (they also serve in-memory arrays); from a file
    # the same message is a DataError, which commands print without a traceback.
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        raise DataError(str(exc)) from exc


def evaluate_dirs(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, infos: Sequence[Any] | None = None,
                  config: ScoreConfig = ScoreConfig(), grid: OccGrid = OCC3D_NUSCENES,
                  on_sample: Callable[[], None] | None = None, *, split: str | None = None, workers: int = 2,
                  allow_missing: bool = False, ignore_extra: bool = False, ray_cache: Any = None) -> dict[str, Any]:
    """Score the predictions in ``pred_dir`` against ``gt_dir``; returns ``OccScorer.result()``.

    ``infos``: the split's SampleInfo list (``split`` names it in messages, e.g. its file). Then every
    listed sample needs a prediction (else ``MissingFileError`` with the count, the first tokens and
    the paths expected) unless ``allow_missing``, and a prediction for a sample the split does not
    list fails (``DataError``) unless ``ignore_extra`` skips it; ``result["coverage"]`` records both.
    Without ``infos`` every prediction found is scored and the coverage is marked unchecked. RayIoU
    needs ``infos`` for its ray origins. ``workers`` threads read files ahead of the scoring loop.
    ``ray_cache``: a ``GTRayCache`` or its folder, to keep and reuse RayIoU's ground-truth casts.
    """
    if ("rayiou" in config.metrics or config.panoptic) and infos is None:
        raise ConfigError("RayIoU and RayPQ need the split's info file for their ray origins: pass --infos FILE")
    pred_root = Path(pred_dir)
    preds = index_predictions(pred_root)
    gts = index_ground_truth(gt_dir)
    samples: list[Any] = []
    if infos is None:
        scorer = OccScorer(config, grid, ray_cache=ray_cache)
        tokens = sorted(preds)
    else:
        samples = list(infos)
        name = split or "the info list"
        listed = {s.token: s for s in samples}
        scorer = OccScorer(config, grid, expected=listed, split=name, allow_missing=allow_missing,
                           ray_cache=ray_cache)
        missing = sorted(t for t in listed if t not in preds)
        extra = sorted(t for t in preds if t not in listed)
        if missing and not allow_missing:
            expected = "; ".join(f"{t} (expected {pred_root / (listed[t].scene_name or '<scene>') / t / 'labels.npz'})"
                                 for t in missing[:EXAMPLES_SHOWN])
            raise MissingFileError(
                f"{len(missing)} of {len(listed)} samples listed in {name} have no prediction under {pred_root}, "
                f"e.g. {expected}; predict the whole split, or pass --allow-missing to score only those found")
        if extra and not ignore_extra:
            shown = ", ".join(str(preds[t]) for t in extra[:EXAMPLES_SHOWN])
            raise DataError(
                f"{len(extra)} of {len(preds)} predictions under {pred_root} are for samples that {name} does not "
                f"list (stale files from another run or split?), e.g. {shown}; predict into an empty folder, or "
                f"pass --ignore-extra to skip them")
        scorer.ignore(extra)
        tokens = sorted(t for t in preds if t in listed)
        if not tokens:
            raise MissingFileError(f"none of the {len(preds)} predictions under {pred_root} is for a sample "
                                   f"listed in {name}")
    no_gt = [t for t in tokens if t not in gts]
    if no_gt:
        raise MissingFileError(f"no ground truth in {gt_dir} for {len(no_gt)} predicted sample(s), e.g. "
                               f"token {no_gt[0]} ({preds[no_gt[0]]}); expected <scene>/{no_gt[0]}/labels.npz")
    origins: dict[str, np.ndarray] = {}
    if scorer.needs_origins:
        from flashocc.metrics.origins import ray_origins_from_infos

        origins = ray_origins_from_infos(samples)   # the whole split: origins come from a scene's keyframes

    # Only the mask that is scored is decoded: each one is a third of a GT file's decompression.
    masks = {"camera": ("mask_camera",), "lidar": ("mask_lidar",), "none": ()}[config.mask]

    def load(token: str) -> tuple[tuple[np.ndarray, np.ndarray | None], dict[str, np.ndarray]]:
        gt = load_ground_truth(gts[token], grid, instances=config.panoptic, masks=masks)
        if config.panoptic:
            return load_panoptic_prediction(preds[token], grid), gt
        return (load_prediction(preds[token], grid), None), gt

    for token, ((pred, pred_instances), gt) in zip(tokens, _prefetch(load, tokens, workers)):
        scorer.update(token, pred, gt, origins.get(token), pred_instances=pred_instances)
        if on_sample is not None:
            on_sample()
    return scorer.result()


def _prefetch(load: Callable[[str], Any], tokens: list[str], workers: int):
    """Yield ``load(token)`` in order, reading at most ``2 * workers`` files ahead (zlib releases the GIL)."""
    if workers <= 0:
        yield from (load(t) for t in tokens)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        it = iter(tokens)
        for token in it:
            pending.append(pool.submit(load, token))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield result


def format_report(result: dict[str, Any]) -> str:
    """Per-class tables in the layout of the official tools (FlashOCC@4084861
    projects/mmdet3d_plugin/core/evaluation/occ_metrics.py and ray_metrics.py), then the coverage line."""
    lines: list[str] = []
    n = result["num_samples"]
    if "mIoU" in result:
        lines.append(f"===> per class IoU of {n} samples (mask: {result['mask']}):")
        for name, iou in result["mIoU_per_class"].items():
            lines.append(f"===> {name} - IoU = {round(iou, 2)}")
        lines.append(f"===> mIoU of {n} samples: {round(result['mIoU'], 2)}")
    for metric in ("RayIoU", "RayPQ"):
        if metric in result:
            lines += _ray_table(result, metric)
    if "F-score" in result:
        lines.append(f"F-score of {n} samples: {result['F-score']:.4f} (accuracy {result['accuracy']:.4f}, "
                     f"completeness {result['completeness']:.4f})")
    if "coverage" in result:
        cov = result["coverage"]
        flag = "" if cov["complete"] else ("WARNING: not the whole split: " if cov["checked"] else "note: ")
        lines.append(f"{flag}{cov['summary']}")
    return "\n".join(lines)


def _ray_table(result: dict[str, Any], metric: str) -> list[str]:
    """Per-class rows at each threshold, the mean row and the headline (ray_metrics.py's PrettyTable)."""
    cols = [k for k in result if k.startswith(f"{metric}@")]
    per_class = result[f"{metric}_per_class"]
    width = max(len(k) for k in per_class) + 2
    header = f"{'Class Names':<{width}}" + "".join(f"{c:>10}" for c in cols)
    rule = "-" * len(header)
    lines = ["", rule, header, rule]
    for name, row in per_class.items():
        lines.append(f"{name:<{width}}" + "".join(f"{row[c]:>10.3f}" for c in cols))
    return lines + [rule, f"{'MEAN':<{width}}" + "".join(f"{result[c]:>10.3f}" for c in cols), rule,
                    f"{metric} of {result['num_samples']} samples: {result[metric]:.4f}"]


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the result atomically (NaN becomes null)."""
    path = Path(path)

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, float) and x != x:
            return None
        return x

    with atomic_write(path, "w") as f:
        json.dump(clean(result), f, indent=2)
    return path

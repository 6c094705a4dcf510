"""Evaluation and prediction over a dataset: one inference loop feeding metrics or ``labels.npz`` files.

Under torchrun each rank takes every world_size-th sample; metric totals are summed across ranks and
only rank 0 reports. Scoring is ``flashocc.metrics.scorer.OccScorer``, the scorer of ``flashocc
evaluate`` too. Predictions are written as ``<out>/<scene>/<token>/labels.npz`` (key ``semantics``,
uint8 [x, y, z]), the layout ``flashocc evaluate`` reads, into a folder that holds no older ones.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from flashocc.atomic import atomic_write
from flashocc.batch import to_device
from flashocc.config import INFERENCE_MODES, RunConfig
from flashocc.data.dataset import OccDataset, collate_batch
from flashocc.device import collective_device
from flashocc.engine.checkpoint import (convert_official_layout, extract_state_dict, match_state_dict,
                                       read_checkpoint)
from flashocc.engine.distributed import DistInfo, barrier
from flashocc.errors import CheckpointMismatchError, ConfigError, RunFolderError
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.evaluate import prediction_files
from flashocc.metrics.scorer import OccScorer, ScoreConfig
from flashocc.models.presets import build_model

log = logging.getLogger(__name__)


def load_model_for_inference(cfg: RunConfig, checkpoint: str | os.PathLike | None, device: torch.device,
                             use_ema: bool = True) -> torch.nn.Module:
    """Build ``cfg.model`` and load weights: the EMA weights of a flashocc training file when present
    (and ``use_ema``), else the file's model weights (official files included)."""
    model = build_model(cfg.model)
    if checkpoint:
        path = Path(checkpoint)
        payload = read_checkpoint(path)
        ema = payload.get("ema") if use_ema and isinstance(payload, dict) else None
        if isinstance(ema, dict) and ema.get("state_dict"):
            state = extract_state_dict(ema["state_dict"], source=f"{path} (EMA)")
            log.info("using the EMA weights (updates %s) of %s", ema.get("updates"), path)
        else:
            state = extract_state_dict(payload, source=str(path))
        state = convert_official_layout(model, state)
        report = match_state_dict(model, state)
        if not report.ok:
            raise CheckpointMismatchError(f"{path} does not match {cfg.model.name}:\n{report.summary()}")
        model.load_state_dict(state)
    return model.to(device).eval()


def inference_model(model: torch.nn.Module, mode: str = "eager") -> torch.nn.Module:
    """``model`` as ``eval.inference`` asks: as it is (eager), fused (BatchNorm folded, channels-last,
    cached pooling indices: the same logits with less work, models/fuse.py) or fused and compiled."""
    if mode not in INFERENCE_MODES:
        raise ConfigError(f"eval.inference: expected one of {', '.join(INFERENCE_MODES)}, found {mode!r}")
    if mode == "eager":
        return model
    if not callable(getattr(model, "fuse", None)):
        name = getattr(getattr(model, "config", None) or getattr(model, "cfg", None), "name", type(model).__name__)
        raise ConfigError(f"eval.inference={mode}: {name} has no fused inference mode (the FlashOcc and SparseOcc "
                          "presets have one); use eval.inference=eager")
    return model.fuse(compile=mode == "compiled")


def eval_infos_path(cfg: RunConfig, data_root: str | os.PathLike, infos: str | None = None) -> Path:
    """The info file of the evaluated split: ``infos`` or the config's ``val_infos``, under ``data_root``
    unless absolute."""
    infos = infos or cfg.val_infos
    return Path(infos) if Path(infos).is_absolute() else Path(data_root) / infos


def eval_dataset(cfg: RunConfig, data_root: str | os.PathLike, infos: str | None = None) -> OccDataset:
    return OccDataset(Path(data_root), eval_infos_path(cfg, data_root, infos), cfg.data, train=False)


def predictions(model: torch.nn.Module, dataset: OccDataset, device: torch.device, batch_size: int = 1,
                workers: int = 0, info: DistInfo | None = None, instances: bool = False
                ) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (sample batch on CPU, predicted labels (B, Dx, Dy, Dz) uint8) for this rank's share; with
    ``instances`` (a panoptic model's ``predict_panoptic``) the batch also holds ``pred_instances``."""
    if instances and not hasattr(model, "predict_panoptic"):
        raise ConfigError(f"model: instance ids need a panoptic model (a panoptic-flashocc preset with a centre "
                          f"head); {type(model).__name__} predicts semantics only")
    rank, world = (info.rank, info.world_size) if info else (0, 1)
    subset = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate_batch)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            if instances:
                labels, ids = model.predict_panoptic(to_device(batch, device))
                batch["pred_instances"] = ids.cpu().numpy()
                yield batch, labels.cpu().numpy()
                continue
            labels = model.predict(to_device(batch, device)).cpu().numpy()
            yield batch, labels


def evaluate_model(model: torch.nn.Module, dataset: OccDataset, device: torch.device,
                   metrics: Sequence[str] = ("miou", "rayiou"), batch_size: int = 1, workers: int = 0,
                   info: DistInfo | None = None, progress: bool = False, *, mask: str = "camera",
                   backend: str = "auto", grid: OccGrid = OCC3D_NUSCENES, split: str | None = None,
                   panoptic: bool = False, on_batch: Callable[[dict, np.ndarray], None] | None = None) -> dict:
    """Scores of ``model`` on every sample of ``dataset`` (``OccScorer.result()``): mIoU (0..100, voxels
    under ``mask``), RayIoU (0..1, ``backend`` ray caster) and F-score (0..1) on ``grid``, which must be
    the model's (``cfg.model.grid``); ``split`` names the dataset in the report (its info file).

    ``panoptic``: also RayPQ from the model's instance ids (``predict_panoptic``) against the dataset's
    ``voxel_instances``. A model trained without the camera mask (``model.config.use_mask`` false, as the
    official Panoptic-FlashOcc configs) also gets ``mIoU_unmasked`` (every voxel) beside the masked mIoU.

    ``on_batch(batch, labels)`` sees every scored batch (CPU batch, predicted labels), so a caller that
    also draws the predictions (``flashocc demo``) runs the model once."""
    if not dataset.config.load_occ:
        raise ConfigError("data.load_occ: evaluation needs the ground truth; expected True, found False")
    if panoptic and not dataset.config.load_instances:
        raise ConfigError("data.load_instances: RayPQ needs the Occ3D-panoptic instance ids; expected True, "
                          "found False")
    expected = [s.token for s in dataset.samples]
    scorer = OccScorer(ScoreConfig(tuple(metrics), mask, backend, panoptic=panoptic), grid, expected=expected,
                       split=split or "the evaluated dataset")
    # Unmasked twin of the masked mIoU for models trained without the mask (their masked mIoU alone
    # is not comparable with camera-masked training).
    trained_unmasked = getattr(getattr(model, "config", None), "use_mask", True) is False
    unmasked = (OccScorer(ScoreConfig(("miou",), "none"), grid, expected=expected,
                          split=split or "the evaluated dataset")
                if trained_unmasked and mask != "none" and "miou" in metrics else None)
    origins = {}
    if scorer.needs_origins:
        from flashocc.metrics.origins import ray_origins_from_infos

        origins = ray_origins_from_infos(dataset.samples)
    stream = predictions(model, dataset, device, batch_size, workers, info, instances=panoptic)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=-(-len(dataset) // batch_size), unit="batch", desc="eval")
    for batch, labels in stream:
        for i, token in enumerate(batch["tokens"]):
            gt = {"semantics": batch["voxel_semantics"][i].numpy()}
            gt.update({k: batch[k][i].numpy() for k in ("mask_camera", "mask_lidar") if k in batch})
            if panoptic:
                gt["instances"] = batch["voxel_instances"][i].numpy()
            pred_instances = batch["pred_instances"][i] if panoptic else None
            scorer.update(token, labels[i], gt, origins.get(token), pred_instances=pred_instances)
            if unmasked is not None:
                unmasked.update(token, labels[i], gt)
        if on_batch is not None:
            on_batch(batch, labels)
    if info is not None and info.enabled:
        scorer.all_reduce(device=collective_device(info.device))  # gloo (CPU, MPS) reduces CPU tensors
        if unmasked is not None:
            unmasked.all_reduce(device=collective_device(info.device))
    result = scorer.result()
    if unmasked is not None:
        result["mIoU_unmasked"] = unmasked.result()["mIoU"]
    return result


def write_labels(labels: np.ndarray, path: Path, instances: np.ndarray | None = None) -> Path:
    """``labels.npz`` with key ``semantics`` (and ``instances``, uint16 ids in the official ``pano_inst``
    convention, for a panoptic model), written atomically."""
    arrays = {"semantics": labels.astype(np.uint8)}
    if instances is not None:
        arrays["instances"] = instances.astype(np.uint16)  # up to 18 + 500 centres: more than uint8 holds
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def prepare_prediction_dir(out_dir: str | os.PathLike, overwrite: bool = False, info: DistInfo | None = None) -> Path:
    """Refuse a folder that already holds predictions: ``flashocc evaluate`` would score the old files with
    the new ones. ``overwrite`` removes those prediction files (and the folders they leave empty) first."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"{out_dir} is a file; --out expects a folder for <scene>/<token>/labels.npz")
    old = prediction_files(out_dir) if out_dir.is_dir() else []
    if info is not None:
        barrier(info)   # every rank looks before any rank writes or removes
    if old and not overwrite:
        raise RunFolderError(f"{out_dir} already holds {len(old)} prediction files (e.g. {old[0][1]}), which "
                             f"would be scored together with the new ones; choose a new --out, or pass "
                             f"--overwrite to remove the old prediction files first")
    if old and (info is None or info.is_main):
        for _, path in old:
            path.unlink()
            for folder in (path.parent, path.parent.parent):
                if folder != out_dir and folder.is_relative_to(out_dir) and not any(folder.iterdir()):
                    folder.rmdir()
        log.info("removed %d old prediction files under %s", len(old), out_dir)
    if info is not None:
        barrier(info)
    return out_dir


def predict_to_dir(model: torch.nn.Module, dataset: OccDataset, out_dir: str | os.PathLike, device: torch.device,
                   batch_size: int = 1, workers: int = 0, info: DistInfo | None = None,
                   overwrite: bool = False) -> list[Path]:
    """Write ``<out_dir>/<scene>/<token>/labels.npz`` for this rank's share of ``dataset``; refuses a folder
    with older predictions unless ``overwrite`` (see ``prepare_prediction_dir``). A panoptic model
    (``predict_panoptic``) also writes ``instances``."""
    out_dir = prepare_prediction_dir(out_dir, overwrite, info)
    written = []
    panoptic = _predicts_instances(model)
    for batch, labels in predictions(model, dataset, device, batch_size, workers, info, instances=panoptic):
        for i, (token, scene) in enumerate(zip(batch["tokens"], batch["scene_names"])):
            ids = batch["pred_instances"][i] if panoptic else None
            written.append(write_labels(labels[i], out_dir / (scene or "unknown_scene") / token / "labels.npz", ids))
    return written


def _predicts_instances(model: torch.nn.Module) -> bool:
    """True for a panoptic model with its centre head (``models/panoptic``)."""
    return hasattr(model, "predict_panoptic") and getattr(model, "aux_centerness_head", None) is not None

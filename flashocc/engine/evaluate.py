"""Evaluation and prediction over a dataset: one inference loop feeding metrics or ``labels.npz`` files.

Under torchrun each rank takes every world_size-th sample; metric totals are summed across ranks and
only rank 0 reports. Predictions are written as ``<out>/<scene>/<token>/labels.npz`` (key
``semantics``, uint8 [x, y, z]), the layout ``flashocc evaluate`` reads.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from flashocc.atomic import atomic_write
from flashocc.config import RunConfig
from flashocc.data.dataset import OccDataset, collate_batch
from flashocc.engine.checkpoint import extract_state_dict, match_state_dict, read_checkpoint
from flashocc.engine.distributed import DistInfo
from flashocc.engine.train import to_device
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
        report = match_state_dict(model, state)
        if not report.ok:
            raise KeyError(f"{path} does not match {cfg.model.name}:\n{report.summary()}")
        model.load_state_dict(state)
    return model.to(device).eval()


def eval_dataset(cfg: RunConfig, data_root: str | os.PathLike, infos: str | None = None) -> OccDataset:
    data_root = Path(data_root)
    infos = infos or cfg.val_infos
    path = Path(infos) if Path(infos).is_absolute() else data_root / infos
    return OccDataset(data_root, path, cfg.data, train=False)


def predictions(model: torch.nn.Module, dataset: OccDataset, device: torch.device, batch_size: int = 1,
                workers: int = 0, info: DistInfo | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (sample batch on CPU, predicted labels (B, Dx, Dy, Dz) uint8) for this rank's share."""
    rank, world = (info.rank, info.world_size) if info else (0, 1)
    subset = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate_batch)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            labels = model.predict(to_device(batch, device)).cpu().numpy()
            yield batch, labels


def evaluate_model(model: torch.nn.Module, dataset: OccDataset, device: torch.device,
                   metrics: Sequence[str] = ("miou", "rayiou"), batch_size: int = 1, workers: int = 0,
                   info: DistInfo | None = None, progress: bool = False) -> dict:
    """mIoU (camera mask, 0..100) and RayIoU (0..1) of ``model`` on ``dataset``'s ground truth."""
    from flashocc.metrics import OccMIoU, RayIoU, ray_origins_from_infos

    unknown = set(metrics) - {"miou", "rayiou"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from miou, rayiou")
    if not dataset.config.load_occ:
        raise ValueError("evaluation needs ground truth: the dataset's DataConfig has load_occ=False")
    miou = OccMIoU() if "miou" in metrics else None
    rayiou = RayIoU() if "rayiou" in metrics else None
    origins = ray_origins_from_infos(dataset.samples) if rayiou is not None else {}
    stream = predictions(model, dataset, device, batch_size, workers, info)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=-(-len(dataset) // batch_size), unit="batch", desc="eval")
    for batch, labels in stream:
        gt = batch["voxel_semantics"].numpy()
        mask = batch["mask_camera"].numpy()
        for i, token in enumerate(batch["tokens"]):
            if miou is not None:
                miou.update(labels[i], gt[i], mask[i])
            if rayiou is not None:
                rayiou.update(labels[i], gt[i], origins[token])
    # Same result layout as ``flashocc evaluate`` (flashocc.metrics.evaluate.evaluate_dirs).
    result: dict = {"num_samples": len(dataset), "mask": "camera"}
    if miou is not None:
        if info is not None and info.enabled:
            miou.all_reduce(device=info.device)
        r = miou.compute()
        result.update({"mIoU": r["mIoU"], "mIoU_per_class": r["per_class"]})
    if rayiou is not None:
        if info is not None and info.enabled:
            rayiou.all_reduce(device=info.device)
        r = rayiou.compute()
        result.update({k: v for k, v in r.items() if k.startswith("RayIoU")})
        result["RayIoU_per_class"] = r["per_class"]
    return result


def write_labels(labels: np.ndarray, path: Path) -> Path:
    """``labels.npz`` with key ``semantics``, written atomically."""
    with atomic_write(path) as f:
        np.savez_compressed(f, semantics=labels.astype(np.uint8))
    return path


def predict_to_dir(model: torch.nn.Module, dataset: OccDataset, out_dir: str | os.PathLike, device: torch.device,
                   batch_size: int = 1, workers: int = 0, info: DistInfo | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for batch, labels in predictions(model, dataset, device, batch_size, workers, info):
        for i, (token, scene) in enumerate(zip(batch["tokens"], batch["scene_names"])):
            written.append(write_labels(labels[i], out_dir / (scene or "unknown_scene") / token / "labels.npz"))
    return written

"""Voxel-level active learning (EFFOcc's ``activate_al``): label a few uncertain voxels per frame.

A cycle: ``flashocc active select RUN --data DATA --budget 64 --out MASKS`` runs the run's checkpoint
(EMA weights) over its training samples that have no full labels, scores each voxel by the entropy of
its softmax, takes the most uncertain ones inside the camera mask, a per-class share of the budget for
each predicted class, and writes ``MASKS/<token>.npz``: the union of the run's own masks (the previous
cycle, ``RUN/active_masks``) and the new voxels, so masks only grow. ``flashocc train ...
active.masks=MASKS`` then trains the occupancy cross-entropy of those samples on their selected voxels
only; the run keeps a copy in ``OUT/active_masks``, which a resume reads and the next cycle grows.

The selection follows EFFOcc@9544ca0 mmdet3d/models/detectors/active_fusionocc.py
(ActiveFlashFusionOCC.forward_train, ``learning_mode='activate_al'``): entropy ``-Σ p log p`` of the
softmax, voxels outside the camera mask and already selected voxels score 0, per predicted class the
top ``int(budget / #classes)`` voxels (``unify_all_category``: the top ``budget`` of all), OR-ed with
the previous selection. Two differences, both so that only candidates are picked: the classes are
counted among the candidate voxels (officially among all voxels, in or out of the camera mask), and a
class with fewer candidates than its share gives only those (officially ``topk`` then fills the share
with zero-scored voxels: outside the camera mask, of another class or already selected). Equal
entropies go to the lower flat index, so a selection is reproducible.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from flashocc.atomic import atomic_write
from flashocc.batch import to_device
from flashocc.config import RunConfig, load_run_config
from flashocc.data.active_masks import (MASKS_DIR, SELECTION_FILE, ActiveMasks, copy_masks, mask_path, mask_tokens,
                                        read_mask, write_mask)
from flashocc.data.dataset import OccDataset, collate_batch, select_labeled_scenes
from flashocc.data.infos import load_infos
from flashocc.engine.checkpoint import unwrap_model
from flashocc.engine.evaluate import load_model_for_inference
from flashocc.errors import ConfigError, OutputPathError, RunFolderError
from flashocc.models.criterion import reads_voxel_selection

log = logging.getLogger(__name__)
STRATEGIES = ("per-class", "global")


def voxel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(..., K) logits -> (...) entropy of the softmax, in nats."""
    logits = logits.float()
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def entropy_selection(logits: torch.Tensor, camera_mask: torch.Tensor | None, previous: torch.Tensor | None,
                      budget: int, per_class: bool = True) -> torch.Tensor:
    """One sample's selection after this cycle, (Dx, Dy, Dz) bool: ``previous`` plus up to ``budget`` new
    voxels of the highest entropy among the candidates (inside ``camera_mask``, not in ``previous``).
    ``per_class``: each class predicted (argmax) on a candidate gets ``budget // #classes`` of them."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"active budget: expected an integer >= 0 (new voxels per sample), found {budget!r}")
    shape = logits.shape[:-1]
    score = voxel_entropy(logits).reshape(-1)
    candidate = torch.ones_like(score, dtype=torch.bool)
    if camera_mask is not None:
        candidate &= camera_mask.reshape(-1).to(score.device).bool()
    if previous is not None:
        previous = previous.to(score.device).bool()
        candidate &= ~previous.reshape(-1)
    chosen = torch.zeros_like(candidate)
    if per_class:
        pred = logits.argmax(-1).reshape(-1)
        classes = pred[candidate].unique()
        share = budget // max(1, len(classes))
        for c in classes.tolist():
            chosen[_most_uncertain(score, (candidate & (pred == c)).nonzero().squeeze(1), share)] = True
    else:
        chosen[_most_uncertain(score, candidate.nonzero().squeeze(1), budget)] = True
    chosen = chosen.reshape(shape)
    return chosen if previous is None else chosen | previous


def _most_uncertain(score: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` entries of ``index`` with the highest score; ties to the lower index (a stable sort)."""
    order = torch.sort(-score[index], stable=True).indices
    return index[order[:k]]


def pool_samples(cfg: RunConfig, data_root: Path) -> list:
    """The training samples that active learning labels: all of them, or with ``data.labeled_fraction`` /
    ``labeled_scenes`` those outside the labelled scenes (the labelled ones have full labels)."""
    infos = Path(cfg.train_infos) if Path(cfg.train_infos).is_absolute() else data_root / cfg.train_infos
    samples = load_infos(infos)
    labelled = select_labeled_scenes(cfg.data, [s.scene_name for s in samples], data_root)
    if labelled is None:
        return samples
    labelled = set(labelled)
    return [s for s in samples if s.scene_name not in labelled]


def select_masks(run_dir: str | Path, data_root: str | Path, out: str | Path, budget: int, strategy: str = "per-class",
                 device: torch.device | str = "cpu", checkpoint: str | Path | None = None, overwrite: bool = False,
                 progress: bool = False) -> dict:
    """One selection cycle from the run in ``run_dir`` (its ``config.yaml``, ``last.pt`` or ``checkpoint``,
    and the masks it trained with, ``run_dir/active_masks``); writes ``out/<token>.npz`` and
    ``out/selection.json``. Returns the record written to ``selection.json``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"active select --strategy: expected one of {', '.join(STRATEGIES)}, found {strategy!r}")
    run_dir, data_root, out = Path(run_dir), Path(data_root), Path(out)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder (no config.yaml); give the --out of 'flashocc train'")
    cfg = load_run_config(str(config))
    previous = ActiveMasks(run_dir / MASKS_DIR) if (run_dir / MASKS_DIR).is_dir() else None
    _prepare_out(out, run_dir, overwrite)
    device = torch.device(device)
    model = load_model_for_inference(cfg, checkpoint or run_dir / "last.pt", device, use_ema=cfg.eval.use_ema)
    dataset = OccDataset(data_root, pool_samples(cfg, data_root), cfg.data, train=False)  # unflipped: the labels' frame
    if len(dataset) == 0:
        raise ConfigError(f"{run_dir}: every training scene is labelled (data.labeled_fraction / labeled_scenes); "
                          f"active learning has no sample to select voxels in")
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, num_workers=cfg.eval.workers,
                                         collate_fn=collate_batch)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, unit="batch", desc="selecting voxels")
    new_total = selected_total = 0
    done: set[str] = set()
    with torch.no_grad():
        for batch in loader:
            logits = model(to_device(batch, device))
            if not isinstance(logits, torch.Tensor) or logits.shape[:-1] != batch["voxel_semantics"].shape:
                raise ConfigError(f"{cfg.model.name}: active selection needs per-voxel logits (B, Dx, Dy, Dz, K) "
                                  f"from the model in eval mode")
            for i, token in enumerate(batch["tokens"]):
                shape = tuple(batch["voxel_semantics"].shape[1:])
                before = None if previous is None else previous.get(token, shape)
                before_t = None if before is None else torch.from_numpy(before)
                mask = entropy_selection(logits[i], batch["mask_camera"][i], before_t, budget, strategy == "per-class")
                mask = mask.cpu().numpy()
                write_mask(out, token, mask)
                selected_total += int(mask.sum())
                new_total += int(mask.sum()) - (0 if before is None else int(before.sum()))
                done.add(token)
    # Masks of the previous cycle outside this pool stay as they were: a selection only grows.
    for token in sorted(set(previous.tokens) - done) if previous is not None else ():
        write_mask(out, token, read_mask(mask_path(previous.folder, token)))
        done.add(token)
    last = _read_record(previous.folder) if previous is not None else {}
    record = {"cycle": int(last.get("cycle", 0)) + 1, "budget": budget, "strategy": strategy, "run": str(run_dir),
              "checkpoint": str(checkpoint or run_dir / "last.pt"),
              "previous": str(previous.folder) if previous is not None else None, "samples": len(done),
              "new_voxels": new_total, "selected_voxels": selected_total}
    with atomic_write(out / SELECTION_FILE, "w") as f:
        json.dump(record, f, indent=2)
    log.info("active selection cycle %d: %d new voxels, %d selected in %d samples -> %s", record["cycle"],
             new_total, selected_total, len(dataset), out)
    return record


def _prepare_out(out: Path, run_dir: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {out} is a file; give a folder for the masks")
    if out.resolve() == (run_dir / MASKS_DIR).resolve():
        raise OutputPathError(f"--out {out} is the masks the run trained with; write the next cycle elsewhere")
    held = [p for p in out.glob("*") if p.suffix == ".npz" or p.name == SELECTION_FILE] if out.is_dir() else []
    if held and not overwrite:
        raise OutputPathError(f"{out} already holds {len(held)} mask file(s); pass --overwrite or choose a new --out")
    for path in held:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _read_record(folder: Path) -> dict:
    path = folder / SELECTION_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


# ---- training with masks (flashocc.engine.train) -----------------------------------------------------
def training_masks(cfg: RunConfig, out_dir: Path, resume: bool) -> ActiveMasks | None:
    """The masks a run trains with (``active.masks``), checked before the run folder changes: the run's
    own copy ``OUT/active_masks`` when resuming, else the source folder (``stage_training_masks`` copies
    it once the run may write)."""
    if not cfg.active.masks:
        return None
    if cfg.distill.enabled:
        raise ConfigError("active.masks: training on selected voxels is not combined with a teacher (distill.teacher): "
                          "the distillation regions read every voxel's label; use one or the other")
    if not cfg.data.load_occ:
        raise ConfigError("active.masks: needs the occupancy labels (data.load_occ=true)")
    own = out_dir / MASKS_DIR
    source = Path(cfg.active.masks)
    if source.resolve() == own.resolve():
        raise ConfigError(f"active.masks: {source} is this run's own copy; give the folder 'flashocc active select' "
                          f"wrote (--overwrite would delete it)")
    if resume and own.is_dir():
        return ActiveMasks(own)
    mask_tokens(source)
    return ActiveMasks(source)


def check_training_masks(masks: ActiveMasks, model: torch.nn.Module, dataset: OccDataset, cfg: RunConfig) -> None:
    """Refuse masks the model cannot honour, or that belong to none of the training samples."""
    criterion = getattr(unwrap_model(model), "criterion", None)
    if not reads_voxel_selection(criterion):
        raise ConfigError(f"active.masks: the criterion of {cfg.model.name} ({type(criterion).__name__}) does not "
                          f"read voxel masks; use a lift-splat model (flashocc-*, effocc-*)")
    known = {s.token for s in dataset.samples}
    if masks.tokens and not masks.tokens & known:
        raise ConfigError(f"active.masks: none of the {len(masks.tokens)} masks in {masks.folder} belongs to a "
                          f"training sample (e.g. {sorted(masks.tokens)[0]}); select them on this data set")


def stage_training_masks(masks: ActiveMasks, out_dir: Path) -> ActiveMasks:
    """The run's own copy of its masks (``OUT/active_masks``), made once."""
    own = out_dir / MASKS_DIR
    if masks.folder.resolve() == own.resolve():
        return masks
    if own.exists():  # a resumed run that stopped before its copy was made
        raise RunFolderError(f"{own} exists but the run did not start from it; remove it or pass --overwrite")
    return ActiveMasks(copy_masks(masks.folder, own))


__all__ = ["voxel_entropy", "entropy_selection", "pool_samples", "select_masks", "training_masks",
           "check_training_masks", "stage_training_masks", "STRATEGIES"]

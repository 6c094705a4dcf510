"""One scorer for every evaluation: ``flashocc eval``, per-epoch validation and ``flashocc evaluate``.

    scorer = OccScorer(ScoreConfig(metrics=("miou", "rayiou")), grid, expected=tokens, split="infos_val.pkl")
    for token, pred, gt, origins in samples:          # gt: {"semantics", "mask_camera", "mask_lidar"}
        scorer.update(token, pred, gt, origins)       # panoptic: gt["instances"], pred_instances=...
    scorer.all_reduce()                               # under torch.distributed: sum the totals of every rank
    result = scorer.result()                          # {"num_samples", "mask", "coverage", "mIoU", ...}

The scorer also keeps the coverage: which samples the split lists (``expected``) and which were
scored. A split sample that was never scored makes ``result()`` fail unless ``allow_missing``; a
sample the split does not list is refused by ``update`` (a stale file from another run or split).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flashocc.errors import ConfigError, DataError
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import as_label_volume, as_origins
from flashocc.metrics.fscore import OccFScore
from flashocc.metrics.miou import OccMIoU
from flashocc.metrics.rayiou import RayIoU
from flashocc.metrics.raypq import RayPQ, as_instance_volume

METRICS: tuple[str, ...] = ("miou", "rayiou", "fscore")
MASKS: tuple[str, ...] = ("camera", "lidar", "none")
BACKENDS: tuple[str, ...] = ("auto", "numba", "torch")
EXAMPLES_SHOWN = 3   # tokens quoted in coverage messages


@dataclass(frozen=True)
class ScoreConfig:
    """What to score: metric names, the voxel mask of mIoU / F-score, the RayIoU ray caster, and
    ``panoptic``: also RayPQ, from instance ids of the prediction and the Occ3D-panoptic ground truth."""

    metrics: tuple[str, ...] = ("miou",)
    mask: str = "camera"               # official: camera; RayIoU never uses a mask
    backend: str = "auto"              # ray caster: auto (numba when installed) | numba | torch
    panoptic: bool = False

    def __post_init__(self) -> None:
        problem = check_score_fields(self.metrics, self.mask, self.backend)
        if problem is None and not isinstance(self.panoptic, bool):
            problem = ("panoptic", "true or false")
        if problem:
            field, expected = problem
            raise ConfigError(f"ScoreConfig.{field}: expected {expected}, found {getattr(self, field)!r}")


def check_score_fields(metrics: Any, mask: Any, backend: Any) -> tuple[str, str] | None:
    """(field, what was expected) of the first bad value, else None; shared with the run config."""
    if isinstance(metrics, str) or not isinstance(metrics, (tuple, list)) or not metrics:
        return "metrics", f"a non-empty list of {', '.join(METRICS)}"
    if any(m not in METRICS for m in metrics):
        return "metrics", f"names from {', '.join(METRICS)}"
    if len(set(metrics)) != len(metrics):
        return "metrics", "each metric once"
    if mask not in MASKS:
        return "mask", f"one of {', '.join(MASKS)}"
    if backend not in BACKENDS:
        return "backend", f"one of {', '.join(BACKENDS)}"
    return None


def _examples(tokens: Sequence[str]) -> str:
    shown = ", ".join(tokens[:EXAMPLES_SHOWN])
    return shown + (", ..." if len(tokens) > EXAMPLES_SHOWN else "")


@dataclass(frozen=True)
class Coverage:
    """Which samples were scored, against the split's list when one was given (``split`` is None otherwise)."""

    split: str | None
    listed: int                        # samples the split lists (0 when not checked)
    scored: int
    missing: tuple[str, ...]           # listed but not scored, sorted
    ignored: tuple[str, ...]           # not listed, skipped on request (stale or other-split files), sorted

    @property
    def checked(self) -> bool:
        return self.split is not None

    @property
    def complete(self) -> bool:
        return self.checked and not self.missing

    def summary(self) -> str:
        if not self.checked:
            text = (f"scored {self.scored} samples; coverage not checked against a split "
                    f"(give the split's info file, --infos, to require every sample)")
        else:
            text = f"scored {self.scored} of {self.listed} samples listed in {self.split}"
            if self.missing:
                text += f"; {len(self.missing)} missing, e.g. {_examples(self.missing)}"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} predictions not in the split, e.g. {_examples(self.ignored)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "complete": self.complete, "split": self.split, "listed": self.listed,
                "scored": self.scored, "missing": len(self.missing), "missing_tokens": list(self.missing),
                "ignored": len(self.ignored), "ignored_tokens": list(self.ignored), "summary": self.summary()}


class OccScorer:
    """Occ3D metrics over a split, with coverage bookkeeping; see the module docstring.

    ``expected``: the tokens the split lists (None: coverage is not checked); ``split``: its name in
    messages (e.g. the info file). ``device``: torch device of the RayIoU caster (backend torch).
    ``ray_cache``: a ``flashocc.metrics.ray_cache.GTRayCache`` (or its folder) for RayIoU's ground-truth
    casts (not used for RayPQ, which reads instance ids at the hit voxels).
    """

    def __init__(self, config: ScoreConfig = ScoreConfig(), grid: OccGrid = OCC3D_NUSCENES,
                 expected: Iterable[str] | None = None, split: str | None = None, allow_missing: bool = False,
                 device: Any = None, ray_cache: Any = None) -> None:
        self.config = config
        self.grid = grid
        self.allow_missing = allow_missing
        self.split = None if expected is None else (split or "the split")
        self.expected: frozenset[str] | None = None if expected is None else frozenset(expected)
        if self.expected is not None and not self.expected:
            raise DataError(f"{self.split} lists no samples; there is nothing to evaluate")
        self.scored: set[str] = set()
        self.ignored: set[str] = set()
        m = config.metrics
        self.miou = OccMIoU(grid) if "miou" in m else None
        self.rayiou = RayIoU(grid, backend=config.backend, device=device, cache=ray_cache) if "rayiou" in m else None
        self.fscore = OccFScore(grid) if "fscore" in m else None
        self.raypq = RayPQ(grid, backend=config.backend, device=device) if config.panoptic else None
        self._mask_key = {"camera": "mask_camera", "lidar": "mask_lidar", "none": None}[config.mask]

    @property
    def needs_origins(self) -> bool:
        return self.rayiou is not None or self.raypq is not None

    def ignore(self, tokens: Iterable[str]) -> None:
        """Record predictions that were skipped because the split does not list them (shown in the report)."""
        self.ignored.update(tokens)

    def update(self, token: str, pred: Any, gt: Mapping[str, Any], origins: Any = None,
               pred_instances: Any = None) -> None:
        """Add one sample: ``pred`` and ``gt["semantics"]`` uint8 (X, Y, Z) labels indexed [x, y, z], the GT
        masks (``mask_camera`` / ``mask_lidar``, the one the config's mask names) and, for RayIoU and
        RayPQ, the (K, 3) ray origins in metres in the sample's ego frame. Panoptic: integer instance
        ids of the same shape in ``pred_instances`` and ``gt["instances"]``."""
        if self.expected is not None and token not in self.expected:
            raise DataError(f"sample {token} is not listed in {self.split}; a prediction from another run or "
                            f"split cannot be scored against it")
        if token in self.scored:
            raise DataError(f"sample {token} was scored twice; each sample of {self.split or 'the set'} counts once")
        if "semantics" not in gt:
            raise DataError(f"sample {token}: the ground truth has no 'semantics'; found keys {sorted(gt)}")
        mask = None
        if self._mask_key is not None:
            if self._mask_key not in gt:
                raise DataError(f"sample {token}: mask '{self.config.mask}' needs the GT's {self._mask_key}; "
                                f"found keys {sorted(gt)}")
            mask = gt[self._mask_key]
        if self.needs_origins and origins is None:
            which = "RayIoU" if self.rayiou is not None else "RayPQ"
            raise DataError(f"sample {token}: {which} needs its ray origins (from the split's info file poses)")
        if self.raypq is not None:
            if pred_instances is None:
                raise DataError(f"sample {token}: RayPQ needs the prediction's instance ids; none were given")
            if "instances" not in gt:
                raise DataError(f"sample {token}: RayPQ needs the ground truth's 'instances' (Occ3D-panoptic "
                                f"labels); found keys {sorted(gt)}")
        sem = gt["semantics"]
        if self.miou is not None:
            self.miou.update(pred, sem, mask)
        if self.raypq is not None:
            # One cast serves both ray metrics (the official tools cast twice, with the same result).
            pred_v = as_label_volume(pred, f"sample {token}: pred", self.grid)
            sem_v = as_label_volume(sem, f"sample {token}: gt", self.grid)
            pred_inst = as_instance_volume(pred_instances, f"sample {token}: pred instances", sem_v.shape)
            gt_inst = as_instance_volume(gt["instances"], f"sample {token}: gt instances", sem_v.shape)
            hits = self.raypq.caster.hits(pred_v, sem_v, as_origins(origins))
            self.raypq.update_hits(hits, pred_inst.reshape(-1)[hits.pred_index], gt_inst.reshape(-1)[hits.gt_index])
            if self.rayiou is not None:
                self.rayiou.update_hits(hits)
        elif self.rayiou is not None:
            self.rayiou.update(pred, sem, origins)
        if self.fscore is not None:
            self.fscore.update(pred, sem, mask)
        self.scored.add(token)

    def all_reduce(self, group: Any = None, device: Any = None) -> None:
        """Sum the metric totals and unite the scored tokens over every rank (no-op without torch.distributed).
        Call it on every rank before ``result()``; with NCCL or HCCL pass the process's device
        (``flashocc.device.collective_device``)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for metric in (self.miou, self.rayiou, self.fscore, self.raypq):
            if metric is not None:
                metric.all_reduce(group=group, device=device)
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, (sorted(self.scored), sorted(self.ignored)), group=group)
        scored: set[str] = set()
        for rank_scored, rank_ignored in gathered:
            twice = scored.intersection(rank_scored)
            if twice:
                raise DataError(f"{len(twice)} samples were scored on more than one rank, e.g. "
                                f"{_examples(sorted(twice))}; each rank must score a disjoint share")
            scored.update(rank_scored)
            self.ignored.update(rank_ignored)
        self.scored = scored

    def coverage(self) -> Coverage:
        if self.expected is None:
            return Coverage(None, 0, len(self.scored), (), tuple(sorted(self.ignored)))
        missing = tuple(sorted(self.expected - self.scored))
        return Coverage(self.split, len(self.expected), len(self.scored), missing, tuple(sorted(self.ignored)))

    def result(self) -> dict[str, Any]:
        """JSON-able scores: ``num_samples``, ``mask``, ``coverage`` and per metric its headline values
        (``mIoU`` 0..100, ``RayIoU``/``RayIoU@t`` 0..1, ``RayPQ``/``RayPQ@t`` 0..1, ``F-score`` 0..1) plus
        ``*_per_class`` tables.

        Fails when nothing was scored, or when split samples were not scored and ``allow_missing`` is off."""
        cov = self.coverage()
        if cov.missing and not self.allow_missing:
            raise DataError(f"{len(cov.missing)} of {cov.listed} samples listed in {cov.split} were not scored, "
                            f"e.g. {_examples(cov.missing)}; a score over a subset is not the split's score")
        if not cov.scored:
            raise DataError(f"no samples were scored ({cov.summary()})")
        out: dict[str, Any] = {"num_samples": cov.scored, "mask": self.config.mask, "coverage": cov.to_dict()}
        if self.miou is not None:
            r = self.miou.compute()
            out.update({"mIoU": r["mIoU"], "mIoU_per_class": r["per_class"]})
        if self.rayiou is not None:
            r = self.rayiou.compute()
            out.update({k: v for k, v in r.items() if k.startswith("RayIoU")})
            out["RayIoU_per_class"] = r["per_class"]
        if self.raypq is not None:
            r = self.raypq.compute()
            out.update({k: v for k, v in r.items() if k.startswith("RayPQ")})
            out["RayPQ_per_class"] = r["per_class"]
        if self.fscore is not None:
            r = self.fscore.compute()
            out.update({"F-score": r["F-score"], "accuracy": r["accuracy"], "completeness": r["completeness"]})
        return out


__all__ = ["OccScorer", "ScoreConfig", "Coverage", "METRICS", "MASKS", "BACKENDS", "check_score_fields"]

"""Shared pieces of the metrics: input checks and the mergeable count state.

Every metric keeps its running totals in a dict of numpy arrays (int64 counts; RayPQ also a float64
sum of IoUs). Totals over several processes are the element-wise sums of these arrays, so there
are three ways to combine them:

* ``a.merge(b)``: add another metric's totals (e.g. from a worker process) into ``a``;
* ``a.state()`` -> dict of torch tensors, ``a.load_state(d)``: move totals around by hand;
* ``a.all_reduce(group=None, device=None)``: sum the totals over every rank of an initialised
  ``torch.distributed`` process group in place (call it on every rank before ``compute()``; with
  NCCL or HCCL pass the process's device, ``flashocc.device.collective_device`` says which).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flashocc.grid import OccGrid


def as_label_volume(volume: Any, name: str, grid: OccGrid, batched: bool = False) -> np.ndarray:
    """Check a label volume: integer dtype, shape (..., X, Y, Z) of ``grid``, labels 0..free.

    Returns it as a numpy array (torch tensors are moved to the CPU). ``name`` is used in errors
    (e.g. the file the volume came from).
    """
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().numpy()
    if not isinstance(volume, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array or torch tensor of labels, got {type(volume).__name__}")
    shape = tuple(grid.shape)
    ok_shape = volume.shape[-3:] == shape and (volume.ndim == 3 or (batched and volume.ndim > 3))
    if not ok_shape:
        want = f"(..., {shape[0]}, {shape[1]}, {shape[2]})" if batched else str(shape)
        raise ValueError(f"{name}: expected labels of shape {want} indexed [x, y, z], got {volume.shape}")
    if volume.dtype == np.bool_ or not np.issubdtype(volume.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer label dtype (uint8), got {volume.dtype}")
    if volume.size:
        lo, hi = volume.min(), volume.max()
        if lo < 0 or hi >= grid.num_classes:
            bad = int(hi) if hi >= grid.num_classes else int(lo)
            where = tuple(int(i) for i in np.argwhere(volume == bad)[0])
            raise ValueError(f"{name}: label {bad} at {list(where)}; labels must be 0..{grid.num_classes - 1} "
                             f"({grid.class_names[-1]} = {grid.free_label}); map ignore values to free first")
    return volume


def as_mask(mask: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A 0/1 or bool mask of ``shape`` -> bool array."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name}: expected a mask of shape {shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        out_of_range = mask.size and (mask.max() > 1 or mask.min() < 0)
        if not np.issubdtype(mask.dtype, np.integer) or out_of_range:
            raise ValueError(f"{name}: expected a bool or 0/1 integer mask, got dtype {mask.dtype}"
                             + (f" with values {mask.min()}..{mask.max()}" if mask.size else ""))
        mask = mask.astype(bool)
    return mask


def as_origins(origins: Any, name: str = "origins") -> np.ndarray:
    """(K, 3) finite float origins in metres -> float64 array."""
    if isinstance(origins, torch.Tensor):
        origins = origins.detach().cpu().numpy()
    origins = np.asarray(origins)
    if origins.ndim != 2 or origins.shape[1] != 3 or not np.issubdtype(origins.dtype, np.floating):
        raise ValueError(f"{name}: expected (K, 3) float origins in metres (ego frame), got "
                         f"shape {origins.shape} dtype {origins.dtype}")
    if not np.isfinite(origins).all():
        row = int(np.argwhere(~np.isfinite(origins))[0, 0])
        raise ValueError(f"{name}: origin {row} is not finite: {origins[row].tolist()}")
    return origins.astype(np.float64)


def nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (not a warning) when all are NaN."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    return float(values[keep].mean()) if keep.any() else float("nan")


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num / den with 0/0 -> NaN, without warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


class MergeableState:
    """Mixin: totals live in ``self._totals`` (name -> numpy array), summed to merge."""

    _totals: dict[str, np.ndarray]

    def reset(self) -> None:
        for value in self._totals.values():
            value[...] = 0

    def state(self) -> dict[str, torch.Tensor]:
        """Copies of the running totals as torch tensors (int64 counts, float64 sums)."""
        return {k: torch.from_numpy(v.copy()) for k, v in self._totals.items()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the totals with ``state`` (as returned by ``state()``)."""
        for k, v in self._totals.items():
            if k not in state:
                raise KeyError(f"{type(self).__name__}.load_state: missing {k!r}; got keys {sorted(state)}")
            new = state[k].detach().cpu().numpy() if isinstance(state[k], torch.Tensor) else np.asarray(state[k])
            if new.shape != v.shape:
                raise ValueError(f"{type(self).__name__}.load_state: {k!r} has shape {new.shape}, expected {v.shape}")
            v[...] = new

    def merge(self, other: MergeableState) -> MergeableState:
        """Add the totals of another instance of the same metric (same grid and settings)."""
        if type(other) is not type(self) or other._totals.keys() != self._totals.keys():
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k, v in self._totals.items():
            if other._totals[k].shape != v.shape:
                raise ValueError(f"cannot merge: {k!r} shapes differ ({other._totals[k].shape} vs {v.shape})")
            v += other._totals[k]
        return self

    def all_reduce(self, group: Any = None, device: str | torch.device | None = None) -> None:
        """Sum the totals over all ranks of ``torch.distributed`` (no-op when not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for k, v in self._totals.items():
            t = torch.from_numpy(v.copy()).to(device or "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            v[...] = t.cpu().numpy()

"""Exact voxel ray casting for RayIoU / RayPQ: the official ``dvr.render_forward`` in "test" mode.

The official op (FlashOCC@4084861 lib/dvr/dvr.cu, render_forward, the same file as SparseOcc's; see
docs/official-behaviour.md#rayiou-rays-and-traversal) walks each ray with an Amanatides–Woo DDA from
``int(origin)`` (truncation toward zero) until it leaves the grid, records the *exit* distance of
every in-grid voxel, and returns the first occupied voxel with its exit distance, or the last
in-grid voxel when nothing is hit, or distance -1 at voxel (0, 0, 0) when the ray never enters.
Ties pick Z, then Y over X. Distances are in voxel units here; callers scale them.

Two backends compute the same thing:

* ``"numba"``: one compiled loop per ray, ranges of rays on ``threads`` threads (``_ray_threads.py``:
  default ``$FLASHOCC_RAY_THREADS``, else the cores available; the result never depends on it).
  Several volumes (the ground truth and the prediction) share one walk, which stops once every
  volume has been hit.
  Fastest on CPU; needs ``pip install numba``. ``cast_metric_rays`` also derives each ray's points
  from the origins in metres inside the kernel, and can cast a subset of the rays (RayIoU casts
  only the scored rays of a prediction when the ground truth's cast is cached).
* ``"torch"``: the same walk vectorised over all rays, one DDA step per iteration for every active
  ray, dropping rays whose volumes are all hit (active-ray compaction). Runs on any torch device,
  so it is the GPU path; on CPU it is the fallback when numba is missing.

Both are checked against a plain per-ray reference in ``tests/metrics/test_raycast.py``.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from flashocc.grid import OccGrid
from flashocc.metrics._ray_threads import ray_threads, run_chunked
from flashocc.metrics._raycast_limits import DBL_MAX, MAX_STEP

logger = logging.getLogger(__name__)

_MAX_VOLUMES = 8                    # occupancy of all volumes is packed into one uint8 bitmask


def lidar_ray_directions() -> np.ndarray:
    """(14040, 3) float32 unit directions in the ego frame, pitch-major (SparseOcc@af4d9df
    loaders/ray_metrics.py, generate_lidar_rays).

    39 pitches: -(pi/2 - atan(k)) for k = 1..10, then constant steps while the last is < 0.21 rad;
    360 integer-degree azimuths each.
    """
    pitches = [-(math.pi / 2 - math.atan(k)) for k in range(1, 11)]
    while pitches[-1] < 0.21:
        pitches.append(pitches[-1] + (pitches[-1] - pitches[-2]))
    pitch = np.asarray(pitches, dtype=np.float64)[:, None]
    azimuth = np.deg2rad(np.arange(0, 360, 1, dtype=np.float64))[None, :]
    dirs = np.stack(np.broadcast_arrays(np.cos(pitch) * np.cos(azimuth), np.cos(pitch) * np.sin(azimuth),
                                        np.sin(pitch)), axis=-1)
    return dirs.reshape(-1, 3).astype(np.float32)


def to_voxel_units(origins: np.ndarray, directions: np.ndarray, grid: OccGrid) -> tuple[np.ndarray, np.ndarray]:
    """Origins (K, 3) and unit directions (R, 3) in metres -> float32 voxel-unit origins (K, 3) and
    ray end points (K, R, 3), rounded exactly as the official caller does.

    Official quirk (SparseOcc loaders/ray_metrics.py, process_one_sample): the end point is origin + 1 m,
    both shifted by the float32 range minimum, divided by the float32 voxel size in float64, then
    rounded to float32; the kernel re-derives the direction from these rounded values.
    """
    lower = np.asarray(grid.lower, dtype=np.float32).astype(np.float64)
    size = np.asarray(grid.voxel_size, dtype=np.float32).astype(np.float64)
    o = np.asarray(origins, dtype=np.float64)
    o_vox = ((o - lower) / size).astype(np.float32)
    ends = directions.astype(np.float32).astype(np.float64)[None, :, :] + o[:, None, :]
    e_vox = ((ends - lower) / size).astype(np.float32)
    return o_vox, e_vox


def pack_occupancy(volumes: list[np.ndarray], free_label: int) -> np.ndarray:
    """Labels -> one uint8 (X, Y, Z) bitmask: bit v set where volume v is occupied (label != free).

    Official quirk (SparseOcc loaders/ray_metrics.py, process_one_sample): any label other than free
    counts as occupied, ignore values included; callers validate labels first.
    """
    if not 1 <= len(volumes) <= _MAX_VOLUMES:
        raise ValueError(f"cast_rays takes 1..{_MAX_VOLUMES} volumes, got {len(volumes)}")
    codes = np.zeros(volumes[0].shape, dtype=np.uint8)
    for v, vol in enumerate(volumes):
        codes |= (vol != free_label).astype(np.uint8) << np.uint8(v)
    return codes


def cast_rays(codes: np.ndarray | torch.Tensor, num_volumes: int, origins_vox: np.ndarray,
              endpoints_vox: np.ndarray, backend: str = "auto",
              threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Walk every ray of every origin through the packed occupancy ``codes`` (X, Y, Z).

    ``origins_vox`` (K, 3) and ``endpoints_vox`` (K, R, 3) are in voxel units (see
    ``to_voxel_units``). Returns ``index`` (V, K, R) int64 flat C-order voxel indices of the hit
    (or fallback) voxel per volume and ``dist`` (V, K, R) float64 exit distances in voxel units
    (-1 where the ray never enters the grid, with index 0). ``threads``: of the numba backend (see
    ``_ray_threads.ray_threads``).
    """
    backend = resolve_backend(backend, codes)
    if backend == "numba":
        return _cast_numba(np.ascontiguousarray(codes), num_volumes, origins_vox, endpoints_vox, ray_threads(threads))
    codes = torch.as_tensor(codes)
    if codes.device.type != "cpu":
        return _cast_torch(codes, num_volumes, origins_vox, endpoints_vox)
    # Each DDA step works on <= 112k-element tensors, too small to gain from intra-op threads; on a
    # busy 2-core machine two threads were measured 25x slower than one (0.6 s vs 16 s per origin).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _cast_torch(codes, num_volumes, origins_vox, endpoints_vox)
    finally:
        torch.set_num_threads(threads)


def cast_metric_rays(codes: np.ndarray | torch.Tensor, num_volumes: int, origins: np.ndarray,
                     directions: np.ndarray, grid: OccGrid, rays: np.ndarray | None = None,
                     backend: str = "auto", threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Walk rays given in metres: ``origins`` (K, 3) and unit ``directions`` (R, 3) in the ego frame.

    ``rays``: flat ray ids ``k * R + r`` to cast (default: all K * R, origin-major), e.g. only the rays
    whose ground truth is known to hit something. Returns ``index`` and ``dist`` (V, M) as ``cast_rays``
    (column j for ray ``rays[j]``); the rays are rounded to voxel units as ``to_voxel_units`` does, so
    the result equals ``cast_rays(codes, V, *to_voxel_units(origins, directions, grid))`` reshaped.
    """
    backend = resolve_backend(backend, codes)
    k, r = len(origins), len(directions)
    if rays is None:
        rays = np.arange(k * r, dtype=np.int64)
    rays = np.ascontiguousarray(rays, dtype=np.int64)
    if rays.ndim != 1 or (rays.size and (rays.min() < 0 or rays.max() >= k * r)):
        raise ValueError(f"rays: expected a 1-D array of ray ids in 0..{k * r - 1} ({k} origins x {r} rays)")
    if backend == "numba":
        return _cast_metric_numba(np.asarray(codes), num_volumes, origins, directions, grid, rays, ray_threads(threads))
    o_vox, e_vox = to_voxel_units(origins, directions, grid)
    index, dist = cast_rays(codes, num_volumes, o_vox[rays // r], e_vox.reshape(-1, 3)[rays][:, None, :], backend,
                            threads)
    return index.reshape(num_volumes, -1), dist.reshape(num_volumes, -1)


def resolve_backend(backend: str, codes=None) -> str:
    """"auto" -> "numba" when installed, else "torch"; device tensors always use "torch"."""
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"ray-casting backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    if isinstance(codes, torch.Tensor) and codes.device.type != "cpu":
        if backend == "numba":
            raise ValueError("the numba backend runs on CPU arrays; use backend='torch' for device tensors")
        return "torch"
    if backend == "auto":
        return "numba" if _numba_available() else "torch"
    if backend == "numba" and not _numba_available():
        raise ImportError("the numba ray-casting backend needs numba: pip install numba (or use backend='torch')")
    return backend


_NUMBA_OK: bool | None = None


def _numba_available() -> bool:
    global _NUMBA_OK
    if _NUMBA_OK is None:
        try:
            import numba  # noqa: F401
            _NUMBA_OK = True
        except ImportError:
            logger.info("numba not installed: RayIoU uses the slower vectorised torch ray caster")
            _NUMBA_OK = False
    return _NUMBA_OK


# ---- numba backend -------------------------------------------------------------------------------
_NUMBA_KERNELS = None


def _numba_kernels():
    global _NUMBA_KERNELS
    if _NUMBA_KERNELS is None:
        from flashocc.metrics import _raycast_numba
        _NUMBA_KERNELS = _raycast_numba
    return _NUMBA_KERNELS


def _cast_numba(codes: np.ndarray, num_volumes: int, origins_vox: np.ndarray,
                endpoints_vox: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    kernels = _numba_kernels()
    k, r = endpoints_vox.shape[:2]
    index = np.empty((num_volumes, k * r), dtype=np.int64)
    dist = np.empty((num_volumes, k * r), dtype=np.float64)
    sx, sy, sz = codes.shape
    flat = codes.reshape(-1)
    o = np.ascontiguousarray(origins_vox, dtype=np.float32)
    e = np.ascontiguousarray(endpoints_vox, dtype=np.float32)
    run_chunked(lambda start, stop: kernels.cast_kernel(flat, sx, sy, sz, num_volumes, o, e, start, stop, index, dist),
                k * r, threads)
    return index.reshape(num_volumes, k, r), dist.reshape(num_volumes, k, r)


def _cast_metric_numba(codes: np.ndarray, num_volumes: int, origins: np.ndarray, directions: np.ndarray,
                       grid: OccGrid, rays: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    kernels = _numba_kernels()
    index = np.empty((num_volumes, rays.size), dtype=np.int64)
    dist = np.empty((num_volumes, rays.size), dtype=np.float64)
    sx, sy, sz = codes.shape
    flat = np.ascontiguousarray(codes).reshape(-1)
    o = np.ascontiguousarray(origins, dtype=np.float64)
    d = np.ascontiguousarray(directions, dtype=np.float32)
    # float32 grid parameters widened to float64, as to_voxel_units does
    lower = np.asarray(grid.lower, dtype=np.float32).astype(np.float64)
    size = np.asarray(grid.voxel_size, dtype=np.float32).astype(np.float64)
    run_chunked(lambda start, stop: kernels.cast_metric_kernel(flat, sx, sy, sz, num_volumes, o, d, lower, size, rays,
                                                               start, stop, index, dist),
                rays.size, threads)
    return index, dist


# ---- torch backend -------------------------------------------------------------------------------
def _cast_torch(codes: torch.Tensor, num_volumes: int, origins_vox: np.ndarray,
                endpoints_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    device = codes.device
    k, r = endpoints_vox.shape[:2]
    n = k * r
    shape = torch.tensor(codes.shape, device=device)
    flat_codes = codes.reshape(-1).to(torch.int64)
    strides = torch.tensor([codes.shape[1] * codes.shape[2], codes.shape[2], 1], device=device)
    # Ray set-up in numpy float64 on the host: torch's CPU sqrt is not correctly rounded (measured:
    # last-ulp differences on ~1% of values), which would move exact ties; IEEE sqrt matches the kernel.
    o = np.repeat(origins_vox.astype(np.float64), r, axis=0)                                    # (N, 3)
    ray = endpoints_vox.reshape(n, 3).astype(np.float64) - o
    rx, ry, rz = ray[:, 0], ray[:, 1], ray[:, 2]
    d = ray / np.sqrt(rx * rx + ry * ry + rz * rz)[:, None]   # the kernel's summation order
    step_np = np.where(d >= 0, 1, -1)
    vox_np = np.trunc(o).astype(np.int64)                     # C int(): truncation toward zero
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max_np = np.where(d != 0, (vox_np + (step_np > 0)) - o, 0.0) / d
        t_delta_np = step_np / d
    t_max_np[d == 0] = DBL_MAX
    t_delta_np[d == 0] = DBL_MAX
    step = torch.as_tensor(step_np, device=device)
    vox = torch.as_tensor(vox_np, device=device)
    t_max = torch.as_tensor(t_max_np, device=device)
    t_delta = torch.as_tensor(t_delta_np, device=device)

    full = (1 << num_volumes) - 1
    out_index = torch.zeros((num_volumes, n), dtype=torch.int64, device=device)
    out_dist = torch.full((num_volumes, n), -1.0, dtype=torch.float64, device=device)
    bits = (1 << torch.arange(num_volumes, device=device))[:, None]               # (V, 1)
    # Per active ray: id, voxel, DDA state, hit bitmask, was-inside flag, last in-grid voxel and exit.
    rays = {"id": torch.arange(n, device=device), "vox": vox, "t_max": t_max, "t_delta": t_delta, "step": step,
            "found": torch.zeros(n, dtype=torch.int64, device=device),
            "was_inside": torch.zeros(n, dtype=torch.bool, device=device),
            "last_index": torch.zeros(n, dtype=torch.int64, device=device),
            "last_dist": torch.full((n,), -1.0, dtype=torch.float64, device=device)}

    def finish(sel: torch.Tensor) -> None:
        """Rays in ``sel`` stop: volumes not yet hit take the last in-grid voxel (or -1 / 0)."""
        ids = rays["id"][sel]
        missing = (rays["found"][sel][None, :] & bits) == 0                        # (V, S)
        out_index[:, ids] = torch.where(missing, rays["last_index"][sel][None, :], out_index[:, ids])
        out_dist[:, ids] = torch.where(missing, rays["last_dist"][sel][None, :], out_dist[:, ids])

    for _ in range(MAX_STEP + 1):
        if rays["id"].numel() == 0:
            break
        inside = ((rays["vox"] >= 0) & (rays["vox"] < shape)).all(-1)
        exited = ~inside & rays["was_inside"]
        if bool(exited.any()):
            finish(exited)
            rays = {key: v[~exited] for key, v in rays.items()}
            inside = inside[~exited]
        rays["was_inside"] |= inside
        # Official tie-breaking (lib/dvr/dvr.cu): X only if strictly smallest, Y over X, Z on ties.
        tx, ty, tz = rays["t_max"].unbind(-1)
        axis = torch.where(tx < ty, torch.where(tx < tz, 0, 2), torch.where(ty < tz, 1, 2))[:, None]
        exit_d = rays["t_max"].gather(1, axis)[:, 0]
        flat = (rays["vox"].clamp_min(0) * strides).sum(-1)
        code = torch.where(inside, flat_codes[flat.clamp_max(flat_codes.numel() - 1)], 0)
        new = code & ~rays["found"]
        if bool(new.any()):
            vol_idx, ray_idx = torch.nonzero(new[None, :] & bits, as_tuple=True)
            out_index[vol_idx, rays["id"][ray_idx]] = flat[ray_idx]
            out_dist[vol_idx, rays["id"][ray_idx]] = exit_d[ray_idx]
            rays["found"] = rays["found"] | new
        rays["last_index"] = torch.where(inside, flat, rays["last_index"])
        rays["last_dist"] = torch.where(inside, exit_d, rays["last_dist"])
        rays["vox"] = rays["vox"].scatter_add(1, axis, rays["step"].gather(1, axis))
        rays["t_max"] = rays["t_max"].scatter_add(1, axis, rays["t_delta"].gather(1, axis))
        done = rays["found"] == full                      # every volume hit: nothing left to learn
        if bool(done.any()):
            rays = {key: v[~done] for key, v in rays.items()}
    if rays["id"].numel():                                # stopped by MAX_STEP
        finish(torch.ones_like(rays["id"], dtype=torch.bool))
    return (out_index.reshape(num_volumes, k, r).cpu().numpy(),
            out_dist.reshape(num_volumes, k, r).cpu().numpy())

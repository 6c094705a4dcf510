"""Rulebooks of sparse 3D convolution: which input row feeds which output row through which kernel offset.

A rulebook is spconv's "native" indice-pair list (spconv 2.x ``spconv/pytorch/ops.py, get_indice_pairs``;
mmcv ``mmcv/ops/sparse_ops.py, get_indice_pairs``): for every kernel offset ``k`` the pairs (input row,
output row) it connects, here concatenated and grouped by offset (``bounds[k]:bounds[k + 1]``). Inside one
offset both the input rows and the output rows are distinct, which is what makes the scatter of each
offset free of collisions (deterministic, see ``sparse_conv``).

Geometry follows spconv (dilation 1): kernel dims in (z, y, x) order, offset ``k = (kz * kH + ky) * kW + kx``,
a cross-correlation like ``torch.nn.Conv3d``:
* ``SubMConv3d``: output sites = input sites, input ``o + k - ksize // 2`` (odd kernels; spconv's
  ``generate_subm_conv_inds`` centres the kernel and ignores padding). The centre offset pairs every site
  with itself; it is kept out of the pair list (``identity_offset``) and applied as one dense product;
* ``SparseConv3d``: input ``o * stride - padding + k``; output sites = every ``o`` with
  ``0 <= o < (in + 2 * padding - ksize) // stride + 1`` reached by an active input, sorted by (b, z, y, x).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from flashocc.errors import ConfigError, DataError

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class ConvGeometry:
    kernel_size: Triple
    stride: Triple
    padding: Triple
    subm: bool

    @property
    def volume(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]

    def out_shape(self, spatial_shape: Triple) -> Triple:
        if self.subm:
            return spatial_shape
        out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in
                    zip(spatial_shape, self.kernel_size, self.stride, self.padding))
        if min(out) < 1:
            raise ConfigError(f"sparse conv with kernel {self.kernel_size}, stride {self.stride}, padding "
                              f"{self.padding} has no output on spatial shape {spatial_shape}; got {out}")
        return out  # type: ignore[return-value]


@dataclass
class Rulebook:
    """Indice pairs of one conv geometry on one set of input sites (see module docstring)."""

    geometry: ConvGeometry
    in_indices: torch.Tensor  # (M_in, 4) int32 (b, z, y, x), the sites it was built for
    out_indices: torch.Tensor  # (M_out, 4) int32
    out_spatial_shape: Triple
    in_rows: torch.Tensor  # (P,) int64, grouped by kernel offset
    out_rows: torch.Tensor  # (P,) int64
    bounds: list[int]  # K + 1 offsets into the pair list
    identity_offset: int | None  # SubM centre: every row paired with itself, not in the list

    @property
    def num_out(self) -> int:
        return int(self.out_indices.shape[0])

    @property
    def num_pairs(self) -> int:
        """Input/output pairs including the SubM centre (the multiply-adds are num_pairs * C_in * C_out)."""
        centre = self.in_indices.shape[0] if self.identity_offset is not None else 0
        return int(self.in_rows.numel()) + centre

    def matches(self, indices: torch.Tensor) -> bool:
        if indices is self.in_indices:
            return True
        return indices.shape == self.in_indices.shape and bool(torch.equal(indices, self.in_indices))


def _kernel_offsets(kernel_size: Triple, device: torch.device) -> torch.Tensor:
    """(K, 3) offsets (kz, ky, kx) in the order of the flattened kernel."""
    grid = itertools.product(*(range(k) for k in kernel_size))
    return torch.tensor(list(grid), dtype=torch.int64, device=device).view(-1, 3)


def _linear(b: torch.Tensor, zyx: torch.Tensor, shape: Triple) -> torch.Tensor:
    d, h, w = shape
    return ((b * d + zyx[..., 0]) * h + zyx[..., 1]) * w + zyx[..., 2]


def _check_sites(indices: torch.Tensor, spatial_shape: Triple, batch_size: int) -> torch.Tensor:
    """int64 copy of the sites after checking bounds and uniqueness."""
    coords = indices.long()
    if coords.numel():
        upper = torch.tensor([batch_size, *spatial_shape], device=coords.device)
        low, high = coords.min(0).values, coords.max(0).values
        if (low < 0).any() or (high >= upper).any():
            raise DataError(f"sparse indices must lie in [0, (batch_size, D, H, W)) = [0, {tuple(upper.tolist())}) "
                            f"as (b, z, y, x); got min {low.tolist()}, max {high.tolist()}")
    return coords


def _no_duplicates(sorted_key: torch.Tensor) -> None:
    if sorted_key.numel() > 1 and bool((sorted_key[1:] == sorted_key[:-1]).any()):
        raise DataError("sparse indices hold a (b, z, y, x) site twice; voxelize so that each site is one row")


def _group_by_offset(i: torch.Tensor, o: torch.Tensor, k: torch.Tensor, volume: int):
    order = torch.argsort(k, stable=True)
    counts = torch.bincount(k, minlength=volume).tolist()
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    return i[order], o[order], bounds


def build_rulebook(indices: torch.Tensor, spatial_shape: Triple, batch_size: int, geometry: ConvGeometry) -> Rulebook:
    """Neighbour maps for ``geometry`` on the active sites ``indices`` (M, 4) (b, z, y, x)."""
    coords = _check_sites(indices, spatial_shape, batch_size)
    device, n_in = coords.device, coords.shape[0]
    offsets = _kernel_offsets(geometry.kernel_size, device)  # (K, 3)
    volume = offsets.shape[0]
    key = _linear(coords[:, 0], coords[:, 1:], spatial_shape)
    sorted_key, perm = torch.sort(key)
    _no_duplicates(sorted_key)
    shape_t = torch.tensor(spatial_shape, device=device)

    if geometry.subm:
        # Output o looks at input o + k - centre: query every (site, offset) in the sorted keys.
        centre = torch.tensor([k // 2 for k in geometry.kernel_size], device=device)
        query = coords[:, None, 1:] + (offsets - centre)[None]  # (M, K, 3)
        inside = ((query >= 0) & (query < shape_t)).all(-1)
        qkey = _linear(coords[:, 0:1], query, spatial_shape).contiguous()  # (M, K)
        pos = torch.searchsorted(sorted_key, qkey).clamp_(max=max(n_in - 1, 0))
        found = inside & (sorted_key[pos] == qkey)
        centre_k = (volume - 1) // 2  # odd kernels: the flattened centre
        found[:, centre_k] = False
        o, k = torch.nonzero(found, as_tuple=True)
        i_rows, o_rows, bounds = _group_by_offset(perm[pos[o, k]], o, k, volume)
        return Rulebook(geometry, indices, indices, spatial_shape, i_rows, o_rows, bounds, centre_k)

    # Strided: input i reaches output t / stride through offset k when t = i + padding - k is a
    # non-negative multiple of the stride inside the output grid.
    out_shape = geometry.out_shape(spatial_shape)
    stride = torch.tensor(geometry.stride, device=device)
    t = coords[:, None, 1:] + torch.tensor(geometry.padding, device=device) - offsets[None]  # (M, K, 3)
    out_zyx = torch.div(t, stride, rounding_mode="floor")
    valid = ((t >= 0) & (t % stride == 0) & (out_zyx < torch.tensor(out_shape, device=device))).all(-1)
    i, k = torch.nonzero(valid, as_tuple=True)
    okey = _linear(coords[i, 0], out_zyx[i, k], out_shape)
    out_key, o = torch.unique(okey, sorted=True, return_inverse=True)
    d, h, w = out_shape
    out_indices = torch.stack([out_key // (d * h * w), (out_key // (h * w)) % d, (out_key // w) % h, out_key % w], 1)
    i_rows, o_rows, bounds = _group_by_offset(i, o, k, volume)
    return Rulebook(geometry, indices, out_indices.int(), out_shape, i_rows, o_rows, bounds, None)

"""Rulebooks of sparse 3D convolution: which input row feeds which output row through which kernel offset.

A rulebook is spconv's "native" indice-pair list (spconv 2.x ``spconv/pytorch/ops.py, get_indice_pairs``;
mmcv ``mmcv/ops/sparse_ops.py, get_indice_pairs``): for every kernel offset ``k`` the pairs (input row,
output row) it connects, here concatenated and grouped by offset (``bounds[k]:bounds[k + 1]``). Inside one
offset both the input rows and the output rows are distinct, which is what makes the scatter of each
offset free of collisions (deterministic, see ``sparse_ops``).

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


def _check_sites(indices: torch.Tensor, spatial_shape: Triple, batch_size: int) -> torch.Tensor:
    """int64 copy of the sites after checking that they lie inside (batch_size, D, H, W)."""
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


def _bounds(k: torch.Tensor, volume: int) -> list[int]:
    bounds = [0]
    for c in torch.bincount(k, minlength=volume).tolist():
        bounds.append(bounds[-1] + c)
    return bounds


def _subm_rulebook(coords: torch.Tensor, spatial_shape: Triple, geometry: ConvGeometry,
                   indices: torch.Tensor) -> Rulebook:
    # Keys on a grid padded by the kernel's half width, so that ``key + offset`` never wraps into another
    # row or batch: an off-grid neighbour lands on a padding cell, where no site is. Sites are visited in
    # key order, so each offset's queries are sorted too (cache-friendly binary search).
    half = [k // 2 for k in geometry.kernel_size]
    dp, hp, wp = (n + 2 * c for n, c in zip(spatial_shape, half))
    zyx = coords[:, 1:] + torch.tensor(half, device=coords.device)
    key = ((coords[:, 0] * dp + zyx[:, 0]) * hp + zyx[:, 1]) * wp + zyx[:, 2]
    sorted_key, perm = torch.sort(key)
    _no_duplicates(sorted_key)
    n, volume = coords.shape[0], geometry.volume
    centre = (volume - 1) // 2  # odd kernels: the flattened centre
    # Offsets before the centre only: the pairs of offset K-1-k are those of k with input and output
    # swapped (the symmetry spconv's generate_subm_conv_inds relies on as well).
    steps = []
    for kz, ky, kx in itertools.product(*(range(k) for k in geometry.kernel_size)):
        steps.append(((kz - half[0]) * hp + (ky - half[1])) * wp + (kx - half[2]))
    step = torch.tensor(steps[:centre], dtype=torch.int64, device=coords.device)
    query = sorted_key[None, :] + step[:, None]  # (centre, M), each row sorted
    pos = torch.searchsorted(sorted_key, query).clamp_(max=max(n - 1, 0))
    found = sorted_key[pos] == query
    k, j = torch.nonzero(found, as_tuple=True)  # grouped by offset
    looker, seen = perm[j], perm[pos[k, j]]  # output site j reads input site pos through offset k
    bounds_low = _bounds(k, centre)
    counts = [hi - lo for lo, hi in zip(bounds_low[:-1], bounds_low[1:])]
    # Offsets centre+1 .. K-1 mirror centre-1 .. 0: reverse the block order, swap the roles.
    mirror = torch.cat([torch.arange(lo, hi, device=coords.device) for lo, hi in
                        reversed(list(zip(bounds_low[:-1], bounds_low[1:])))]) if k.numel() else k
    in_rows = torch.cat([seen, looker[mirror]])
    out_rows = torch.cat([looker, seen[mirror]])
    bounds = bounds_low + [bounds_low[-1]]  # the centre offset holds no listed pairs
    for c in reversed(counts):
        bounds.append(bounds[-1] + c)
    return Rulebook(geometry, indices, indices, spatial_shape, in_rows, out_rows, bounds, centre)


def _strided_rulebook(coords: torch.Tensor, spatial_shape: Triple, geometry: ConvGeometry,
                      indices: torch.Tensor) -> Rulebook:
    # Input i reaches output t / stride through offset k when t = i + padding - k is a non-negative
    # multiple of the stride inside the output grid; the test splits per axis, so it runs on (M, k_axis)
    # tables and only the final combination is (M, K).
    out_shape = geometry.out_shape(spatial_shape)
    device, n = coords.device, coords.shape[0]
    scale = [out_shape[1] * out_shape[2], out_shape[2], 1]
    valid_axes, key_axes = [], []
    for axis in range(3):
        t = coords[:, 1 + axis, None] + geometry.padding[axis] - torch.arange(geometry.kernel_size[axis], device=device)
        o = torch.div(t, geometry.stride[axis], rounding_mode="floor")
        valid_axes.append((t >= 0) & (t % geometry.stride[axis] == 0) & (o < out_shape[axis]))  # (M, k_axis)
        key_axes.append(o * scale[axis])
    kd, kh, kw = geometry.kernel_size
    valid = (valid_axes[0].t()[:, None, None, :] & valid_axes[1].t()[None, :, None, :]
             & valid_axes[2].t()[None, None, :, :]).reshape(kd * kh * kw, n)  # (K, M), offset-major
    okey = (key_axes[0].t()[:, None, None, :] + key_axes[1].t()[None, :, None, :]
            + key_axes[2].t()[None, None, :, :]).reshape(kd * kh * kw, n) + coords[:, 0] * (out_shape[0] * scale[0])
    k, i = torch.nonzero(valid, as_tuple=True)  # grouped by offset
    out_key, o = torch.unique(okey[k, i], sorted=True, return_inverse=True)
    d, h, w = out_shape
    out_indices = torch.stack([out_key // (d * h * w), (out_key // (h * w)) % d, (out_key // w) % h, out_key % w], 1)
    return Rulebook(geometry, indices, out_indices.int(), out_shape, i, o, _bounds(k, kd * kh * kw), None)


def build_rulebook(indices: torch.Tensor, spatial_shape: Triple, batch_size: int, geometry: ConvGeometry) -> Rulebook:
    """Indice pairs for ``geometry`` on the active sites ``indices`` (M, 4) (b, z, y, x)."""
    coords = _check_sites(indices, spatial_shape, batch_size)
    if geometry.subm:
        return _subm_rulebook(coords, spatial_shape, geometry, indices)
    d, h, w = spatial_shape
    _no_duplicates(torch.sort(((coords[:, 0] * d + coords[:, 1]) * h + coords[:, 2]) * w + coords[:, 3]).values)
    return _strided_rulebook(coords, spatial_shape, geometry, indices)

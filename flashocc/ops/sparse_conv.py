"""Sparse 3D convolution in plain PyTorch: ``SparseTensor``, ``SubMConv3d``, ``SparseConv3d``.

A drop-in for the parts of spconv (traveller59/spconv 2.x ``spconv/pytorch/conv.py``, ``core.py``) that
mmdet3d's ``SparseEncoder`` (``mmdet3d/models/middle_encoders/sparse_encoder.py``) uses, with no compiled
extension. The weights are stored like ``torch.nn.Conv3d``: (C_out, C_in, kD, kH, kW), kernel dims in
(z, y, x) order; ``sparse_weight_from_spconv2`` / ``sparse_weight_from_spconv1`` convert the spconv layouts.
Only dilation 1 and groups 1 (all that ``SparseEncoder`` needs).

The product runs per kernel offset, spconv's native "gather -> matmul -> scatter" on the rulebook
(``sparse_rules``). It is deterministic on CPU and CUDA at any thread count because no two rows of one
scatter collide: inside one kernel offset every output row (forward) and every input row (input
gradient) appears at most once, so each ``index_add_`` adds one value per element, and offsets are added
in a fixed order. The weight gradient is one matrix product per offset. Nothing depends on atomics'
ordering, thread scheduling or the thread count.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flashocc.errors import CheckpointMismatchError, ConfigError, DataError
from flashocc.ops.sparse_rules import ConvGeometry, Rulebook, Triple, build_rulebook

__all__ = [
    "SparseConv3d", "SparseModule", "SparseSequential", "SparseTensor", "SubMConv3d", "sparse_conv",
    "sparse_weight_from_spconv1", "sparse_weight_from_spconv2", "sparse_weight_to_spconv2",
]


class SparseTensor:
    """Active sites of a (B, C, D, H, W) grid: ``features`` (M, C), ``indices`` (M, 4) int32 as (b, z, y, x).

    ``indice_dict`` caches rulebooks by ``indice_key``; tensors produced by a conv share it (a copy with
    the new entry, as spconv's ``SparseConvTensor``), so later layers with the same key reuse them.
    """

    def __init__(self, features: torch.Tensor, indices: torch.Tensor, spatial_shape: Sequence[int],
                 batch_size: int, indice_dict: dict | None = None) -> None:
        if features.dim() != 2:
            raise DataError(f"SparseTensor features must be (M, C); got shape {tuple(features.shape)}")
        if indices.dim() != 2 or indices.shape[1] != 4 or indices.shape[0] != features.shape[0]:
            raise DataError(f"SparseTensor indices must be (M, 4) = (b, z, y, x) with M = {features.shape[0]} "
                            f"rows like features; got shape {tuple(indices.shape)}")
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise DataError(f"SparseTensor indices must be integers; got {indices.dtype}")
        if len(spatial_shape) != 3:
            raise DataError(f"SparseTensor spatial_shape must be (D, H, W); got {list(spatial_shape)}")
        self.features = features
        self.indices = indices if indices.dtype == torch.int32 else indices.int()
        self.spatial_shape: Triple = (int(spatial_shape[0]), int(spatial_shape[1]), int(spatial_shape[2]))
        self.batch_size = int(batch_size)
        self.indice_dict: dict = {} if indice_dict is None else indice_dict

    def replace_feature(self, features: torch.Tensor) -> SparseTensor:
        """Same sites and rulebook cache, new features (M, C')."""
        return SparseTensor(features, self.indices, self.spatial_shape, self.batch_size, self.indice_dict)

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """(B, C, D, H, W) (or (B, D, H, W, C)), zeros at inactive sites; differentiable."""
        b = self.indices.long()
        out = self.features.new_zeros(self.batch_size, *self.spatial_shape, self.features.shape[1])
        out = out.index_put((b[:, 0], b[:, 1], b[:, 2], b[:, 3]), self.features)
        return out.permute(0, 4, 1, 2, 3).contiguous() if channels_first else out

    def __repr__(self) -> str:
        return (f"SparseTensor(sites={self.features.shape[0]}, channels={self.features.shape[1]}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size})")


class _SparseConvFunction(torch.autograd.Function):
    """features (M_in, C_in), weight (K, C_in, C_out) -> (M_out, C_out) over one rulebook."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, rulebook: Rulebook) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.rulebook = rulebook
        rb = rulebook
        if rb.identity_offset is not None:  # SubM centre: every site feeds itself
            out = features @ weight[rb.identity_offset]
        else:
            out = features.new_zeros(rb.num_out, weight.shape[2])
        for k in range(weight.shape[0]):
            lo, hi = rb.bounds[k], rb.bounds[k + 1]
            if hi > lo:
                rows_in, rows_out = rb.in_rows[lo:hi], rb.out_rows[lo:hi]
                out.index_add_(0, rows_out, features.index_select(0, rows_in) @ weight[k])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, weight = ctx.saved_tensors
        rb: Rulebook = ctx.rulebook
        grad_out = grad_out.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad_w = None
        weight_t = weight.transpose(1, 2)  # (K, C_out, C_in)
        if need_w:
            grad_w = torch.zeros_like(weight)
        if need_x:
            grad_x = (grad_out @ weight_t[rb.identity_offset] if rb.identity_offset is not None
                      else torch.zeros_like(features))
        if need_w and rb.identity_offset is not None:
            grad_w[rb.identity_offset] = features.t() @ grad_out
        for k in range(weight.shape[0]):
            lo, hi = rb.bounds[k], rb.bounds[k + 1]
            if hi == lo:
                continue
            rows_in, rows_out = rb.in_rows[lo:hi], rb.out_rows[lo:hi]
            g = grad_out.index_select(0, rows_out)  # (P_k, C_out)
            if need_x:
                grad_x.index_add_(0, rows_in, g @ weight_t[k])
            if need_w:
                grad_w[k] = features.index_select(0, rows_in).t() @ g
        return grad_x, grad_w, None


def sparse_conv(features: torch.Tensor, weight: torch.Tensor, rulebook: Rulebook) -> torch.Tensor:
    """Apply a (C_out, C_in, kD, kH, kW) weight to features (M_in, C_in) over ``rulebook``: (M_out, C_out)."""
    c_out, c_in = weight.shape[:2]
    w = weight.permute(2, 3, 4, 1, 0).reshape(-1, c_in, c_out).contiguous()  # (K, C_in, C_out)
    return _SparseConvFunction.apply(features.contiguous(), w.to(features.dtype), rulebook)


def _triple(value: int | Sequence[int], name: str) -> Triple:
    t = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != 3:
        raise ConfigError(f"sparse conv {name} must be an int or 3 ints (z, y, x); got {value!r}")
    return t  # type: ignore[return-value]


class SparseModule(nn.Module):
    """A module that takes and returns a ``SparseTensor`` (``SparseSequential`` passes it whole)."""


class _SparseConv3d(SparseModule):
    subm = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, bias: bool = True, indice_key: str | None = None,
                 backend: str = "torch") -> None:
        super().__init__()
        kernel, stride_t, pad = _triple(kernel_size, "kernel_size"), _triple(stride, "stride"), _triple(padding, "padding")
        if _triple(dilation, "dilation") != (1, 1, 1):
            raise ConfigError(f"sparse conv dilation must be 1 (the only value SparseEncoder uses); got {dilation!r}")
        if min(kernel) < 1 or min(stride_t) < 1 or min(pad) < 0:
            raise ConfigError(f"sparse conv needs kernel_size >= 1, stride >= 1, padding >= 0; "
                              f"got {kernel}, {stride_t}, {pad}")
        if self.subm and (stride_t != (1, 1, 1) or any(k % 2 == 0 for k in kernel)
                          or pad not in ((0, 0, 0), tuple(k // 2 for k in kernel))):
            raise ConfigError(f"SubMConv3d keeps its input sites: it needs stride 1, an odd kernel and padding "
                              f"kernel_size // 2 (or 0); got kernel {kernel}, stride {stride_t}, padding {pad}")
        if backend not in ("torch", "spconv"):
            raise ConfigError(f"sparse conv backend must be 'torch' or 'spconv'; got {backend!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.geometry = ConvGeometry(kernel, stride_t, tuple(k // 2 for k in kernel) if self.subm else pad, self.subm)
        self.indice_key = indice_key
        self.backend = backend
        # The layout and initialisation of torch.nn.Conv3d (spconv's is the same up to the permutation).
        ref = nn.Conv3d(in_channels, out_channels, kernel, bias=bias)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None

    @property
    def kernel_size(self) -> Triple:
        return self.geometry.kernel_size

    def rulebook(self, x: SparseTensor) -> Rulebook:
        """The cached rulebook of ``indice_key`` for these sites, or a new one (cached when keyed)."""
        key = self.indice_key
        rb = x.indice_dict.get(key) if key is not None else None
        if rb is not None:
            if rb.geometry != self.geometry:
                raise ConfigError(f"indice_key {key!r} was built for {rb.geometry} but this layer has "
                                  f"{self.geometry}; give layers of another geometry their own key")
            if rb.matches(x.indices):
                return rb
            raise ConfigError(f"indice_key {key!r} was built on other sites than this layer's input; "
                              "reuse a key only between layers that see the same sites")
        return build_rulebook(x.indices, x.spatial_shape, x.batch_size, self.geometry)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.features.shape[1] != self.in_channels:
            raise DataError(f"{type(self).__name__} expects {self.in_channels} input channels; "
                            f"got features of shape {tuple(x.features.shape)}")
        if self.backend == "spconv":
            from flashocc.ops.sparse_spconv import spconv_forward

            return spconv_forward(self, x)
        rb = self.rulebook(x)
        out = sparse_conv(x.features, self.weight, rb)
        if self.bias is not None:
            out = out + self.bias
        cache = dict(x.indice_dict)
        if self.indice_key is not None:
            cache[self.indice_key] = rb
        return SparseTensor(out, rb.out_indices, rb.out_spatial_shape, x.batch_size, cache)

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={g.kernel_size}, stride={g.stride}, "
                f"padding={g.padding}, bias={self.bias is not None}, indice_key={self.indice_key!r}"
                + (f", backend={self.backend!r}" if self.backend != "torch" else ""))


class SubMConv3d(_SparseConv3d):
    """Submanifold conv (spconv ``SubMConv3d``): outputs exactly at the input sites."""

    subm = True


class SparseConv3d(_SparseConv3d):
    """Strided / padded sparse conv (spconv ``SparseConv3d``): outputs wherever an input reaches."""


class SparseSequential(nn.Sequential):
    """spconv ``SparseSequential``: sparse modules get the ``SparseTensor``, others (BatchNorm1d, ReLU,
    ...) its features. Children are numbered like ``nn.Sequential``, so mmdet3d's names (``0.weight``,
    ``1.running_mean``) carry over."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        for module in self:
            x = module(x) if isinstance(module, (SparseModule, SparseSequential)) else x.replace_feature(module(x.features))
        return x


def sparse_weight_from_spconv2(weight: torch.Tensor) -> torch.Tensor:
    """spconv 2.x layout (C_out, kD, kH, kW, C_in) -> ours (C_out, C_in, kD, kH, kW)."""
    _check_5d(weight, "spconv-2")
    return weight.permute(0, 4, 1, 2, 3).contiguous()


def sparse_weight_from_spconv1(weight: torch.Tensor) -> torch.Tensor:
    """mmcv / spconv 1.x layout (kD, kH, kW, C_in, C_out) -> ours (C_out, C_in, kD, kH, kW)."""
    _check_5d(weight, "spconv-1")
    return weight.permute(4, 3, 0, 1, 2).contiguous()


def sparse_weight_to_spconv2(weight: torch.Tensor) -> torch.Tensor:
    """Ours (C_out, C_in, kD, kH, kW) -> spconv 2.x (C_out, kD, kH, kW, C_in)."""
    _check_5d(weight, "flashocc")
    return weight.permute(0, 2, 3, 4, 1).contiguous()


def _check_5d(weight: torch.Tensor, layout: str) -> None:
    if weight.dim() != 5:
        raise CheckpointMismatchError(f"a {layout} sparse-conv weight must have 5 dims; got shape {tuple(weight.shape)}")

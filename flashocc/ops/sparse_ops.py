"""The sparse tensor and the sparse conv product, shared by the modules (``sparse_conv``) and the optional
spconv backend (``sparse_spconv``).

The product runs per kernel offset, spconv's native "gather -> matmul -> scatter" on the rulebook
(``sparse_rules``; spconv 2.x ``spconv/pytorch/ops.py, indice_conv``). It is deterministic on CPU and
CUDA at any thread count because no two rows of one scatter collide: inside one kernel offset every
output row (forward) and every input row (input gradient) appears at most once, so each ``index_add_``
adds one value per element, and the offsets are added in a fixed order. On CUDA ``index_add_`` uses
atomics, but with one add per element their order cannot change the sum (and under
``torch.use_deterministic_algorithms(True)`` torch switches to its deterministic kernel anyway). The
weight gradient is one matrix product per offset. Nothing depends on atomics' order, thread scheduling
or the thread count (tested bitwise at 1 and 2 CPU threads).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from flashocc.errors import CheckpointMismatchError, ConfigError, DataError
from flashocc.ops.sparse_rules import Rulebook, Triple

__all__ = ["SparseTensor", "sparse_conv", "sparse_weight_from_spconv1", "sparse_weight_from_spconv2",
           "sparse_weight_to_spconv2"]


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

    def sort_sites(self) -> SparseTensor:
        """The same sites with rows in (b, z, y, x) order and a fresh rulebook cache.

        Voxelization returns voxels in first-hit order; on sorted rows the convs' gathers and scatters
        walk memory nearly in order, about 1.4x faster on the 10-sweep benchmark (docs/benchmarks.md,
        "Sparse convolution"). Strided convs already output sorted rows.
        """
        c = self.indices.long()
        d, h, w = self.spatial_shape
        order = torch.argsort(((c[:, 0] * d + c[:, 1]) * h + c[:, 2]) * w + c[:, 3])
        return SparseTensor(self.features[order], self.indices[order], self.spatial_shape, self.batch_size)

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
    @torch.autograd.function.once_differentiable
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
    if weight.dim() != 5 or tuple(weight.shape[2:]) != rulebook.geometry.kernel_size or features.shape[1] != c_in:
        raise ConfigError(f"sparse_conv: weight {tuple(weight.shape)} does not fit the rulebook's kernel "
                          f"{rulebook.geometry.kernel_size} and features {tuple(features.shape)}; expected "
                          f"(C_out, {features.shape[1]}, *{rulebook.geometry.kernel_size})")
    w = weight.permute(2, 3, 4, 1, 0).reshape(-1, c_in, c_out).contiguous()  # (K, C_in, C_out)
    return _SparseConvFunction.apply(features.contiguous(), w.to(features.dtype), rulebook)


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

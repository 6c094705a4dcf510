"""Sparse 3D convolution modules in plain PyTorch: ``SubMConv3d``, ``SparseConv3d``, ``SparseSequential``.

A drop-in for the parts of spconv (traveller59/spconv 2.x ``spconv/pytorch/conv.py``, ``modules.py``) that
mmdet3d's ``SparseEncoder`` (``mmdet3d/models/middle_encoders/sparse_encoder.py``) uses, with no compiled
extension. The weights are stored like ``torch.nn.Conv3d``: (C_out, C_in, kD, kH, kW), kernel dims in
(z, y, x) order; ``sparse_weight_from_spconv2`` / ``sparse_weight_from_spconv1`` convert the spconv layouts.
Only dilation 1 and groups 1 (all that ``SparseEncoder`` needs). The product and its determinism are in
``sparse_ops``; ``backend="spconv"`` runs spconv 2.x instead (``sparse_spconv``).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from flashocc.errors import ConfigError, DataError
from flashocc.ops.sparse_ops import (SparseTensor, sparse_conv, sparse_weight_from_spconv1, sparse_weight_from_spconv2,
                                     sparse_weight_to_spconv2)
from flashocc.ops.sparse_rules import ConvGeometry, Rulebook, Triple, build_rulebook

__all__ = [
    "SparseConv3d", "SparseModule", "SparseSequential", "SparseTensor", "SubMConv3d", "sparse_conv",
    "sparse_weight_from_spconv1", "sparse_weight_from_spconv2", "sparse_weight_to_spconv2",
]


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
        kernel, stride_t = _triple(kernel_size, "kernel_size"), _triple(stride, "stride")
        pad = _triple(padding, "padding")
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
            if isinstance(module, (SparseModule, SparseSequential)):
                x = module(x)
            else:
                x = x.replace_feature(module(x.features))
        return x

"""Optional spconv 2.x backend for ``SubMConv3d`` / ``SparseConv3d`` (``backend="spconv"``), same weights.

Install with ``pip install "flashocc[spconv]"`` (the CPU wheel ``spconv`` 2.3.8 has a CPython 3.11 build;
CUDA builds are ``spconv-cuXXX``). Only for reproducing EFFOcc checkpoints against the library they were
trained with; the default ``backend="torch"`` needs no compiled op.

Two safeguards, because spconv's CPU build has been seen to be wrong:
* spconv 2.3.8 on CPU is reported to give run-to-run different results with more than one torch thread
  (EFFOcc users, up to 3 % error), so on CPU its forward and backward run under
  ``torch.set_num_threads(1)``;
* before first use on a device, ``spconv_self_check`` compares it with the torch path on a small grid
  and the backend refuses (``ConfigError``) when they disagree. On the development machine (torch 2.13,
  spconv 2.3.8 / cumm 0.7.11 and spconv 2.3.6 / cumm 0.4.11 CPU wheels) spconv's CPU indice pairs are
  wrong even at one thread, so the backend refuses there (docs/benchmarks.md, "Sparse convolution").
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch

from flashocc.errors import ConfigError
from flashocc.ops.sparse_ops import SparseTensor, sparse_conv, sparse_weight_to_spconv2
from flashocc.ops.sparse_rules import ConvGeometry, build_rulebook

SPCONV_KEY = "spconv"  # our indice_dict keeps spconv's own rulebooks under ("spconv", key)


def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:  # ImportError, or a broken cumm build that fails at import
        return False
    return True


def _import_spconv():
    try:
        import spconv.pytorch as spconv
    except Exception as exc:
        raise ConfigError(f"sparse conv backend 'spconv' needs spconv 2.x ({exc}); install it with "
                          "pip install \"flashocc[spconv]\", or use backend='torch'") from exc
    return spconv


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _PinnedThreads(torch.autograd.Function):
    """Run ``fn(features, weight) -> out`` on its own small graph, forward and backward under one CPU
    thread (spconv's backward runs later, outside any context the caller could hold)."""

    @staticmethod
    def forward(ctx, fn: Callable, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        f = features.detach().requires_grad_(features.requires_grad)
        w = weight.detach().requires_grad_(weight.requires_grad)
        with torch.enable_grad(), one_thread_on_cpu(features.device):
            out = fn(f, w)
        ctx.graph = (f, w, out)
        return out.detach()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f, w, out = ctx.graph
        inputs = [t for t in (f, w) if t.requires_grad]
        if not inputs or not out.requires_grad:
            return None, None, None
        with one_thread_on_cpu(f.device):
            grads = list(torch.autograd.grad(out, inputs, grad.contiguous(), allow_unused=True))
        grad_f = grads.pop(0) if f.requires_grad else None
        grad_w = grads.pop(0) if w.requires_grad else None
        return None, grad_f, grad_w


def _spconv_module(module, spconv):
    sp_mod = module.__dict__.get("_spconv_module")  # kept out of the state dict: its own weight is unused
    if sp_mod is None:
        g = module.geometry
        cls = spconv.SubMConv3d if g.subm else spconv.SparseConv3d
        with torch.random.fork_rng(devices=[]):  # its weight init must not move the caller's RNG
            sp_mod = cls(module.in_channels, module.out_channels, g.kernel_size, stride=g.stride, padding=g.padding,
                         bias=False, indice_key=module.indice_key, algo=spconv.ConvAlgo.Native)
        module.__dict__["_spconv_module"] = sp_mod
    return sp_mod


def _run_spconv(module, x: SparseTensor) -> SparseTensor:
    """``module`` is anything with the conv modules' attributes (geometry, channels, indice_key, training,
    weight, bias)."""
    spconv = _import_spconv()
    sp_mod = _spconv_module(module, spconv)
    cached = {k[1]: v for k, v in x.indice_dict.items() if isinstance(k, tuple) and k[0] == SPCONV_KEY}
    result = {}

    def run(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        st = spconv.SparseConvTensor(features, x.indices, list(x.spatial_shape), x.batch_size, indice_dict=cached)
        out = sp_mod._conv_forward(module.training, st, sparse_weight_to_spconv2(weight), None)
        result["tensor"] = out
        return out.features

    feats = _PinnedThreads.apply(run, x.features.contiguous(), module.weight.to(x.features.dtype))
    out = result["tensor"]
    if module.bias is not None:
        feats = feats + module.bias
    cache = dict(x.indice_dict)
    for key, value in out.indice_dict.items():
        cache[(SPCONV_KEY, key)] = value
    return SparseTensor(feats, out.indices, tuple(out.spatial_shape), x.batch_size, cache)


_SELF_CHECK: dict[str, str | None] = {}  # device type -> None (spconv agrees) or what was measured


def spconv_self_check(device: torch.device | str = "cpu") -> str | None:
    """Once per device type: spconv against the torch path (itself tested against ``nn.Conv3d``) on a
    small random grid, a SubM and a strided 3x3x3 conv. None when they agree, else the measured error.

    Why: see the module docstring; a wrong backend must fail loudly, not train on garbage.
    """
    device = torch.device(device)
    if device.type in _SELF_CHECK:
        return _SELF_CHECK[device.type]
    _import_spconv()
    g = torch.Generator().manual_seed(0)
    indices = torch.nonzero(torch.rand(2, 8, 24, 24, generator=g) < 0.1).int().to(device)
    x = SparseTensor(torch.randn(len(indices), 4, generator=g).to(device), indices, (8, 24, 24), 2)
    weight = torch.randn(4, 4, 3, 3, 3, generator=g).to(device)
    message = None
    with torch.no_grad():
        for geometry in (ConvGeometry((3, 3, 3), (1, 1, 1), (1, 1, 1), True),
                         ConvGeometry((3, 3, 3), (2, 2, 2), (1, 1, 1), False)):
            rb = build_rulebook(x.indices, x.spatial_shape, x.batch_size, geometry)
            ref = SparseTensor(sparse_conv(x.features, weight, rb), rb.out_indices, rb.out_spatial_shape, 2).dense()
            conv = SimpleNamespace(geometry=geometry, in_channels=4, out_channels=4, indice_key=None,
                                   training=False, weight=weight, bias=None)
            got = _run_spconv(conv, x).dense()
            err = float((got - ref).abs().max() / ref.abs().max()) if got.shape == ref.shape else float("inf")
            if not err <= 1e-4:
                version = getattr(sys.modules.get("spconv"), "__version__", "?")
                kind = "SubMConv3d" if geometry.subm else "SparseConv3d"
                message = (f"spconv {version} disagrees with the dense-checked torch sparse conv on {device.type} "
                           f"({kind}: max error {err:.0%} of the largest output)")
                break
    _SELF_CHECK[device.type] = message
    return message


def spconv_forward(module, x):
    """``module`` (our SubMConv3d / SparseConv3d) applied to ``x`` through spconv, with our weight layout,
    after a one-time check that spconv computes the same conv on this device."""
    problem = spconv_self_check(x.features.device)
    if problem is not None:
        raise ConfigError(f"sparse conv backend 'spconv' refused: {problem}; use backend='torch' (same weights)")
    return _run_spconv(module, x)

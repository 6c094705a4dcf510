import sys

import pytest
import torch

from flashocc.errors import ConfigError
from flashocc.ops import sparse_spconv
from flashocc.ops.sparse_conv import SparseConv3d, SparseTensor, SubMConv3d
from flashocc.ops.sparse_spconv import _PinnedThreads, one_thread_on_cpu, spconv_available, spconv_self_check


def _sparse(seed=0):
    g = torch.Generator().manual_seed(seed)
    indices = torch.nonzero(torch.rand(2, 8, 20, 20, generator=g) < 0.15).int()
    return SparseTensor(torch.randn(len(indices), 4, generator=g), indices, (8, 20, 20), 2)


def test_pinned_threads_run_forward_and_backward_on_one_cpu_thread():
    seen = []

    def fn(f, w):
        seen.append(("forward", torch.get_num_threads()))
        out = f @ w
        out.register_hook(lambda g: seen.append(("backward", torch.get_num_threads())))
        return out

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        f = torch.randn(5, 3, requires_grad=True)
        w = torch.randn(3, 2, requires_grad=True)
        out = _PinnedThreads.apply(fn, f, w)
        assert torch.get_num_threads() == 2
        out.sum().backward()
        assert seen == [("forward", 1), ("backward", 1)] and torch.get_num_threads() == 2
        torch.testing.assert_close(f.grad, torch.ones(5, 2) @ w.detach().t())
        torch.testing.assert_close(w.grad, f.detach().t() @ torch.ones(5, 2))
        with one_thread_on_cpu(torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_spconv_backend_without_spconv_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "spconv.pytorch", None)  # import now raises ImportError
    monkeypatch.setattr(sparse_spconv, "_SELF_CHECK", {})
    with pytest.raises(ConfigError, match=r"pip install \"flashocc\[spconv\]\""):
        SubMConv3d(4, 4, 3, padding=1, backend="spconv")(_sparse())
    assert not spconv_available()


@pytest.mark.skipif(not spconv_available(), reason="spconv is not installed (optional: pip install 'flashocc[spconv]')")
def test_spconv_backend_matches_torch_or_refuses():
    x = _sparse(1)
    problem = spconv_self_check("cpu")
    for cls, kwargs in ((SubMConv3d, {"padding": 1, "indice_key": "s"}), (SparseConv3d, {"stride": 2, "padding": 1})):
        torch.manual_seed(0)
        ours = cls(4, 6, 3, bias=True, **kwargs)
        theirs = cls(4, 6, 3, bias=True, backend="spconv", **kwargs)
        theirs.load_state_dict(ours.state_dict())  # same weights, our layout
        if problem is not None:
            # The measured disagreement is reported, never silently used (see sparse_spconv's docstring).
            with pytest.raises(ConfigError, match="refused: spconv .* disagrees"):
                theirs(x)
            continue
        feats = x.features.clone().requires_grad_()
        a, b = ours(x.replace_feature(feats)), theirs(x.replace_feature(feats))
        torch.testing.assert_close(b.dense(), a.dense(), rtol=1e-4, atol=1e-5)
        grad_a = torch.autograd.grad((a.dense() ** 2).sum(), [feats, ours.weight])
        grad_b = torch.autograd.grad((b.dense() ** 2).sum(), [feats, theirs.weight])
        for ga, gb in zip(grad_a, grad_b):
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-4)

"""flashocc.device: device choice, DDP backend, autocast decisions, RNG states, memory and sync.

Runs on the CPU; accelerators are stood in for by a fake device module (what ``torch.get_device_module``
returns), patched into flashocc.device, so the accelerator branches run here too."""
import importlib.util
import random
import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist

import flashocc.device as fd
from flashocc.deploy.bench import BenchReport, format_table
from flashocc.deploy.timing import PeakMemory
from flashocc.errors import ConfigError

MiB = 2**20


class FakeAccelerator(types.SimpleNamespace):
    """A device module with ``count`` devices, per-device RNG states and allocator counters."""

    def __init__(self, count=2, bf16=True, stats=True):
        super().__init__(rng=[torch.tensor([i], dtype=torch.uint8) for i in range(count)], syncs=0,
                         allocated=100 * MiB, peak=100 * MiB, current=None)
        self.count, self.bf16 = count, bf16
        if stats:
            self.memory_allocated = lambda device=None: self.allocated
            self.max_memory_allocated = lambda device=None: self.peak
            self.reset_peak_memory_stats = lambda device=None: setattr(self, "peak", self.allocated)

    def is_available(self):
        return True

    def device_count(self):
        return self.count

    def is_bf16_supported(self):
        return self.bf16

    def set_device(self, device):
        self.current = device

    def synchronize(self, device=None):
        self.syncs += 1

    def get_rng_state_all(self):
        return [s.clone() for s in self.rng]

    def set_rng_state_all(self, states):
        for i, s in enumerate(states):
            self.rng[i] = s.clone()


@pytest.fixture
def fake_cuda(monkeypatch):
    """This process "has" two CUDA devices, seen through the pre-2.6 path (no torch.accelerator)."""
    fake, real = FakeAccelerator(), fd.device_module
    monkeypatch.setattr(fd, "device_module", lambda kind: fake if kind == "cuda" else real(kind))
    monkeypatch.setattr(fd, "accelerator_type", lambda: "cuda")
    monkeypatch.delattr(torch, "accelerator", raising=False)
    return fake


# ---- device choice -----------------------------------------------------------------------------
def test_cpu_and_auto_on_this_host():
    assert fd.resolve_device("cpu") == fd.resolve_device(" CPU ") == torch.device("cpu")
    acc = fd.accelerator_type()
    assert fd.resolve_device("auto") == (torch.device(acc, 0) if acc else torch.device("cpu"))


def test_unknown_device_name_lists_what_is_expected():
    with pytest.raises(ConfigError, match=r"--device bogus: not a device type torch knows; expected auto, cpu, cuda"):
        fd.resolve_device("bogus")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_unavailable_device_names_it_and_what_is_available():
    with pytest.raises(ConfigError, match=r"--device cuda:1: no cuda device is available on this machine "
                                          r"\(available: cpu"):
        fd.resolve_device("cuda:1")


@pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu is installed")
def test_npu_without_torch_npu_says_how_to_install_it():
    with pytest.raises(ConfigError, match=r"--device npu: torch_npu is not installed \(pip install torch_npu\)"):
        fd.resolve_device("npu")


def test_a_plugin_that_fails_to_import_is_reported_not_raised(tmp_path, monkeypatch):
    (tmp_path / "broken_npu_plugin.py").write_text("raise ImportError('built for torch 2.1')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(fd, "PLUGINS", {"npu": "broken_npu_plugin"})
    fd._load_plugins.cache_clear()
    try:
        assert fd.resolve_device("auto").type == (fd.accelerator_type() or "cpu")  # auto carries on without it
        with pytest.raises(ConfigError, match=r"--device npu: import broken_npu_plugin failed: ImportError: "
                                              r"built for torch 2.1"):
            fd.resolve_device("npu")
    finally:
        fd._load_plugins.cache_clear()
        sys.modules.pop("broken_npu_plugin", None)


def test_accelerator_index_comes_from_the_spec_or_local_rank(fake_cuda):
    assert fd.resolve_device("auto") == torch.device("cuda", 0)
    assert fd.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert fd.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert fd.resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"cuda:2 does not exist \(LOCAL_RANK 0\); this machine has 2 cuda"):
        fd.resolve_device("cuda:2")
    with pytest.raises(ConfigError, match=r"--device auto: cuda:2 does not exist \(LOCAL_RANK 2\)"):
        fd.resolve_device("auto", local_rank=2)
    fd.set_current_device(torch.device("cuda", 1))
    assert fake_cuda.current == torch.device("cuda", 1)


def test_setup_distributed_single_process_checks_the_device(monkeypatch):
    from flashocc.engine.distributed import setup_distributed

    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup_distributed("cpu").device == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device tpu9"):
        setup_distributed("tpu9")


# ---- DDP backend ---------------------------------------------------------------------------------
def test_backend_follows_the_device(monkeypatch):
    assert fd.ddp_backend(torch.device("cpu")) == "gloo"
    assert fd.ddp_backend("cuda:3") == "nccl"
    monkeypatch.setitem(dist.Backend.default_device_backend_map, "hpu", "hccl")  # what a plug-in registers
    assert fd.ddp_backend("hpu") == "hccl"
    with pytest.raises(ConfigError, match="torch.distributed has no backend registered for mtia devices"):
        fd.ddp_backend("mtia")


def test_backend_on_torch_without_get_default_backend_for_device(monkeypatch):
    monkeypatch.delattr(dist, "get_default_backend_for_device", raising=False)
    monkeypatch.setitem(dist.Backend.default_device_backend_map, "npu", "hccl")  # torch_npu's registration
    assert fd.ddp_backend("npu") == "hccl"
    assert fd.ddp_backend(torch.device("cuda", 0)) == "nccl"
    with pytest.raises(ConfigError, match="mtia"):
        fd.ddp_backend("mtia")


def test_collective_tensors_live_where_the_backend_reduces(monkeypatch):
    monkeypatch.setitem(dist.Backend.default_device_backend_map, "mps", "gloo")
    assert fd.collective_device(torch.device("cpu")) == torch.device("cpu")
    assert fd.collective_device(torch.device("cuda", 1)) == torch.device("cuda", 1)   # NCCL
    assert fd.collective_device(torch.device("mps", 0)) == torch.device("cpu")        # gloo
    assert fd.collective_device(torch.device("mtia", 0)) == torch.device("cpu")       # no backend


# ---- autocast ------------------------------------------------------------------------------------
@pytest.mark.parametrize("amp, kind, bf16, dtype, noted", [
    ("none", "cpu", True, None, False),
    ("bf16", "cpu", True, None, True),     # the CPU trains in fp32, and says so
    ("fp16", "cpu", True, None, True),
    ("none", "cuda", True, None, False),
    ("bf16", "cuda", True, torch.bfloat16, False),
    ("fp16", "cuda", False, torch.float16, False),
    ("bf16", "meta", True, None, True),    # no autocast for the type at all
])
def test_amp_decision_table(fake_cuda, amp, kind, bf16, dtype, noted):
    fake_cuda.bf16 = bf16
    plan = fd.amp_plan(amp, torch.device(kind))
    assert plan.dtype == dtype and plan.device_type == kind
    assert bool(plan.note) == noted
    if noted:
        assert f"train.amp={amp} is not applied" in plan.note and "fp32" in plan.note


def test_bf16_on_a_device_without_it_and_unknown_amp_are_config_errors(fake_cuda):
    fake_cuda.bf16 = False
    with pytest.raises(ConfigError, match="train.amp=bf16: this cuda device has no bfloat16 support; use train.amp=fp16"):
        fd.amp_plan("bf16", torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="train.amp='fp8': expected one of none, bf16, fp16"):
        fd.amp_plan("fp8", torch.device("cpu"))


def test_autocast_region_and_grad_scaler_follow_the_plan():
    assert not fd.autocast_enabled("cpu") and not fd.autocast_enabled("meta")
    with fd.AmpPlan("cpu").autocast():
        assert not fd.autocast_enabled("cpu")
    with fd.AmpPlan("cpu", torch.bfloat16).autocast():
        assert fd.autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert fd.AmpPlan("cpu", torch.float16).grad_scaler().is_enabled()   # loss scaling for fp16 only
    assert not fd.AmpPlan("cpu", torch.bfloat16).grad_scaler().is_enabled()
    assert not fd.AmpPlan("cpu").grad_scaler().is_enabled()


# ---- RNG states ----------------------------------------------------------------------------------
def test_cpu_host_has_no_accelerator_rng_state(monkeypatch):
    monkeypatch.setattr(fd, "accelerator_type", lambda: None)
    assert fd.accelerator_rng_state() == {}
    fd.set_accelerator_rng_state({"cuda": [torch.zeros(1, dtype=torch.uint8)]})  # saved on a GPU, resumed here


def test_accelerator_rng_round_trip_keeps_the_checkpoint_key(fake_cuda):
    saved = fd.accelerator_rng_state()
    assert list(saved) == ["cuda"] and [int(s) for s in saved["cuda"]] == [0, 1]  # the key old checkpoints use
    fake_cuda.rng = [torch.tensor([7], dtype=torch.uint8), torch.tensor([8], dtype=torch.uint8)]
    fd.set_accelerator_rng_state({"torch": torch.get_rng_state(), **saved})
    assert [int(s) for s in fake_cuda.rng] == [0, 1]
    # saved on four devices, resumed on two: the two that exist get theirs
    fd.set_accelerator_rng_state({"cuda": [torch.tensor([i + 4], dtype=torch.uint8) for i in range(4)]})
    assert [int(s) for s in fake_cuda.rng] == [4, 5]
    fd.set_accelerator_rng_state({"npu": [torch.tensor([9], dtype=torch.uint8)]})  # another accelerator's
    assert [int(s) for s in fake_cuda.rng] == [4, 5]


def test_trainer_rng_state_round_trip():
    from flashocc.engine.train import _rng_state, _set_rng_state

    state = _rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    _set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


# ---- synchronisation, memory, pinning ------------------------------------------------------------
def test_cpu_sync_and_allocator_stats_are_no_ops():
    cpu = torch.device("cpu")
    assert fd.synchronize(cpu) is None
    assert fd.reset_peak_memory(cpu) is False
    assert fd.memory_allocated(cpu) is None and fd.max_memory_allocated(cpu) is None


def test_cpu_peak_memory_is_the_rss_growth(monkeypatch):
    # The real RSS is not a reliable probe inside a long test process (freed pages are reused), so the
    # reading is scripted: 100 MiB at the start, a 16 MiB peak while the block runs, back down at the end.
    readings = iter([100 * MiB] + [116 * MiB] * 3)
    monkeypatch.setattr(PeakMemory, "rss_bytes", staticmethod(lambda: next(readings, 101 * MiB)))
    with PeakMemory(torch.device("cpu")) as mem:
        import time

        time.sleep(0.05)  # let the sampling thread read the peak
    assert mem.peak_mib == 16


def test_accelerator_peak_memory_uses_the_allocator_and_syncs(fake_cuda):
    cuda = torch.device("cuda", 0)
    fake_cuda.peak = 500 * MiB  # left over from earlier work: reset on entry
    with PeakMemory(cuda) as mem:
        fake_cuda.peak = 164 * MiB
    assert mem.peak_mib == 64 and fake_cuda.syncs == 2
    assert fd.memory_allocated(cuda) == 100 * MiB


def test_accelerator_without_peak_statistics_reports_none(fake_cuda, monkeypatch):
    bare, real = FakeAccelerator(stats=False), fd.device_module
    monkeypatch.setattr(fd, "device_module", lambda kind: bare if kind == "cuda" else real(kind))
    with PeakMemory(torch.device("cuda", 0)) as mem:
        pass
    assert mem.peak_mib is None
    ablation = [{"preset": p, "head": "h", "latency_ms": 1.0, "peak_mem_mib": None, "params": 1} for p in "ab"]
    table = format_table(BenchReport("flashocc-tiny", 1, "MPS", [], ablation))
    assert "3D / 2D: latency x1.00, memory -" in table


def test_pin_memory_only_for_discrete_accelerators():
    assert not fd.use_pin_memory(torch.device("cpu"))
    assert not fd.use_pin_memory(torch.device("mps"))
    assert fd.use_pin_memory(torch.device("cuda", 0))

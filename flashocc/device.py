"""One code path for every device torch knows: the CPU, CUDA and any accelerator behind ``torch.accelerator``
(Ascend NPU through ``torch_npu``, Intel XPU, Apple MPS, ...).

Device choice, mixed precision, the DDP backend, RNG states, memory statistics and synchronisation all go
through here, so the rest of flashocc names no device type (but TensorRT, which is CUDA by nature).
torch >= 2.6 names the build's accelerator (``torch.accelerator``); older torch is asked about each known
device module in turn, CUDA first.
``torch_npu`` is imported only if it is installed; flashocc never requires it (docs/devices.md).
"""
from __future__ import annotations

import importlib
import importlib.util
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache

import torch
import torch.distributed as dist

from flashocc.errors import ConfigError

PLUGINS = {"npu": "torch_npu"}  # device type -> the package that registers it with torch
_FALLBACK_TYPES = ("cuda", "npu", "xpu", "mps")  # asked in this order where torch.accelerator is missing
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_EXAMPLES = "auto, cpu, cuda, cuda:1, npu (with torch_npu), xpu or mps"


@cache
def _load_plugins() -> dict[str, str]:
    """Import the installed device plug-ins once; returns {device type: why it is not usable}."""
    missing = {}
    for kind, package in PLUGINS.items():
        if importlib.util.find_spec(package) is None:
            missing[kind] = f"{package} is not installed (pip install {package})"
            continue
        try:
            importlib.import_module(package)
        except Exception as exc:  # e.g. a torch_npu built for another torch version
            missing[kind] = f"import {package} failed: {type(exc).__name__}: {exc}"
    return missing


def device_module(kind: str):
    """``torch.cuda``, ``torch.npu``, ``torch.xpu``, ... (``torch.get_device_module`` is torch >= 2.3)."""
    get = getattr(torch, "get_device_module", None)
    return get(kind) if get is not None else getattr(torch, kind)


def _available(kind: str) -> bool:
    try:
        return bool(device_module(kind).is_available())
    except (AttributeError, RuntimeError):  # meta, or a type without a runtime module
        return False


def accelerator_type() -> str | None:
    """The accelerator this process can use ("cuda", "npu", "xpu", "mps", ...), or None on a CPU-only host."""
    _load_plugins()
    acc = getattr(torch, "accelerator", None)
    if acc is not None:
        return acc.current_accelerator().type if acc.is_available() else None
    return next((kind for kind in _FALLBACK_TYPES if hasattr(torch, kind) and _available(kind)), None)


def device_count(kind: str) -> int:
    return int(getattr(device_module(kind), "device_count", lambda: 1)())  # older MPS modules have no count


def resolve_device(spec: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``--device`` -> a device that exists here. "auto" is the accelerator, else the CPU; a name without an
    index ("cuda", "npu") takes ``local_rank`` (torchrun's LOCAL_RANK), so each process gets its own device."""
    text = str(spec).strip().lower()
    if text == "auto":
        text = accelerator_type() or "cpu"
    kind = text.partition(":")[0]
    missing = _load_plugins()
    if kind in missing:
        raise ConfigError(f"--device {spec}: {missing[kind]}")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"--device {spec}: not a device type torch knows; expected {_EXAMPLES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if not _available(device.type):
        here = accelerator_type()
        raise ConfigError(f"--device {spec}: no {device.type} device is available on this machine "
                          f"(available: cpu{', ' + here if here else ''})")
    index = local_rank if device.index is None else device.index
    count = device_count(device.type)
    if index >= count:
        raise ConfigError(f"--device {spec}: {device.type}:{index} does not exist "
                          f"(LOCAL_RANK {local_rank}); this machine has {count} {device.type} device(s)")
    return torch.device(device.type, index)


def set_current_device(device: torch.device) -> None:
    """Make ``device`` the process's current one (NCCL/HCCL need it before the process group starts)."""
    if device.type != "cpu" and hasattr(device_module(device.type), "set_device"):
        device_module(device.type).set_device(device)  # MPS has a single device and no set_device


def ddp_backend(device: torch.device | str) -> str:
    """gloo on the CPU, NCCL on CUDA, the device's own backend otherwise (HCCL once torch_npu registers it)."""
    kind = device.type if isinstance(device, torch.device) else str(device).partition(":")[0]
    get = getattr(dist, "get_default_backend_for_device", None)  # torch >= 2.6
    try:
        return get(kind) if get is not None else dist.Backend.default_device_backend_map[kind]
    except (KeyError, ValueError, RuntimeError):
        raise ConfigError(f"--device {kind}: torch.distributed has no backend registered for {kind} devices; "
                          f"launch one process, or use --device cpu (gloo)") from None


def collective_device(device: torch.device) -> torch.device:
    """Where a tensor for all_reduce must live: on the device for NCCL/HCCL/XCCL, on the CPU for gloo."""
    if device.type == "cpu":
        return device
    try:
        return torch.device("cpu") if ddp_backend(device) == "gloo" else device
    except ConfigError:  # no backend at all: a single process, whose reductions never leave it
        return torch.device("cpu")


def autocast_available(kind: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    if check is not None:
        return bool(check(kind))
    return kind in ("cpu", "cuda", "xpu", "hpu", torch._C._get_privateuse1_backend_name())


def autocast_enabled(kind: str) -> bool:
    """Whether an autocast region for ``kind`` is active (False for types without autocast, e.g. meta)."""
    if not autocast_available(kind):
        return False
    try:
        return torch.is_autocast_enabled(kind)
    except TypeError:  # torch < 2.4: one function per type, the bare one is CUDA's
        return getattr(torch, f"is_autocast_{kind}_enabled", torch.is_autocast_enabled)()


@dataclass(frozen=True)
class AmpPlan:
    """What ``train.amp`` does on one device: the autocast dtype (None: fp32), and the sentence the trainer
    logs when the asked precision is not applied."""

    device_type: str
    dtype: torch.dtype | None = None
    note: str = ""

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling is for fp16 only: bf16 has fp32's exponent range (nanoGPT's rule)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def amp_plan(amp: str, device: torch.device) -> AmpPlan:
    if amp not in AMP_DTYPES:
        raise ConfigError(f"train.amp={amp!r}: expected one of {', '.join(AMP_DTYPES)}")
    kind, dtype = device.type, AMP_DTYPES[amp]
    if dtype is None:
        return AmpPlan(kind)
    if kind == "cpu":
        # CPU autocast exists, but without bf16 hardware (AMX, AVX512-BF16) it is slower than fp32, and the CPU
        # runs flashocc is checked on (tests, the demo) are fp32 runs: keep them so, and say it.
        return AmpPlan(kind, note=f"train.amp={amp} is not applied on the CPU: training runs in fp32 "
                                  "(mixed precision is used on accelerators only)")
    if not autocast_available(kind):
        return AmpPlan(kind, note=f"train.amp={amp} is not applied: torch has no autocast for {kind}; "
                                  "training runs in fp32")
    supports_bf16 = getattr(device_module(kind), "is_bf16_supported", lambda: True)
    if dtype == torch.bfloat16 and not supports_bf16():
        raise ConfigError(f"train.amp=bf16: this {kind} device has no bfloat16 support; "
                          "use train.amp=fp16 or train.amp=none")
    return AmpPlan(kind, dtype)


def accelerator_rng_state() -> dict[str, list[torch.Tensor]]:
    """The accelerator's RNG states keyed by its type (``{"cuda": [...]}``, the key checkpoints always
    used), or {} on a CPU-only host."""
    kind = accelerator_type()
    if kind is None:
        return {}
    mod = device_module(kind)
    return {kind: list(mod.get_rng_state_all()) if hasattr(mod, "get_rng_state_all") else [mod.get_rng_state()]}


def set_accelerator_rng_state(state: dict) -> None:
    """Restore what :func:`accelerator_rng_state` saved, for the devices this host has."""
    kind = accelerator_type()
    if kind is None or kind not in state:
        return
    mod, saved = device_module(kind), list(state[kind])[: device_count(kind)]
    if hasattr(mod, "set_rng_state_all"):
        mod.set_rng_state_all(saved)
    else:  # MPS: one device
        mod.set_rng_state(saved[0])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing); CPU work is done when the call returns."""
    if device.type == "cpu" or device.type != accelerator_type():
        return
    acc = getattr(torch, "accelerator", None)
    if acc is not None:
        acc.synchronize(device)
    else:
        device_module(device.type).synchronize()


_NO_STAT = object()


def _allocator(device: torch.device, name: str):
    """``torch.accelerator.<name>(device)`` (torch >= 2.8), else the device module's; ``_NO_STAT`` where the
    device keeps no such statistic (CPU, MPS)."""
    if device.type == "cpu" or device.type != accelerator_type():
        return _NO_STAT
    for owner in (getattr(torch, "accelerator", None), device_module(device.type)):
        fn = getattr(owner, name, None)
        if fn is not None:
            try:
                return fn(device)
            except (RuntimeError, TypeError, NotImplementedError):  # e.g. an allocator without statistics
                continue
    return _NO_STAT


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new allocator peak; False where the device keeps none."""
    return _allocator(device, "reset_peak_memory_stats") is not _NO_STAT


def memory_allocated(device: torch.device) -> int | None:
    value = _allocator(device, "memory_allocated")
    return None if value is _NO_STAT else int(value)


def max_memory_allocated(device: torch.device) -> int | None:
    value = _allocator(device, "max_memory_allocated")
    return None if value is _NO_STAT else int(value)


def use_pin_memory(device: torch.device) -> bool:
    """Pinned host memory speeds up copies to a discrete accelerator. MPS shares memory with the CPU, and the
    DataLoader of torch < 2.6 pins for CUDA only."""
    if device.type in ("cpu", "mps"):
        return False
    return device.type == "cuda" or hasattr(torch, "accelerator")


def device_name(device: torch.device) -> str:
    get = getattr(device_module(device.type), "get_device_name", None)
    return get(device) if get is not None else str(device)

"""torchrun-style process groups (nanoGPT pattern): RANK / WORLD_SIZE / LOCAL_RANK from the env.

The backend follows the device (flashocc/device.py): NCCL on CUDA, HCCL on Ascend NPUs, gloo on the CPU
(so tests can run two CPU processes). Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from flashocc.device import collective_device, ddp_backend, resolve_device, set_current_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Pick the device (``"auto"``, ``"cpu"``, ``"cuda"``, ``"npu:1"``, ...; a name without an index takes
    LOCAL_RANK) and initialise the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local)
    set_current_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=ddp_backend(dev))
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=collective_device(info.device))
    dist.all_reduce(t)
    return float(t.item()) / info.world_size

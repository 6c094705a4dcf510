"""Deterministic, resumable batch order shared by every process.

One epoch's global order is a permutation drawn from (seed, epoch). Optimiser step g uses the
``batch_size · world_size · grad_accum_steps`` items that follow; micro-step a of rank r takes block
``a · world_size + r``. So a 2-process run sees exactly the samples that a 1-process run with two
accumulation micro-steps sees, and a resumed run continues at any step with the same order.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    def __init__(self, num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 grad_accum_steps: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.world_size, self.rank, self.accum = world_size, rank, grad_accum_steps
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0
        if self.steps_per_epoch == 0:
            raise ValueError(f"{num_samples} training samples cannot fill one step of batch_size {batch_size} x "
                             f"{world_size} processes x {grad_accum_steps} accumulation steps")

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.world_size * self.accum

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.samples_per_step  # the incomplete last step is dropped

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.samples_per_step
            for micro in range(self.accum):
                start = base + (micro * self.world_size + self.rank) * self.batch_size
                yield order[start:start + self.batch_size]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum

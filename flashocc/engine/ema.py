"""Exponential moving average of the weights, with the official MEGVII formula (FlashOCC@4084861
projects/mmdet3d_plugin/core/hook/ema.py, ModelEMA.update and MEGVIIEMAHook; docs/official-behaviour.md#ema).

After every optimiser step: updates += 1; d = decay · (1 − exp(−updates / ramp)); for every
floating-point state entry (parameters *and* BN running statistics, not ``num_batches_tracked``):
ema = d · ema + (1 − d) · model. The EMA state dict has the model's keys, so it loads like one.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from flashocc.engine.checkpoint import unwrap_model


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, ramp: float = 2000.0, init_updates: int = 0) -> None:
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.updates = decay, ramp, init_updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = unwrap_model(model).state_dict()
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach().to(value.dtype), alpha=1 - d)
            else:
                value.copy_(source[key])

    def state_dict(self) -> dict:
        return {"state_dict": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])

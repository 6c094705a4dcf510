"""Fused inference: an inference-only copy of a FlashOcc model that does the same maths with less work.

``fuse_for_inference(model)`` (or ``model.fuse()``) returns a ``FusedOcc``:
  * every BatchNorm folded into the convolution before it (2D and 3D): eval-mode BN is a per-channel
    affine map, so ``bn(conv(x)) == conv'(x)`` with w' = w·γ/σ and b' = (b - μ)·γ/σ + β, one pass
    over the activations fewer per conv;
  * convolution weights in channels-last layout (``channels_last``), which oneDNN on CPU and cuDNN on
    GPU run without the NCHW <-> blocked reorders around every conv;
  * the pooling indices cached per calibration (keyed by ``calibration_key``, the same hash the ONNX
    runtime uses), so the frustum geometry, voxel indexing and sort run once per rig instead of
    once per frame (single-frame models; the temporal ones move with the ego vehicle every frame);
  * nothing that only training reads: no criterion call, no semantic head;
  * optionally ``torch.compile`` on each tensor-in, tensor-out part.
Logits equal the eager model's up to float rounding (tests/models/test_fuse.py).
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flashocc.batch import check_inputs
from flashocc.geometry import sensor_to_key_ego
from flashocc.models.view_transformer import Lifted
from flashocc.ops.bev_pool import BevPoolIndices

CALIBRATION_KEYS = ("intrinsics", "post_rots", "post_trans", "bda")
_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))
# Tensor-in, tensor-out children that torch.compile can take whole (the view transformer takes a dict).
_COMPILED_PARTS = ("img_backbone", "img_neck", "img_bev_encoder_backbone", "img_bev_encoder_neck", "occ_head")


def calibration_key(batch: Mapping[str, torch.Tensor]) -> str:
    """Hash of everything the pooling indices depend on: sensor->key-ego (derived in float64 from
    sensor2ego and ego2global, as the model does), intrinsics, post_rots, post_trans and bda, with shapes."""
    parts = [sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])]
    parts += [batch[k].float() for k in CALIBRATION_KEYS]
    digest = hashlib.sha1()
    for t in parts:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fold_conv_bn(conv: nn.Conv2d | nn.Conv3d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new convolution computing ``bn(conv(x))`` with ``bn`` in eval mode (its running statistics)."""
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        shift = (bias - bn.running_mean.double()) * scale
        if bn.affine:
            shift = shift + bn.bias.double()
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        # In float64 then rounded once: the folded weights are as close to the exact product as fp32 allows.
        fused.weight = nn.Parameter((conv.weight.double() * scale.view(shape)).to(conv.weight.dtype),
                                    requires_grad=False)
        fused.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    return fused


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (any(type(conv) is c and type(bn) is b for c, b in _PAIRS) and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm registered right after the convolution that feeds it, and replace
    the BatchNorm by ``nn.Identity``; returns how many were folded.

    Pairs are found by registration order (``conv1, bn1`` / ``Sequential(conv, bn, ...)`` / mmcv
    ``ConvModule``'s ``conv, bn``): every module of this package registers a BN right after the conv
    whose output it normalises, and a BN whose neighbour is not a matching conv stays as it is."""
    folded = 0
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if _foldable(conv, bn):
                setattr(parent, conv_name, fold_conv_bn(conv, bn))
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded


def to_channels_last(module: nn.Module) -> nn.Module:
    """Conv weights in channels-last layout (4D: ``channels_last``, 5D: ``channels_last_3d``); a conv
    with a channels-last weight gives channels-last outputs, so the layout carries through the network."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fmt = torch.channels_last if m.weight.dim() == 4 else torch.channels_last_3d
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)
    return module


class FusedOcc(nn.Module):
    """Inference-only FlashOcc: ``fused(batch) -> logits`` (B, Dx, Dy, Dz, K), ``fused.predict(batch)``
    -> uint8 labels, and the four stage methods of ``FlashOcc`` (for ``flashocc bench``).

    ``model`` is the folded copy (its state dict has no BatchNorm entries: save the eager model's).
    ``index_cache_size``: calibrations whose pooling indices are kept (least recently used out)."""

    def __init__(self, model: nn.Module, index_cache_size: int = 16) -> None:
        super().__init__()
        if index_cache_size < 1:
            raise ValueError(f"index_cache_size must be >= 1, got {index_cache_size}")
        self.model = model
        self.config = getattr(model, "config", None)
        self.index_cache_size = index_cache_size
        # Temporal models compute indices per frame inside lift_to_bev (the previous frame moves).
        self.caches_indices = hasattr(model.img_view_transformer, "pool_indices") and not getattr(
            self.config, "temporal", False)
        self._indices: OrderedDict[str, BevPoolIndices] = OrderedDict()
        self.hits = self.misses = 0

    def train(self, mode: bool = True) -> FusedOcc:
        if mode:
            raise RuntimeError("a fused model is for inference only (BatchNorm is folded into the convolutions); "
                               "train the eager model and fuse it again")
        return super().train(False)

    def pool_indices(self, batch: Mapping[str, torch.Tensor]) -> BevPoolIndices | None:
        """The cached pooling indices of this batch's calibration (None for temporal models)."""
        if not self.caches_indices:
            return None
        key = calibration_key(batch)
        if key in self._indices:
            self.hits += 1
            self._indices.move_to_end(key)
            return self._indices[key]
        self.misses += 1
        indices = self.model.img_view_transformer.pool_indices(batch)
        self._indices[key] = indices
        if len(self._indices) > self.index_cache_size:
            self._indices.popitem(last=False)
        return indices

    # ---- stages (as FlashOcc's) ---------------------------------------------------------------------
    def encode_images(self, batch: Mapping[str, torch.Tensor]) -> Any:
        return self.model.encode_images(batch)

    def lift_to_bev(self, encoded: Any, batch: Mapping[str, torch.Tensor],
                    indices: BevPoolIndices | None = None) -> Lifted:
        return self.model.lift_to_bev(encoded, batch, indices if indices is not None else self.pool_indices(batch))

    def bev_encoder(self, bev: torch.Tensor) -> torch.Tensor:
        return self.model.bev_encoder(bev)

    def occ_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.occ_head(x)

    # ---- entry points -------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None) -> torch.Tensor:
        check_inputs(batch)
        lifted = self.lift_to_bev(self.encode_images(batch), batch, indices)
        return self.occ_head(self.bev_encoder(lifted.bev))

    def forward_logits(self, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, None]:
        """(logits, None): the depth probabilities are a training output and are not returned."""
        return self(batch, indices), None

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None) -> torch.Tensor:
        """Class labels (B, Dx, Dy, Dz) uint8."""
        return self(batch, indices).argmax(dim=-1).to(torch.uint8)


def inference_copy(model: nn.Module, channels_last: bool = True, compile: bool | str = False,
                   compiled_parts: tuple[str, ...] = ()) -> nn.Module:
    """A deep copy of ``model`` (left unchanged) for inference: eval mode, no gradients, every BatchNorm
    folded, channels-last convolution weights; ``compile``: True (inductor) or a ``torch.compile`` backend
    name, applied to each child named in ``compiled_parts`` (tensor-in, tensor-out parts)."""
    copied = copy.deepcopy(model).eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    fold_batchnorm(copied)
    if channels_last:
        to_channels_last(copied)
    if compile:
        backend = "inductor" if compile is True else str(compile)
        for name in compiled_parts:
            part = getattr(copied, name, None)
            if part is not None:
                setattr(copied, name, torch.compile(part, backend=backend, dynamic=False))
    return copied


def fuse_for_inference(model: nn.Module, channels_last: bool = True, compile: bool | str = False,
                       index_cache_size: int = 16) -> FusedOcc:
    """An inference-only copy of ``model`` (left unchanged): BatchNorm folded, channels-last weights,
    cached pooling indices, no training-only parts; ``compile``: True (inductor) or a ``torch.compile``
    backend name, applied to each tensor-in, tensor-out part."""
    if isinstance(model, FusedOcc):
        raise ValueError("this model is already fused")
    fused = inference_copy(model, channels_last, compile, _COMPILED_PARTS)
    if getattr(fused, "semantic_head", None) is not None:
        fused.semantic_head = None  # a training aid: its output is only read by the criterion
    return FusedOcc(fused, index_cache_size).eval()

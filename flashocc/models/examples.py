"""Example inputs on a nuScenes-like rig: random images with valid camera geometry, for FLOP counting,
export, calibration, benchmarks and tests (never for training)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from flashocc.geometry import image_aug_matrices
from flashocc.models.configs import NUM_FRAMES, ModelConfig


def example_batch(cfg: ModelConfig, batch_size: int = 1, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A geometrically valid single-frame batch of random images (6 cameras at ``cfg.input_size``)."""
    h, w = cfg.input_size
    n = 6
    yaws = torch.tensor([55.0, 0.0, -55.0, 110.0, 180.0, -110.0]) * torch.pi / 180
    s2e = torch.zeros(n, 4, 4)
    for i, yaw in enumerate(yaws):
        # camera z (forward) along ego (cos yaw, sin yaw, 0); camera x right; camera y down.
        fwd = torch.tensor([torch.cos(yaw), torch.sin(yaw), 0.0])
        right = torch.tensor([torch.sin(yaw), -torch.cos(yaw), 0.0])
        down = torch.tensor([0.0, 0.0, -1.0])
        s2e[i, :3, :3] = torch.stack([right, down, fwd], dim=1)
        s2e[i, :3, 3] = torch.tensor([1.0, 0.0, 1.6])
        s2e[i, 3, 3] = 1
    scale = w / 1600
    post_rot, post_tran = image_aug_matrices(scale, (0, int(900 * scale) - h, w, int(900 * scale)), False, 0.0)
    k = torch.tensor([[1260.0, 0, 800], [0, 1260.0, 450], [0, 0, 1]])
    expand = lambda t: t.to(device).expand(batch_size, *t.shape).clone()  # noqa: E731
    return {
        "img": torch.randn(batch_size, n, 3, h, w, device=device),
        "sensor2ego": expand(s2e),
        "ego2global": expand(torch.eye(4).repeat(n, 1, 1)),
        "intrinsics": expand(k.repeat(n, 1, 1)),
        "post_rots": expand(torch.from_numpy(post_rot).repeat(n, 1, 1)),
        "post_trans": expand(torch.from_numpy(post_tran).repeat(n, 1)),
        "bda": torch.eye(3, device=device).repeat(batch_size, 1, 1),
    }


def example_sequence(cfg: ModelConfig, num_frames: int = 3, batch_size: int = 1, step_m: float = 1.5,
                     yaw_step_deg: float = 2.0, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Single-frame batches of one synthetic drive (random images, consistent ego poses): the ego
    moves ``step_m`` forward and turns ``yaw_step_deg`` per frame."""
    g = torch.Generator().manual_seed(seed)
    base = example_batch(cfg, batch_size)
    frames, pose, yaw = [], torch.eye(4), 0.0
    for _ in range(num_frames):
        frame = {k: v.clone() for k, v in base.items()}
        frame["img"] = torch.randn(base["img"].shape, generator=g)
        frame["ego2global"] = pose.expand_as(base["ego2global"]).clone()
        frames.append(frame)
        yaw += math.radians(yaw_step_deg)
        step = torch.eye(4)
        step[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
        step[:2, 3] = torch.tensor([pose[0, 3] + step_m * math.cos(yaw), pose[1, 3] + step_m * math.sin(yaw)])
        pose = step
    return frames


def temporal_batch(frames: Sequence[Mapping[str, torch.Tensor]], index: int, scene_start: int = 0) -> dict:
    """The batch ``OccDataset(num_adjacent=2)`` builds for ``frames[index]``: views [t, t-1, t-2],
    each earlier frame replaced by the current one when it lies before ``scene_start`` (the official
    scene-start fallback), intrinsics and post matrices of the current frame copied to every frame
    (as the official pipeline does; docs/official-behaviour.md, "Adjacent frames")."""
    current = frames[index]
    picked = [frames[j] if j >= scene_start else current for j in (index, index - 1, index - 2)]
    out = {k: torch.cat([f[k] for f in picked], dim=1) for k in ("img", "sensor2ego", "ego2global")}
    out.update({k: torch.cat([current[k]] * NUM_FRAMES, dim=1) for k in ("intrinsics", "post_rots", "post_trans")})
    out["bda"] = current["bda"]
    return out


def example_model_batch(cfg: ModelConfig, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """A random input batch in the layout ``cfg``'s model takes: frames [t, t-1, t-2] of a synthetic
    drive for temporal configs, ``example_batch`` otherwise (for export, calibration and benchmarks)."""
    if cfg.num_frames > 1:
        return temporal_batch(example_sequence(cfg, batch_size=batch_size), NUM_FRAMES - 1)
    return example_batch(cfg, batch_size)

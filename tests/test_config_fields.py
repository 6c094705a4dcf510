"""Every field of every preset's config does something: changing it (to a value that is valid on its
own) changes what gets built or asked for, or is refused with a ConfigError naming a field. A field
that is silently ignored fails here; a new field fails until it has alternatives below.

Sections: ``SECTIONS`` maps a section of the run config to (its alternative values per field, the
fields that only identify the config, and an effect function). An effect is everything the field
could change, as plain comparable data. The model section builds on the meta device (shapes, no
weights) and compares every module's type and plain attributes (channels, strides, depth bins, drop
rates, gradient checkpointing...), the state-dict shapes, the criterion (built on the CPU: its class
weights are values) and the data requirements. To cover another section (train, data, eval), add
its alternatives and an effect (e.g. the optimiser and schedule it builds) to ``SECTIONS``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from flashocc.errors import ConfigError
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.models import builders
from flashocc.models.presets import PRESETS, build_model, get_config

SMALL_GRID = OccGrid(lower=(-12.8, -12.8, -1.0), upper=(12.8, 12.8, 5.4))  # 64x64x16
PLAIN = (bool, int, float, str, tuple, OccGrid)


def _plain_attributes(module: torch.nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"
            and isinstance(v, PLAIN)}


def model_effect(cfg) -> dict[str, Any]:
    with torch.device("meta"):
        model = build_model(cfg)
    if cfg.family == "sparseocc":
        return sparseocc_effect(cfg, model)
    criterion = builders.build_criterion(cfg)
    return {
        "modules": {f"{name}:{type(m).__name__}": _plain_attributes(m) for name, m in model.named_modules()
                    if not name.startswith("criterion")},
        "state": {k: tuple(v.shape) for k, v in model.state_dict().items()},
        "criterion": (_plain_attributes(criterion),
                      None if criterion.class_weights is None else criterion.class_weights.tolist()),
        "data": cfg.data_requirements(),
    }


def sparseocc_effect(cfg, model) -> dict[str, Any]:
    """SparseOcc reads some fields at run time (model.cfg), not when building: probe those on CPU tensors
    (normalisation, the merges, the frozen/eval-mode modules in training, the sampling generator, the
    batch layout it accepts) next to the built modules, state shapes and criterion."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    k = cfg.grid.num_classes
    coords = torch.randint(0, 16, (1, 40, 3), generator=g)
    merged = model.merge([SimpleNamespace(coords=coords)], [torch.randn(1, 10, 40, generator=g)],
                         [torch.randn(1, 10, k, generator=g) - 1.5])
    model.train()
    frozen = [name for name, m in model.named_modules() if not m.training]
    model.eval()
    seeded = model.sampling_generator(None)
    m = 48  # the official 8 frames of 6 cameras
    try:
        model.check_batch({"img": torch.zeros(1, m, 3, 32, 32, device="meta"),
                           "lidar2img": torch.zeros(1, m, 4, 4, device="meta")})
        accepts_official_batch = True
    except ValueError:
        accepts_official_batch = False
    return {
        "modules": {f"{name}:{type(mod).__name__}": _plain_attributes(mod) for name, mod in model.named_modules()
                    if not name.startswith("criterion")},
        "state": {key: tuple(v.shape) for key, v in model.state_dict().items()},
        "criterion": _plain_attributes(model.criterion),
        "data": cfg.data_requirements(),
        "normalized": model.normalize(torch.arange(12.0).view(1, 3, 2, 2)).tolist(),
        "merged": {key: v.tolist() for key, v in merged.items()},
        "frozen": (frozen, [name for name, p in model.named_parameters() if not p.requires_grad]),
        "sampling_seed": None if seeded is None else seeded.initial_seed(),
        "accepts_official_batch": accepts_official_batch,
    }


# field -> candidate values, tried in order (skipping the preset's own) until one is accepted.
MODEL_ALTERNATIVES: dict[str, list[Any]] = {
    "backbone": ["resnet18", "resnet34", "swin-t"],
    "backbone_out_indices": [(1, 2, 3), (2,), (0, 2), (2, 3), (0, 2, 3)],
    "with_cp": [True, False],
    "drop_path_rate": [0.2, 0.1],
    "img_neck": ["fpn_lss", "custom_fpn"],
    "img_neck_channels": [32, 48],
    "input_size": [(128, 384), (256, 704)],
    "downsample": [8, 16, 4, 32],
    "depth_bins": [(2.0, 40.0, 1.0), (1.0, 45.0, 1.0)],
    "sid": [True, False],
    "bev_channels": [8, 24],
    "encoder_channels": [(8, 16, 32), (16, 32, 64)],
    "encoder_layers": [(1, 1, 1), (2, 2, 2)],
    "encoder_strides": [(1, 2, 2), (2, 2, 2)],
    "bev_neck_channels": [8, 24],
    "head_channels": [8, 24],
    "use_mask": [False, True],
    "class_balance": [True, False],
    "class_weights": [tuple(1.0 + 0.5 * i for i in range(18)), ()],
    "depth_loss_weight": [0.5, 0.0],
    "depth_target": ["occupancy", "lidar"],
    "semantic_loss_weight": [0.5, 0.0],
    "affinity_loss_weight": [0.5, 0.0],
    "grid": [SMALL_GRID, OCC3D_NUSCENES],
    "head_3d": [True, False],
    "aspp_channels": [16, 32],
    # Panoptic-FlashOcc (models/panoptic/config.py).
    "centre_head": [False, True],
    "centre_channels": [16, 32],
    "centre_score_threshold": [0.5, 0.2],
    "max_centres": [100, 200],
    "official_class_mapping": [True, False],
    "assign_radius": [10.0, 0.0],
    "num_adj": [2, 1],  # panoptic-4d: previous keyframes
    # EFFOcc (models/effocc/config.py)
    "camera": [False, True],
    "lidar_depth_input": [False, True],
    "lidar_encoder": ["height", "sparse"],
    "voxel_size": [(0.05, 0.05, 0.2), (0.05, 0.05, 0.16)],
    "max_points": [5, 10],
    "max_voxels": [(1000, 2000), (90000, 120000)],
    "sparse_backend": ["spconv", "torch"],
    "lidar_channels": [16, 64],
    "fuser_channels": [32, 128],
    "second_channels": [(16, 32), (32, 64)],
    "second_layers": [(1, 1), (2, 2)],
    "second_strides": [(1, 1), (1, 2)],
    "fpn_channels": [(16, 16), (32, 32)],
    # SparseOcc (models/sparseocc/config.py)
    "frozen_stages": [-1, 2, 1],
    "norm_eval": [False, True],
    "img_mean": [(100.0, 100.0, 100.0), (123.675, 116.28, 103.53)],
    "img_std": [(50.0, 50.0, 50.0), (58.395, 57.12, 57.375)],
    "embed_dims": [32, 64],
    "num_groups": [2, 4],
    "num_points": [8, 4],
    "num_frames": [2, 8],
    "num_views": [5, 6],
    "num_voxel_layers": [2, 3],
    "num_queries": [10, 20],
    "num_mask_layers": [1, 2],
    "topk_training": [(300, 1200, 4800), (400, 1600, 6400)],
    "topk_testing": [(100, 400, 1600), (200, 800, 3200)],
    "panoptic": [True, False],
    "score_threshold": [0.5, 0.3],
    "overlap_threshold": [0.95, 0.8],
    "sampling_seed": [7, None],
    "decoder_cp": [False, True],
    "color_aug": [False, True],
    "loss_mask_weight": [1.0, 5.0],
    "loss_dice_weight": [1.0, 5.0],
    "loss_class_weight": [1.0, 2.0],
    "cost_class": [1.0, 2.0],
    "cost_mask": [1.0, 5.0],
    "cost_dice": [1.0, 5.0],
}
# These identify the config (the preset a saved run is rebuilt from, and what `flashocc models` prints)
# instead of shaping a model; test_identity_fields_are_carried checks that they arrive.
MODEL_IDENTITY = ("name", "description")


@dataclass(frozen=True)
class Section:
    configs: Callable[[str], Any]           # preset -> the section's config
    alternatives: dict[str, list[Any]]
    identity: tuple[str, ...]
    effect: Callable[[Any], Any]


SECTIONS: dict[str, Section] = {
    "model": Section(get_config, MODEL_ALTERNATIVES, MODEL_IDENTITY, model_effect),
}


@dataclass
class Outcome:
    changed: list[Any] = dataclasses.field(default_factory=list)
    refused: list[str] = dataclasses.field(default_factory=list)


def walk(section: str, preset: str) -> dict[str, Outcome]:
    spec = SECTIONS[section]
    base = spec.configs(preset)
    baseline = spec.effect(base)
    outcomes: dict[str, Outcome] = {}
    for f in dataclasses.fields(base):
        if f.name in spec.identity:
            continue
        assert f.name in spec.alternatives, f"{section}.{f.name} has no alternative values in {__name__}"
        outcome = outcomes[f.name] = Outcome()
        for value in spec.alternatives[f.name]:
            if value == getattr(base, f.name):
                continue
            try:
                effect = spec.effect(dataclasses.replace(base, **{f.name: value}))
            except ConfigError as exc:
                assert f"{section}." in str(exc), f"{section}.{f.name}={value!r}: the refusal names no field: {exc}"
                outcome.refused.append(str(exc))
                continue
            assert effect != baseline, f"{preset}: {section}.{f.name}={value!r} is accepted but changes nothing"
            outcome.changed.append(value)
            break
        assert outcome.changed or outcome.refused, f"{section}.{f.name}: no alternative differs from {preset}'s"
    return outcomes


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_model_field_changes_the_model_or_is_refused(preset):
    outcomes = walk("model", preset)
    # The walk is not vacuous: the fields every family honours alone are accepted and change something.
    honoured = {"backbone", "with_cp", "img_neck_channels", "input_size", "depth_bins", "sid", "bev_channels",
                "encoder_channels", "encoder_layers", "bev_neck_channels", "head_channels", "use_mask",
                "depth_loss_weight", "semantic_loss_weight", "affinity_loss_weight", "grid"}
    if getattr(get_config(preset), "camera", True) is False:
        from flashocc.models.effocc.config import CAMERA_FIELDS

        honoured -= set(CAMERA_FIELDS)  # a LiDAR-only model refuses them (it has no camera branch)
    if get_config(preset).family == "sparseocc":
        # Its own fields: no lift-splat view transform or BEV encoder.
        honoured = {"backbone", "with_cp", "input_size", "embed_dims", "num_frames", "num_queries", "topk_testing",
                    "panoptic", "score_threshold", "img_mean", "loss_mask_weight", "cost_class"}
        # Not "grid": the presets' top-k counts do not fit the walk's small grid (refused, naming topk_training).
    if getattr(get_config(preset), "family", "") == "effocc":
        honoured -= {"encoder_channels", "encoder_layers", "bev_neck_channels"}  # its trunk is SECOND + SECONDFPN
    assert {name for name, o in outcomes.items() if o.changed} >= honoured


def test_the_walk_catches_an_ignored_field(monkeypatch):
    # A builder that drops a field (here: the criterion ignores use_mask) fails the walk.
    real = builders.build_criterion
    monkeypatch.setattr(builders, "build_criterion", lambda cfg: real(dataclasses.replace(cfg, use_mask=True)))
    with pytest.raises(AssertionError, match="use_mask=False is accepted but changes nothing"):
        walk("model", "flashocc-tiny")


def test_identity_fields_are_carried():
    cfg = dataclasses.replace(get_config("flashocc-tiny"), name="my-tiny", description="mine")
    with torch.device("meta"):
        model = build_model(cfg)
    assert (model.config.name, model.config.description) == ("my-tiny", "mine")


def test_swin_b_on_the_tiny_preset_is_built_not_ignored():
    from flashocc.config import load_run_config
    from flashocc.models.swin import SwinTransformer

    cfg = load_run_config("flashocc-tiny", ["model.backbone=swin-b"])
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert isinstance(model.img_backbone, SwinTransformer) and model.img_backbone.layout.embed_dims == 128
    assert model.img_backbone.out_channels == (256, 512)  # Swin-B stages 1 and 2 into the tiny FPN

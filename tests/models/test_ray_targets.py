"""Occupancy ray targets (first occupied voxel per feature-cell ray) and the training aids using them."""
import dataclasses

import numpy as np
import pytest
import torch

from flashocc.geometry import bda_matrix, create_frustum, frustum_to_ego, image_aug_matrices
from flashocc.geometry import project_to_image, sensor_to_key_ego
from flashocc.grid import OCC3D_NUSCENES
from flashocc.models.losses import downsample_gt_depth
from flashocc.models.presets import build_model, example_batch, get_config
from flashocc.models.ray_targets import first_hits, ray_points, ray_sample_depths, ray_targets

GRID = OCC3D_NUSCENES
FREE = GRID.free_label
# flashocc-tiny's input: 900x1600 resized by 0.16 to 144x256, top 48 rows cropped.
TINY_AUG = (0.16, (0, 48, 256, 144))


def _camera_batch(cams: dict, flip: bool = False, rotate: float = 0.0, bda=np.eye(3)) -> dict:
    post = [image_aug_matrices(TINY_AUG[0], TINY_AUG[1], flip, rotate) for _ in cams]
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return {
        "img": torch.zeros(1, len(cams), 3, 96, 256),
        "sensor2ego": t([c[0] for c in cams.values()])[None],
        "ego2global": torch.eye(4).expand(1, len(cams), 4, 4).clone(),
        "intrinsics": t([c[1] for c in cams.values()])[None],
        "post_rots": t([p[0] for p in post])[None],
        "post_trans": t([p[1] for p in post])[None],
        "bda": t(bda)[None],
    }


@pytest.fixture(scope="module")
def real_rig(nuscenes_rig):
    points, cams = nuscenes_rig
    return points[~((np.abs(points[:, 0]) < 3.0) & (np.abs(points[:, 1]) < 1.5))], cams  # minus the ego car's body


def _voxelize(points: np.ndarray, label: int = 1) -> torch.Tensor:
    idx = np.floor((points - np.array(GRID.lower)) / np.array(GRID.voxel_size)).astype(int)
    keep = np.all((idx >= 0) & (idx < np.array(GRID.shape)), axis=1)
    vox = np.full(GRID.shape, FREE, dtype=np.uint8)
    vox[tuple(idx[keep].T)] = label
    return torch.from_numpy(vox)[None]


@pytest.mark.parametrize("augment", [False, True])
def test_ray_points_match_lifting_every_sample(real_rig, augment):
    _, cams = real_rig
    batch = _camera_batch(cams, flip=augment, rotate=5.0 if augment else 0.0,
                          bda=bda_matrix(20.0, 1.0, True, False) if augment else np.eye(3))
    depths = ray_sample_depths(1.0, 45.0)
    fast = ray_points(batch, (96, 256), 8, depths)
    s2k = sensor_to_key_ego(batch["sensor2ego"], batch["ego2global"])
    slow = frustum_to_ego(create_frustum(depths, (96, 256), 8), s2k, batch["intrinsics"], batch["post_rots"],
                          batch["post_trans"], batch["bda"])
    torch.testing.assert_close(fast, slow, atol=2e-4, rtol=1e-5)


def test_first_hit_of_a_wall_and_the_ground():
    # One camera at the ego origin, 1.5 m up, looking along +x; a car-coloured wall at x in [10, 10.4)
    # up to z = 1.8 m, road everywhere on the lowest layer.
    cam2ego = np.eye(4)
    cam2ego[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    cam2ego[:3, 3] = [0.0, 0.0, 1.5]
    k = np.array([[200.0, 0, 128], [0, 200.0, 48], [0, 0, 1]])
    batch = _camera_batch({"CAM": (cam2ego, k)})
    batch["post_rots"], batch["post_trans"] = torch.eye(3)[None, None], torch.zeros(1, 1, 3)
    vox = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    vox[..., 0] = 11                                  # z in [-1, -0.6): road
    vox[125, :, :7] = 4                               # x in [10, 10.4), z in [-1, 1.8): car
    depth, label = first_hits(vox[None], ray_points(batch, (96, 256), 8, ray_sample_depths(1.0, 45.0)),
                              ray_sample_depths(1.0, 45.0), GRID)
    depth, label = depth[0], label[0]                 # (12, 32); row v = 48 is the horizon
    col = 16                                          # u = 131.6 px: nearly straight ahead
    horizon = int(np.argmin(np.abs(np.linspace(0, 95, 12) - 48)))
    assert label[horizon, col] == 4 and 10.0 <= depth[horizon, col] < 10.2  # depth = x for a ray along +x
    assert label[0, col] == FREE and depth[0, col] == 0                    # above the wall: nothing in the grid
    assert label[-1, col] == 11                                            # looking down: the road first
    v = np.linspace(0, 95, 12)[-1]
    expected = 200.0 * (1.5 - (-0.6)) / (v - 48)    # where the ray reaches the road's top face (z = -0.6)
    assert abs(depth[-1, col].item() - expected) < 0.25


def test_first_hit_depths_agree_with_real_lidar(real_rig):
    """Voxelise the real sweep, cast every camera's rays through it and compare the first hits with
    the LiDAR depth seen in the same feature cells."""
    points, cams = real_rig
    batch = _camera_batch(cams)
    batch["voxel_semantics"] = _voxelize(points)
    depth, label = ray_targets(batch, (96, 256), 8, (1.0, 45.0), GRID)
    assert set(label.unique().tolist()) <= {1, FREE}
    assert ((depth > 0) == (label == 1)).all()
    lidar = torch.zeros(1, len(cams), 96, 256)
    post_rot, post_tran = image_aug_matrices(*TINY_AUG, False, 0.0)
    for i, (s2e, k) in enumerate(cams.values()):
        uv, d = project_to_image(points, s2e, k, post_rot, post_tran)
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (u >= 0) & (u < 256) & (v >= 0) & (v < 96) & (d > 1) & (d < 45)
        order = np.argsort(-d[ok])                    # nearest point written last wins
        lidar[0, i, v[ok][order], u[ok][order]] = torch.from_numpy(d[ok][order]).float()
    cell = downsample_gt_depth(lidar, 8)
    both = (cell > 0) & (depth > 0)
    assert both.sum() > 300
    error = (depth[both] - cell[both]).abs()
    assert error.median() < 1.0 and (error < 3.0).float().mean() > 0.8


def test_semantic_aid_trains_the_image_side_without_lidar():
    cfg = dataclasses.replace(get_config("flashocc-tiny"), depth_loss_weight=1.0, depth_target="occupancy",
                              semantic_loss_weight=0.5)
    assert "load_depth" not in cfg.data_requirements()
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert {k for k in model.state_dict() if k.startswith("semantic_head.")} == {"semantic_head.weight",
                                                                                 "semantic_head.bias"}
    batch = example_batch(cfg)
    labels = torch.full((1, *GRID.shape), FREE, dtype=torch.uint8)
    labels[..., :2] = 11
    labels[110:115, 95:105, 2:6] = 4
    batch.update(voxel_semantics=labels, mask_camera=torch.ones_like(labels))
    losses = model(batch)
    assert set(losses) == {"loss_occ", "loss_depth", "loss_semantic"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss_semantic"].backward()
    assert model.semantic_head.weight.grad.abs().sum() > 0
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0
    model.eval()
    assert model(example_batch(cfg)).shape == (1, *GRID.shape, GRID.num_classes)


def test_official_presets_have_no_aid_and_an_unused_target_is_refused():
    from flashocc.errors import ConfigError
    from flashocc.models.presets import PRESETS

    for name in PRESETS:
        cfg = get_config(name)
        if not hasattr(cfg, "semantic_loss_weight"):
            continue  # SparseOcc: no lift-splat image-side aids
        if name not in ("flashocc-tiny-demo", "flashocc-tiny-distill"):  # ours: the demo's aids on purpose
            assert (cfg.semantic_loss_weight, cfg.affinity_loss_weight, cfg.depth_target) == (0, 0, "lidar"), name
    assert "semantic_head.weight" not in build_model("flashocc-tiny").state_dict()
    # Occupancy depth targets without a depth loss would be ignored: refused, naming the field.
    with pytest.raises(ConfigError, match="model.depth_target"):
        build_model(dataclasses.replace(get_config("flashocc-tiny"), depth_target="occupancy"))

"""Camera and ego-frame maths shared by the model, the data pipeline, deployment and viz.

Frames: *sensor* (camera: x right, y down, z forward), *ego* (x forward, y left, z up, metres),
*global*. ``sensor2ego`` / ``ego2global`` are 4x4 homogeneous transforms. The model works in the
**key-ego** frame: the ego pose of camera 0 (CAM_FRONT_LEFT) at its own timestamp (official quirk,
docs/official-behaviour.md#key-ego-frame).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

# Camera order of the official configs (FlashOCC@4084861 projects/configs/flashocc/flashocc-r50.py,
# data_config['cams']); view 0 defines the key-ego frame (docs/official-behaviour.md#camera-order).
NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT",
)


def quaternion_to_rotation(wxyz: Sequence[float]) -> np.ndarray:
    """Unit quaternion (w, x, y, z), the nuScenes order, to a 3x3 float64 rotation matrix."""
    w, x, y, z = (float(v) for v in wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not n > 0:
        raise ValueError(f"quaternion {tuple(wxyz)} has zero norm")
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def make_transform(rotation: np.ndarray | Sequence[float], translation: Sequence[float]) -> np.ndarray:
    """4x4 float64 transform from a 3x3 rotation (or a wxyz quaternion) and a translation."""
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape == (4,):
        rot = quaternion_to_rotation(rot)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def sensor_to_key_ego(sensor2ego: torch.Tensor, ego2global: torch.Tensor, key_view: int = 0) -> torch.Tensor:
    """Per-camera sensor -> key-ego transforms, (B, N, 4, 4) float32.

    Official quirk (FlashOCC@4084861 projects/mmdet3d_plugin/models/detectors/bevdet.py,
    BEVDet.prepare_inputs): the key ego is the pose of view 0 (CAM_FRONT_LEFT) at its own timestamp,
    and the product is taken in float64 before the cast to float32. Each camera uses its own
    ``ego2global``, which compensates ego motion between exposures.
    """
    s2e = sensor2ego.double()
    e2g = ego2global.double()
    keyego2global = e2g[:, key_view:key_view + 1]  # (B, 1, 4, 4)
    s2k = torch.linalg.inv(keyego2global) @ e2g @ s2e
    return s2k.float()


def bda_matrix(rotate_deg: float = 0.0, scale: float = 1.0, flip_dx: bool = False, flip_dy: bool = False) -> np.ndarray:
    """BEV augmentation bda = Flip · (Scale · Rot), 3x3 float32, applied to ego points (FlashOCC@4084861
    projects/mmdet3d_plugin/datasets/pipelines/loading.py, LoadAnnotationsBEVDepth.bev_transform).

    flip_dx mirrors x (x -> -x), flip_dy mirrors y. Occupancy targets must be flipped to match
    (dim 0 for flip_dx, dim 1 for flip_dy); rotation/scale are never applied to occupancy targets.
    """
    a = math.radians(rotate_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0 if flip_dx else 1.0, -1.0 if flip_dy else 1.0, 1.0])
    return (flip @ (scale * np.eye(3)) @ rot).astype(np.float32)


def image_aug_matrices(
    resize: float,
    crop: tuple[int, int, int, int],
    flip: bool,
    rotate_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """post_rot (3x3) and post_tran (3,) float32 mapping original pixels to augmented ones.

    ``crop`` is (left, top, right, bottom) in resized pixels. Order and formulas follow the
    official ``PrepareImageInputs.img_transform`` (FlashOCC@4084861
    projects/mmdet3d_plugin/datasets/pipelines/loading.py; docs/official-behaviour.md#image-augmentation):
    Official quirk: a flip maps u -> W - u with W the crop width (704), not W - 1.
    Official quirk: the rotation is [[cos, sin], [-sin, cos]] about the crop centre, matching PIL's
    counter-clockwise ``Image.rotate``.
    """
    left, top, right, bottom = crop
    width, height = right - left, bottom - top
    rot = np.eye(2) * resize
    tran = -np.array([left, top], dtype=np.float64)
    if flip:
        mirror = np.array([[-1.0, 0.0], [0.0, 1.0]])
        rot = mirror @ rot
        tran = mirror @ tran + np.array([width, 0.0])
    h = math.radians(rotate_deg)
    a = np.array([[math.cos(h), math.sin(h)], [-math.sin(h), math.cos(h)]])
    centre = np.array([width, height], dtype=np.float64) / 2
    rot = a @ rot
    tran = a @ tran + (-a @ centre + centre)
    post_rot = np.eye(3, dtype=np.float32)
    post_rot[:2, :2] = rot
    post_tran = np.zeros(3, dtype=np.float32)
    post_tran[:2] = tran
    return post_rot, post_tran


def depth_bin_values(start: float, stop: float, step: float, sid: bool = False) -> torch.Tensor:
    """Depth hypotheses (D,) in metres.

    Official quirk (FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/view_transformer.py,
    LSSViewTransformer.create_frustum): bins are the arange *start* values (1.0 ... 44.5 for
    [1, 45, 0.5]), not centres. With ``sid`` they are log-spaced d_i = exp(log d0 + i/(D-1) log((d1-1)/d0)).
    """
    values = torch.arange(start, stop, step, dtype=torch.float32)
    if sid:
        count = values.numel()
        i = torch.arange(count, dtype=torch.float32)
        values = torch.exp(math.log(start) + i / (count - 1) * math.log((stop - 1) / start))
    return values


def create_frustum(depths: torch.Tensor, input_size: tuple[int, int], downsample: int) -> torch.Tensor:
    """(D, fH, fW, 3) frustum of (u, v, d) in augmented-image pixels and metres.

    Official quirk (``view_transformer.py, LSSViewTransformer.create_frustum``): pixel positions are
    linspace(0, W-1, fW) and linspace(0, H-1, fH), not feature-cell centres; kept for checkpoint parity
    (docs/official-behaviour.md#frustum-and-depth-bins).
    """
    height, width = input_size
    fh, fw = height // downsample, width // downsample
    d = depths.view(-1, 1, 1).expand(-1, fh, fw)
    u = torch.linspace(0, width - 1, fw, dtype=torch.float32).view(1, 1, fw).expand_as(d)
    v = torch.linspace(0, height - 1, fh, dtype=torch.float32).view(1, fh, 1).expand_as(d)
    return torch.stack((u, v, d), dim=-1)


def frustum_to_ego(
    frustum: torch.Tensor,
    sensor2keyego: torch.Tensor,
    intrinsics: torch.Tensor,
    post_rots: torch.Tensor,
    post_trans: torch.Tensor,
    bda: torch.Tensor,
) -> torch.Tensor:
    """Lift frustum points to the (BEV-augmented) key-ego frame: (B, N, D, fH, fW, 3) metres.

    Undo the image augmentation, back-project with K⁻¹, rotate/translate by sensor2keyego, then
    apply bda (FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/view_transformer.py,
    LSSViewTransformer.get_ego_coor).
    """
    b, n = sensor2keyego.shape[:2]
    pts = frustum.to(sensor2keyego.dtype).view(1, 1, *frustum.shape) - post_trans.view(b, n, 1, 1, 1, 3)
    pts = torch.linalg.inv(post_rots).view(b, n, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1))
    pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :]), dim=-2)  # (u·d, v·d, d)
    cam_to_ego = sensor2keyego[:, :, :3, :3].matmul(torch.linalg.inv(intrinsics))
    pts = cam_to_ego.view(b, n, 1, 1, 1, 3, 3).matmul(pts).squeeze(-1)
    pts = pts + sensor2keyego[:, :, :3, 3].view(b, n, 1, 1, 1, 3)
    return bda.view(b, 1, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1)).squeeze(-1)


def project_to_image(
    points_ego: np.ndarray,
    sensor2ego: np.ndarray,
    intrinsics: np.ndarray,
    post_rot: np.ndarray | None = None,
    post_tran: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project ego-frame points (M, 3) into one camera: (M, 2) pixels and (M,) depth in metres.

    The optional image augmentation (post_rot, post_tran) is applied after the projection, exactly
    as ``frustum_to_ego`` undoes it. Points behind the camera get depth <= 0.
    """
    pts = np.asarray(points_ego, dtype=np.float64)
    ego2sensor = np.linalg.inv(np.asarray(sensor2ego, dtype=np.float64))
    cam = pts @ ego2sensor[:3, :3].T + ego2sensor[:3, 3]
    depth = cam[:, 2]
    uvd = cam @ np.asarray(intrinsics, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvd[:, :2] / depth[:, None]
    if post_rot is not None:
        uv1 = np.concatenate([uv, np.ones_like(depth)[:, None]], axis=1) @ np.asarray(post_rot, np.float64).T
        uv = uv1[:, :2] + np.asarray(post_tran, np.float64)[:2]
    return uv, depth

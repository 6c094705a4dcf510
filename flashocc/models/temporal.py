"""Temporal stereo FlashOcc (BEVStereo4D): the model of FlashOcc M2 (R50) and M3 (Swin-B), and streaming.

Frames (FlashOCC@4084861 projects/mmdet3d_plugin/models/detectors/bevstereo4d.py, BEVStereo4D; see
docs/official-behaviour.md, "Temporal stereo (M2)"): the current frame t and t-1 each give a BEV map;
t-2 only provides the stride-4 stereo reference for t-1's cost volume. t-1 and t-2 run without
gradients. The earlier frame is lifted straight into the *current* key-ego frame through its own
sensor2keyego (``align_after_view_transfromation=False``: no BEV warping), both maps pass
``pre_process_net`` and are concatenated **[t-1, t]** before the BEV encoder.

Batch contract (the ``flashocc.batch`` keys, with T frames stacked frame-major along the view axis,
exactly what ``OccDataset`` yields with ``DataConfig(num_adjacent=2)``):
  img                      (B, T·N, 3, H, W)  views [cams of t, cams of t-1, cams of t-2]
  sensor2ego, ego2global   (B, T·N, 4, 4)     each frame's own camera poses
  intrinsics, post_rots    (B, T·N, 3, 3)     only the current frame's are read: the official
  post_trans               (B, T·N, 3)        pipeline copies them to adjacent frames
  bda                      (B, 3, 3)
T is 1, 2 or 3 (N = ``num_cameras``). Missing frames are the current frame, which is the official
fallback at a scene start (docs/official-behaviour.md, "Adjacent frames"): T = 1 is "no previous
frame". Targets are the current frame's (``voxel_semantics``, ``mask_camera``, ``gt_depth`` (B, N, H, W)).

Streaming (``StereoStream``): one backbone pass per frame. Each frame's image-neck and stride-4
stereo features are cached; the previous frame is re-lifted into the new key-ego frame (depth net
and pooling only), so logits equal the batch forward on [t, t-1, t-2] with the official fallbacks.
The official ``extract_img_feat_sequential`` instead reuses the previous BEV map, which needs
``align_after_view_transfromation=True`` and does not reproduce M2's numbers.

The builder is ``builders.build_stereo4d``; example inputs are in ``examples.py``, FLOP counting in
``flops.py`` and the data requirements on ``configs.Stereo4DConfig``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flashocc.batch import check_inputs
from flashocc.geometry import sensor_to_key_ego
from flashocc.models.configs import NUM_FRAMES
from flashocc.models.criterion import OccupancyCriterion
from flashocc.models.depthnet import StereoViewTransformer, camera_mlp_input
from flashocc.models.flashocc import FlashOcc
from flashocc.models.resnet import ResNet
from flashocc.models.stereo import current_to_adjacent_sensor
from flashocc.models.view_transformer import Lifted
from flashocc.ops.bev_pool import BevPoolIndices

log = logging.getLogger(__name__)


@dataclass
class FrameFeatures:
    """One frame's image features and camera poses; all tensors lead with (B, N)."""

    feats: torch.Tensor | None  # (B, N, C, fH, fW) image-neck output; None for a stereo-only reference
    stereo: torch.Tensor        # (B, N, Cs, H/4, W/4) stride-4 stereo feature
    sensor2ego: torch.Tensor  # (B, N, 4, 4)
    ego2global: torch.Tensor  # (B, N, 4, 4)

    def select(self, use_other: torch.Tensor, other: FrameFeatures) -> FrameFeatures:
        """Per sample: ``other`` where ``use_other`` (B,) is True, else self."""
        def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            if a is None or b is None:
                return None
            return torch.where(use_other.view(-1, *([1] * (a.dim() - 1))), b, a)
        return FrameFeatures(pick(self.feats, other.feats), pick(self.stereo, other.stereo),
                             pick(self.sensor2ego, other.sensor2ego), pick(self.ego2global, other.ego2global))


@dataclass
class StereoFrames:
    """The image stage's output: frames t, t-1 (both with neck features) and t-2 (stereo only), and the
    current frame's geometry (intrinsics, post_rots, post_trans (B, N, ...), bda (B, 3, 3))."""

    curr: FrameFeatures
    prev: FrameFeatures
    ref: FrameFeatures
    geometry: dict[str, torch.Tensor]


class FlashOccStereo4D(FlashOcc):
    """BEVStereo4D occupancy model; child names are the official state-dict prefixes
    (``img_backbone``, ``img_neck``, ``img_view_transformer``, ``pre_process_net``,
    ``img_bev_encoder_backbone``, ``img_bev_encoder_neck``, ``occ_head``).

    ``img_backbone`` returns [stereo feature (stride 4), neck inputs...]; ``forward(batch)`` follows
    ``FlashOcc``: logits in eval, the criterion's losses ({"loss_occ", "loss_depth"} for M2) in train.
    Stages: ``encode_images`` (t and t-1 through backbone and neck, the stride-4 stem of t-2) ->
    ``lift_to_bev`` (two cost volumes, depth nets, poolings and pre-process nets) -> ``bev_encoder``
    -> ``occ_head``.
    """

    def __init__(self, img_backbone: nn.Module, img_neck: nn.Module, img_view_transformer: StereoViewTransformer,
                 pre_process_net: nn.Module, img_bev_encoder_backbone: nn.Module, img_bev_encoder_neck: nn.Module,
                 occ_head: nn.Module, criterion: OccupancyCriterion | None = None,
                 semantic_head: nn.Module | None = None, num_cameras: int = 6) -> None:
        super().__init__(img_backbone, img_neck, img_view_transformer, img_bev_encoder_backbone,
                         img_bev_encoder_neck, occ_head, criterion=criterion, semantic_head=semantic_head)
        self.pre_process_net = pre_process_net
        self.num_cameras = num_cameras

    # ---- image stage ------------------------------------------------------------------------------
    def encode_frame(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3, H, W) -> (neck features (B, N, C, fH, fW), stereo feature (B, N, Cs, H/4, W/4))."""
        b, n = img.shape[:2]
        outs = self.img_backbone(img.reshape(b * n, *img.shape[2:]))
        stereo, x = outs[0], self.img_neck(outs[1:])
        return x.view(b, n, *x.shape[1:]), stereo.view(b, n, *stereo.shape[1:])

    def image_encoder(self, img: torch.Tensor) -> torch.Tensor:
        return self.encode_frame(img)[0]

    def stereo_reference(self, img: torch.Tensor) -> torch.Tensor:
        """Stride-4 feature only (stem + first stage), for the t-2 reference frame."""
        b, n = img.shape[:2]
        x = img.reshape(b * n, *img.shape[2:])
        backbone = self.img_backbone
        if isinstance(backbone, ResNet):
            x = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
        else:
            x = backbone.stereo_features(x)
        return x.view(b, n, *x.shape[1:])

    def view_transform(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> Lifted:
        raise TypeError("a temporal model lifts each frame with its cost volume against the previous one; "
                        "use encode_images(batch) and lift_to_bev(encoded, batch)")

    def encode_images(self, batch: Mapping[str, torch.Tensor]) -> StereoFrames:
        frames, geometry = self.split_frames(batch)
        encoded: dict[int, FrameFeatures] = {}

        def frame(i: int, full: bool) -> FrameFeatures:
            f = frames[i]
            for j, done in encoded.items():  # a fallback frame is the same tensors: encode once
                if frames[j]["img"] is f["img"]:
                    return done
            if full:
                feats, stereo = self.encode_frame(f["img"])
            else:
                feats, stereo = None, self.stereo_reference(f["img"])
            encoded[i] = FrameFeatures(feats, stereo, f["sensor2ego"], f["ego2global"])
            return encoded[i]

        # Official order (BEVStereo4D.extract_img_feat): t-2 (stereo only) and t-1 without gradients,
        # then t. With the fallback, the current frame is encoded first so that every copy reuses it.
        if frames[1]["img"] is frames[0]["img"] or frames[2]["img"] is frames[0]["img"]:
            curr = frame(0, True)
            with torch.no_grad():
                ref, prev = frame(2, False), frame(1, True)
        else:
            with torch.no_grad():
                ref, prev = frame(2, False), frame(1, True)
            curr = frame(0, True)
        return StereoFrames(curr, _detached(prev), _detached(ref), geometry)

    # ---- view-transform stage ---------------------------------------------------------------------
    def lift(self, frame: FrameFeatures, adjacent: FrameFeatures, sensor2keyego: torch.Tensor, mlp_input: torch.Tensor,
             geometry: Mapping[str, torch.Tensor]) -> Lifted:
        """One frame's ``Lifted`` with its BEV map after ``pre_process_net``, the cost volume against ``adjacent``."""
        vt: StereoViewTransformer = self.img_view_transformer
        curr2adj = current_to_adjacent_sensor(frame.sensor2ego, frame.ego2global, adjacent.sensor2ego,
                                              adjacent.ego2global)
        cost = vt.cost_volume(adjacent.stereo.flatten(0, 1), frame.stereo.flatten(0, 1), curr2adj,
                              geometry["intrinsics"], geometry["post_rots"], geometry["post_trans"])
        lifted = vt(frame.feats, mlp_input, cost, sensor2keyego, geometry["intrinsics"], geometry["post_rots"],
                    geometry["post_trans"], geometry["bda"])
        return lifted._replace(bev=self.pre_process_net(lifted.bev)[0])

    def fuse_bev(self, curr: FrameFeatures, prev: FrameFeatures, ref: FrameFeatures,
                 geometry: Mapping[str, torch.Tensor]) -> Lifted:
        """Frames t, t-1, t-2 -> ``Lifted``: the [t-1, t] BEV map and the depth and context of t.

        t-2 (``ref``) only provides its stereo feature and poses; t-1 is lifted without gradients.
        """
        n = curr.feats.shape[1]
        # Key ego = the current frame's camera 0 for every frame (BEVStereo4D.prepare_inputs).
        s2k = key_ego_poses([curr.sensor2ego, prev.sensor2ego], [curr.ego2global, prev.ego2global])
        # Official detail (BEVStereo4D.extract_img_feat): mlp_input uses the key frame's sensor2keyego
        # for every frame.
        mlp_input = camera_mlp_input(s2k[:, :n], geometry["intrinsics"].float(), geometry["post_rots"].float(),
                                     geometry["post_trans"].float(), geometry["bda"].float())
        with torch.no_grad():
            bev_prev = self.lift(prev, ref, s2k[:, n:], mlp_input, geometry).bev
        current = self.lift(curr, prev, s2k[:, :n], mlp_input, geometry)
        # Official order [previous, current], unlike BEVDet4D's [current, previous].
        return current._replace(bev=torch.cat([bev_prev, current.bev], dim=1))

    def lift_to_bev(self, encoded: StereoFrames, batch: Mapping[str, torch.Tensor],
                    indices: BevPoolIndices | None = None) -> Lifted:
        if indices is not None:
            raise ValueError("temporal models compute pooling indices per frame (the previous frame moves with the "
                             "ego vehicle); call without indices")
        return self.fuse_bev(encoded.curr, encoded.prev, encoded.ref, encoded.geometry)

    def fuse(self, curr: FrameFeatures, prev: FrameFeatures, ref: FrameFeatures,
             geometry: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames t, t-1, t-2 -> (logits (B, Dx, Dy, Dz, K), depth of t (B·N, D, fH, fW))."""
        lifted = self.fuse_bev(curr, prev, ref, geometry)
        return self.occ_head(self.bev_encoder(lifted.bev)), lifted.depth

    # ---- batch layout -----------------------------------------------------------------------------
    def split_frames(self, batch: Mapping[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], dict]:
        """Per-frame (img, sensor2ego, ego2global) for [t, t-1, t-2], padded with the current frame,
        and the current frame's geometry (intrinsics, post_rots, post_trans, bda)."""
        split = split_frames(batch, self.num_cameras, NUM_FRAMES)
        if self.training and batch["img"].shape[1] == self.num_cameras and not getattr(self, "_warned_single_frame",
                                                                                         False):
            self._warned_single_frame = True
            log.warning("training a temporal model on single-frame batches: every frame falls back to the "
                        "current one; build the data with DataConfig(num_adjacent=%d)", NUM_FRAMES - 1)
        return split

    def current_geometry(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.num_cameras
        out = {k: batch[k][:, :n] for k in ("img", "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans")}
        out["bda"] = batch["bda"]
        return out


def split_frames(batch: Mapping[str, torch.Tensor], num_cameras: int, num_frames: int
                 ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A frame-major batch of T <= ``num_frames`` frames -> per-frame (img, sensor2ego, ego2global) for
    [t, t-1, ...], padded to ``num_frames`` with the current frame (the official scene-start fallback),
    and the current frame's geometry (intrinsics, post_rots, post_trans, bda). Shared by every temporal
    model (BEVStereo4D here, BEVDepth4DPano in models/panoptic/temporal.py)."""
    b, views = check_inputs(batch)
    n = num_cameras
    if views % n or not 1 <= views // n <= num_frames:
        raise ValueError(f"batch['img'] has {views} views; a temporal model expects T·{n} views (T = 1..{num_frames} "
                         f"frames, frame-major [t, t-1, ...]), e.g. OccDataset with "
                         f"DataConfig(num_adjacent={num_frames - 1})")
    frames = [{k: batch[k][:, i * n:(i + 1) * n] for k in ("img", "sensor2ego", "ego2global")}
              for i in range(views // n)]
    frames += [frames[0]] * (num_frames - len(frames))
    geometry = {k: batch[k][:, :n] for k in ("intrinsics", "post_rots", "post_trans")}
    geometry["bda"] = batch["bda"]
    return frames, geometry


def key_ego_poses(sensor2egos: Sequence[torch.Tensor], ego2globals: Sequence[torch.Tensor]) -> torch.Tensor:
    """Frames [t, t-1, ...] of (B, N, 4, 4) poses -> sensor -> key ego (B, T·N, 4, 4), the key ego being the
    current frame's camera 0 for every frame (BEVDet4D.prepare_inputs): each earlier frame is lifted
    straight into the current key-ego frame, no BEV warping (``align_after_view_transfromation=False``)."""
    return sensor_to_key_ego(torch.cat(list(sensor2egos), 1), torch.cat(list(ego2globals), 1))


def _detached(f: FrameFeatures) -> FrameFeatures:
    return FrameFeatures(None if f.feats is None else f.feats.detach(), f.stereo.detach(), f.sensor2ego, f.ego2global)


class StereoStream:
    """Streaming inference over ordered frames: one backbone pass per frame.

    ``step(batch)`` takes the current frame only (B, N, ...) — or a temporal batch, of which only
    the current frame is read — and returns logits equal to the batch forward on [t, t-1, t-2]
    with the dataset's fallbacks: at a scene start t-1 = t-2 = t; on its second frame t-2 = t.
    A scene starts on the first call, where ``scene_start`` (bool or (B,) bool) says so, or where
    ``batch["scene_names"]`` (from ``collate_batch``) changes. Call ``model.eval()`` first.
    """

    def __init__(self, model: FlashOccStereo4D) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._history: list[FrameFeatures] = []  # most recent first, at most 2
        self._frames_in_scene: torch.Tensor | None = None  # (B,) frames of this scene already cached
        self._scenes: list[str] | None = None

    def _scene_starts(self, batch: Mapping, b: int, scene_start: bool | torch.Tensor | Sequence[bool] | None,
                      device: torch.device) -> torch.Tensor:
        starts = torch.zeros(b, dtype=torch.bool, device=device)
        if scene_start is not None:
            starts |= torch.as_tensor(scene_start, dtype=torch.bool, device=device).expand(b)
        names = batch.get("scene_names")
        if names is not None:
            names = list(names)
            if self._scenes is not None and len(self._scenes) == len(names):
                starts |= torch.tensor([a != c for a, c in zip(names, self._scenes)], device=device)
            self._scenes = names
        if self._frames_in_scene is None:
            starts[:] = True
        elif self._frames_in_scene.shape[0] != b:
            raise ValueError(f"StereoStream got a batch of {b} after batches of {self._frames_in_scene.shape[0]}; "
                             "call reset() before changing the batch size")
        return starts

    @torch.no_grad()
    def step(self, batch: Mapping[str, torch.Tensor],
             scene_start: bool | torch.Tensor | Sequence[bool] | None = None) -> torch.Tensor:
        model = self.model
        if model.training:
            raise RuntimeError("StereoStream is for inference: call model.eval() first")
        frames, geometry = model.split_frames(batch)
        b = frames[0]["img"].shape[0]
        device = frames[0]["img"].device
        starts = self._scene_starts(batch, b, scene_start, device)
        seen = self._frames_in_scene
        seen = torch.zeros(b, dtype=torch.long, device=device) if seen is None else torch.where(starts, 0, seen)
        feats, stereo = model.encode_frame(frames[0]["img"])
        curr = FrameFeatures(feats, stereo, frames[0]["sensor2ego"], frames[0]["ego2global"])
        prev = self._history[0].select(seen < 1, curr) if len(self._history) > 0 else curr
        ref = self._history[1].select(seen < 2, curr) if len(self._history) > 1 else curr
        logits, _ = model.fuse(curr, prev, ref, geometry)
        self._history = [curr] + self._history[:1]
        self._frames_in_scene = seen + 1
        return logits

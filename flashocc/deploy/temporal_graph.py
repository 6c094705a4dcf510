"""The temporal stereo models (M2, M3) as one exportable graph of frames [t, t-1, t-2].

Inputs are the batch ``OccDataset(num_adjacent=2)`` builds (frame-major views: 3·N images, poses of
every frame, the current frame's intrinsics and image augmentation repeated per frame, bda): the
same tensors ``FlashOccStereo4D.forward`` takes, so ``OnnxOccModel`` feeds it like a single-frame
graph. Inside, the batch forward of ``FlashOccStereo4D.fuse_bev`` through the model's own stages
(``encode_frame``, ``stereo_reference``, the view transformer's ``cost_volume``, ``lift`` and
``splat``) with export-friendly pieces: adjugate and rigid inverses instead of ``linalg.inv``, and
the scatter-free pooling of ``flashocc.deploy.pooling``. At a scene start the caller repeats the
current frame for the missing ones (the official fallback; docs/official-behaviour.md, "Adjacent
frames"), as the dataset does.
"""
from __future__ import annotations

import torch
from torch import nn

from flashocc.deploy.pooling import inverse_3x3, inverse_rigid, key_ego_exportable, lift_exportable, pool_in_graph
from flashocc.models.configs import NUM_FRAMES
from flashocc.models.depthnet import camera_mlp_input


class TemporalOccGraph(nn.Module):
    """``forward(img, sensor2ego, ego2global, intrinsics, post_rots, post_trans, bda) -> logits``."""

    def __init__(self, model: nn.Module, accumulate: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.model, self.accumulate = model, accumulate

    def forward(self, img: torch.Tensor, sensor2ego: torch.Tensor, ego2global: torch.Tensor, intrinsics: torch.Tensor,
                post_rots: torch.Tensor, post_trans: torch.Tensor, bda: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = m.num_cameras
        views = [slice(i * n, (i + 1) * n) for i in range(NUM_FRAMES)]
        geometry = (intrinsics[:, :n].float(), post_rots[:, :n].float(), post_trans[:, :n].float(), bda.float())
        feats_t, stereo_t = m.encode_frame(img[:, views[0]])
        feats_p, stereo_p = m.encode_frame(img[:, views[1]])
        stereo_r = m.stereo_reference(img[:, views[2]])
        poses = [(sensor2ego[:, v], ego2global[:, v]) for v in views]
        # Key ego = the current frame's camera 0 for frames t and t-1 (as FlashOccStereo4D.fuse_bev).
        s2k = key_ego_exportable(sensor2ego[:, :2 * n], ego2global[:, :2 * n])
        mlp_input = camera_mlp_input(s2k[:, :n], *geometry)  # the key frame's for every frame
        bev_prev = self.lift(feats_p, stereo_p, poses[1], stereo_r, poses[2], s2k[:, n:], mlp_input, geometry)
        bev_curr = self.lift(feats_t, stereo_t, poses[0], stereo_p, poses[1], s2k[:, :n], mlp_input, geometry)
        bev = torch.cat([bev_prev, bev_curr], dim=1)  # official order [previous, current]
        return m.occ_head(m.bev_encoder(bev))

    def lift(self, feats: torch.Tensor, stereo: torch.Tensor, pose: tuple[torch.Tensor, torch.Tensor],
             adj_stereo: torch.Tensor, adj_pose: tuple[torch.Tensor, torch.Tensor], s2k: torch.Tensor,
             mlp_input: torch.Tensor, geometry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``FlashOccStereo4D.lift``: one frame's BEV map after ``pre_process_net``."""
        m = self.model
        vt = m.img_view_transformer
        intrinsics, post_rots, post_trans, bda = geometry
        curr2global = pose[1].double() @ pose[0].double()
        adj2global = adj_pose[1].double() @ adj_pose[0].double()
        curr2adj = (inverse_rigid(adj2global) @ curr2global).float()
        cost = vt.cost_volume(adj_stereo.flatten(0, 1), stereo.flatten(0, 1), curr2adj, intrinsics, post_rots,
                              post_trans, inverse_3x3=inverse_3x3)
        depth, context = vt.lift(feats, mlp_input, cost)
        coords = lift_exportable(vt.frustum, s2k, intrinsics, post_rots, post_trans, bda)
        bev = vt.splat(depth, context, feats.shape[:2],
                       lambda d, c: pool_in_graph(d, c, coords, vt.lower, vt.interval, vt.grid_size, self.accumulate))
        return m.pre_process_net(bev)[0]

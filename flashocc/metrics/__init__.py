"""Occupancy metrics: Occ3D voxel mIoU, RayIoU, RayPQ and F-score, as the official tools compute them
(docs/official-behaviour.md#miou-with-the-camera-mask and the sections after it).

    from flashocc.metrics import OccMIoU, RayIoU
    m = OccMIoU(); m.update(pred, gt, mask_camera); m.compute()   # {"mIoU": 0..100, "per_class": {...}}
    r = RayIoU(); r.update(pred, gt, origins); r.compute()        # {"RayIoU": 0..1, "RayIoU@1": ..., ...}

Every metric keeps mergeable totals: ``merge(other)``, ``state()`` / ``load_state()`` and
``all_reduce()`` for torch.distributed (see ``flashocc.metrics.common``). ``OccScorer`` runs the
chosen metrics over a split and checks that every sample of it was scored (``flashocc eval`` and
``flashocc evaluate`` both use it).
"""
from flashocc.metrics.fscore import OccFScore
from flashocc.metrics.miou import OccMIoU
from flashocc.metrics.origins import ray_origins_from_infos, scene_ray_origins
from flashocc.metrics.rayiou import RayCaster, RayHits, RayIoU
from flashocc.metrics.raycast import lidar_ray_directions
from flashocc.metrics.raypq import RayPQ
from flashocc.metrics.scorer import OccScorer, ScoreConfig

__all__ = ["OccMIoU", "RayIoU", "RayPQ", "OccFScore", "RayCaster", "RayHits", "lidar_ray_directions",
           "ray_origins_from_infos", "scene_ray_origins", "OccScorer", "ScoreConfig"]

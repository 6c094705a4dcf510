"""Data: info files (ours, BEVDet, mmdet3d), Occ3D volumes, the per-sample pipeline and the synthetic world."""
from flashocc.data.label_subsets import labeled_scenes

__all__ = ["labeled_scenes"]

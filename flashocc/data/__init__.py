"""Data: info files (ours, BEVDet, mmdet3d), Occ3D volumes, the per-sample pipeline and the synthetic world."""

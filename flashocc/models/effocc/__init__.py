"""EFFOcc (synsin0/EFFOcc): LiDAR-camera fusion and LiDAR-only occupancy in plain PyTorch."""
from flashocc.models.effocc.builder import (build_effocc, effocc_fusion_r18, effocc_fusion_r50, effocc_fusion_swinb,
                                            effocc_fusion_tiny, effocc_lidar, effocc_lidar_tiny)
from flashocc.models.effocc.config import EFFOccConfig
from flashocc.models.effocc.model import EFFOcc

__all__ = ["EFFOcc", "EFFOccConfig", "build_effocc", "effocc_fusion_r18", "effocc_fusion_r50", "effocc_fusion_swinb",
           "effocc_fusion_tiny", "effocc_lidar", "effocc_lidar_tiny"]

"""SparseOcc (MCG-NJU/SparseOcc v1.1) in plain PyTorch: config, parts, criterion, builder and presets."""
from flashocc.models.sparseocc.builder import build_sparseocc, sparseocc_r50, sparseocc_r50_pano, sparseocc_tiny
from flashocc.models.sparseocc.config import SparseOccConfig
from flashocc.models.sparseocc.model import SparseOcc

__all__ = ["SparseOcc", "SparseOccConfig", "build_sparseocc", "sparseocc_r50", "sparseocc_r50_pano", "sparseocc_tiny"]

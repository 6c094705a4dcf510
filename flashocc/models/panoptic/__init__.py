"""Panoptic-FlashOcc (``BEVDepthPano``): semantic occupancy plus instance ids from predicted centres.

config.py (``PanopticConfig``), heads.py (``BEVOCCHead2D_V2``, ``CenternessHead``), criterion.py and
losses.py (the official loss terms), targets.py (centre targets from instance ids), assign.py (centre
decoding and the nearest-centre assignment, the class-mapping switch), model.py, temporal.py (the 4D
variants, ``BEVDepth4DPano``), builder.py.
"""
from flashocc.models.panoptic.builder import build_panoptic, build_panoptic4d
from flashocc.models.panoptic.config import Panoptic4DConfig, PanopticConfig
from flashocc.models.panoptic.model import BEVDepthPano
from flashocc.models.panoptic.temporal import BEVDepth4DPano

__all__ = ["PanopticConfig", "Panoptic4DConfig", "BEVDepthPano", "BEVDepth4DPano", "build_panoptic",
           "build_panoptic4d"]

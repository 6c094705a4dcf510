"""Panoptic-FlashOcc (``BEVDepthPano``): semantic occupancy plus instance ids from predicted centres.

config.py (``PanopticConfig``), heads.py (``BEVOCCHead2D_V2``, ``CenternessHead``), criterion.py and
losses.py (the official loss terms), targets.py (centre targets from instance ids), assign.py (centre
decoding and the nearest-centre assignment, the class-mapping switch), model.py, builder.py.
"""
from flashocc.models.panoptic.builder import build_panoptic
from flashocc.models.panoptic.config import PanopticConfig
from flashocc.models.panoptic.model import BEVDepthPano

__all__ = ["PanopticConfig", "BEVDepthPano", "build_panoptic"]

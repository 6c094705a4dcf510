"""The FlashOcc model family: parts (backbone, necks, view transformer, BEV encoders, heads) and presets."""
from flashocc.models.flashocc import FlashOcc
from flashocc.models.presets import PRESETS, ModelConfig, build_model
from flashocc.models.temporal import FlashOccStereo4D, StereoStream

__all__ = ["FlashOcc", "FlashOccStereo4D", "ModelConfig", "PRESETS", "StereoStream", "build_model"]

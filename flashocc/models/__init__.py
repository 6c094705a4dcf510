"""The FlashOcc model family: parts (backbone, necks, view transformer, BEV encoders, heads) and presets."""
from flashocc.models.flashocc import FlashOcc
from flashocc.models.presets import PRESETS, ModelConfig, build_model

__all__ = ["FlashOcc", "ModelConfig", "PRESETS", "build_model"]

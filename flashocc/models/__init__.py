"""The FlashOcc model family: configs per family, parts (backbones, necks, view transformers, BEV
encoders, heads), the criterion, builders and presets. docs/architecture.md shows how they fit."""
from flashocc.models.configs import CameraLSSConfig, ModelConfig, Stereo4DConfig
from flashocc.models.criterion import OccOutputs, OccupancyCriterion
from flashocc.models.flashocc import FlashOcc
from flashocc.models.presets import PRESETS, build_model, get_config
from flashocc.models.pretrained import bundled_presets, load_bundled_weights
from flashocc.models.temporal import FlashOccStereo4D, StereoStream

__all__ = ["CameraLSSConfig", "FlashOcc", "FlashOccStereo4D", "ModelConfig", "OccOutputs", "OccupancyCriterion",
           "PRESETS", "Stereo4DConfig", "StereoStream", "build_model", "bundled_presets", "get_config",
           "load_bundled_weights"]

"""flashocc: FlashOcc-family 3D semantic occupancy prediction in plain PyTorch."""
from flashocc.grid import OCC3D_NUSCENES, OccGrid

__version__ = "0.1.0"

__all__ = ["OCC3D_NUSCENES", "OccGrid", "build_model", "load_checkpoint", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import flashocc` (and the metrics/data subpackages) do not pay for model imports.
    if name == "build_model":
        from flashocc.models.presets import build_model
        return build_model
    if name == "load_checkpoint":
        from flashocc.engine.checkpoint import load_checkpoint
        return load_checkpoint
    raise AttributeError(f"module 'flashocc' has no attribute {name!r}")

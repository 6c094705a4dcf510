"""What every model family's config gives the tools (engine, run config, CLI, deploy), whatever its layers.

A family is a frozen config dataclass plus its builder in ``builders.BUILDERS``; the lift-splat families
share ``configs.ModelConfig``, others (EFFOcc, SparseOcc) have their own classes. The tools read only
what ``FamilyConfig`` lists; anything else they need is asked for with ``getattr`` and a default (a
family without ``bev_channels`` has no BEV map to time, a family without ``img_view_transformer`` no
lift-splat FLOPs model), so a new family works with ``flashocc train / eval / predict / models`` once it
satisfies this protocol.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from flashocc.grid import OccGrid


@runtime_checkable
class FamilyConfig(Protocol):
    family: ClassVar[str]          # "camera-lss", "stereo-4d", "effocc", "sparseocc", ...
    name: str                      # the preset the config came from (saved runs are rebuilt from it)
    description: str
    input_size: tuple[int, int]    # (H, W) of the network input
    with_cp: bool                  # gradient checkpointing (train.grad_checkpoint turns it on)
    grid: OccGrid                  # the occupancy grid the model predicts (and is scored on)

    @property
    def temporal(self) -> bool:
        """True when a sample holds earlier frames (streaming and ONNX export differ)."""

    @property
    def bev_is_3d(self) -> bool:
        """True when the feature map is 3D (channels_last does not apply)."""

    def check(self) -> Any:
        """Cross-field checks (ConfigError naming ``model.<field>``); returns the config."""

    def data_requirements(self) -> dict[str, Any]:
        """``DataConfig`` fields the model needs (``flashocc.config.data_config_for`` applies them)."""


def is_family_config(cfg: Any) -> bool:
    """True for an instance of a config class with a builder (``builders.BUILDERS``, looked up on its MRO)."""
    from flashocc.models.builders import BUILDERS

    return isinstance(cfg, FamilyConfig) and any(k in BUILDERS for k in type(cfg).__mro__)


__all__ = ["FamilyConfig", "is_family_config"]

"""The joint image-text edema model (Chauhan et al. 2020) with an owned fusion module."""

from forgetmi.config import ModelConfig
from forgetmi.models.joint import JointModel, ModelOutput

__all__ = ["ModelConfig", "JointModel", "ModelOutput"]

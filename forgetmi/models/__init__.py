"""The joint image-text edema model (Chauhan et al. 2020) with an owned fusion module; its
settings are :class:`forgetmi.config.ModelConfig`."""

from forgetmi.models.joint import JointModel, ModelOutput

__all__ = ["JointModel", "ModelOutput"]

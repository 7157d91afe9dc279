"""forgetmi: machine unlearning for multimodal (chest X-ray + report) medical models."""

__version__ = "0.1.0"

"""hrm: a faithful, device-agnostic reimplementation of the Hierarchical Reasoning Model."""

from hrm.checkpoint import load_model, save_model_checkpoint
from hrm.config import PretrainConfig
from hrm.errors import HRMError

__version__ = "0.1.0"
__all__ = ["load_model", "save_model_checkpoint", "PretrainConfig", "HRMError", "__version__"]

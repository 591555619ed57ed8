"""hrm: a faithful, device-agnostic reimplementation of the Hierarchical Reasoning Model."""

from hrm.errors import HRMError

__version__ = "0.1.0"
__all__ = ["load_model", "save_model_checkpoint", "PretrainConfig", "HRMError", "__version__"]


def __getattr__(name: str):
    """Import the torch-dependent API on first use, so the dataset builders start without torch."""
    if name in ("load_model", "save_model_checkpoint"):
        from hrm import checkpoint

        return getattr(checkpoint, name)
    if name == "PretrainConfig":
        from hrm.config import PretrainConfig

        return PretrainConfig
    raise AttributeError(f"module 'hrm' has no attribute {name!r}")

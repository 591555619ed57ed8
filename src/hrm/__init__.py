"""hrm: a faithful, device-agnostic reimplementation of the Hierarchical Reasoning Model."""

from hrm.errors import HRMError

__version__ = "0.1.0"
__all__ = ["load_model", "save_model_checkpoint", "PretrainConfig", "HRMError", "__version__"]

# Imported on first use, so tools that need no torch (the dataset builders) start fast and small.
_LAZY = {"load_model": "hrm.checkpoint", "save_model_checkpoint": "hrm.checkpoint", "PretrainConfig": "hrm.config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hrm' has no attribute {name!r}")

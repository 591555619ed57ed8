"""Whether `torch.compile` can run on a device here: on CPU its kernels are C++ that a compiler must build."""

from __future__ import annotations

import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


def cpp_compiler_available() -> bool:
    """Whether a C++ compiler that torch.compile's CPU backend can call is on the PATH."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
    return any(shutil.which(name) for name in candidates)


def can_compile(device: torch.device | str, purpose: str) -> bool:
    """False, with a warning naming `purpose`, on a CPU without a C++ compiler (the run then goes on eagerly
    rather than failing at its first compiled call); True elsewhere."""
    if torch.device(device).type != "cpu" or cpp_compiler_available():
        return True
    logger.warning(
        "torch.compile on CPU needs a C++ compiler (g++ or clang++, or one named by $CXX) and none was found; "
        "%s runs without it (install one, e.g. build-essential or Xcode's command line tools)",
        purpose,
    )
    return False

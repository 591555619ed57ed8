"""Optimiser sets by name: how a run's weights are optimised, chosen by the config key `optimizers`.

A set is a function `(model, config, world_size) -> [(optimizer, base_lr), ...]` for the model's weights,
registered under its name by the module that defines it (`@register_optimizer_set("name")`). Every module of
this package is imported on the first look-up, so a new set is one new file here and edits no existing one.
The puzzle embedding is not part of a set: every run that has one updates it with sign-SGD.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from hrm.errors import ConfigError

if TYPE_CHECKING:
    from hrm.config import PretrainConfig

OptimizerSetBuilder = Callable[[nn.Module, "PretrainConfig", int], list[tuple[torch.optim.Optimizer, float]]]

_SETS: dict[str, OptimizerSetBuilder] = {}
_discovered = False


def register_optimizer_set(name: str) -> Callable[[OptimizerSetBuilder], OptimizerSetBuilder]:
    """Decorator: make `builder` the optimiser set called `name` (a second set of the same name is an error)."""

    def register(builder: OptimizerSetBuilder) -> OptimizerSetBuilder:
        if name in _SETS and _SETS[name] is not builder:
            raise ValueError(f"optimiser set {name!r} is registered twice")
        _SETS[name] = builder
        return builder

    return register


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")
    _discovered = True


def optimizer_set_names() -> list[str]:
    _discover()
    return sorted(_SETS)


def optimizer_set(name: str) -> OptimizerSetBuilder:
    """The builder of set `name`; an unknown name is a ConfigError that lists the known ones."""
    _discover()
    if name not in _SETS:
        raise ConfigError(f"optimizers={name!r} is not an optimiser set; choose one of {', '.join(sorted(_SETS))}")
    return _SETS[name]

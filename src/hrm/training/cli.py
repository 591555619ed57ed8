"""Command-line glue for `pretrain.py`: Hydra config -> validated `PretrainConfig` -> training.

Every user mistake ends as one line `error: <message>` and exit status 2 (through `hrm.commands.run_command`,
which also turns out of memory and Ctrl-C into one line): Hydra's own override errors (checked up front by
composing the config once), interpolation errors, pydantic validation errors and the trainer's
dataset/checkpoint errors.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hrm.commands import run_command
from hrm.config import PretrainConfig, validate_config
from hrm.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # package data (`configs/` at the repo root links here)
CONFIG_NAME = "cfg_pretrain"
MEMORY_SETTINGS = "global_batch_size (or arch.hidden_size)"


_NOT_IN_STRUCT = re.compile(r"Could not override '([^']+)'")


def hydra_error_message(err: BaseException) -> str:
    """A Hydra or OmegaConf exception and its causes as one line (Hydra spreads its messages over several
    lines and lists the search path and options; the key or option at fault is kept)."""
    text = "\n".join(str(e) for e in _chain(err))
    unknown = _NOT_IN_STRUCT.search(text)
    if unknown and "not in struct" in text:
        key = unknown.group(1)
        return f"{key}: unknown config key (check its spelling; see configs/cfg_pretrain.yaml; to add a new key use +{key}=...)"
    text = text.split("Config search path")[0]
    text = re.sub(
        r"Available options in '([^']+)':\s*((?:\n\s*\S+)+)",
        lambda m: f"available options in '{m.group(1)}': " + ", ".join(m.group(2).split()),
        text,
    )
    parts: list[str] = []
    for line in text.splitlines():
        line = line.strip().rstrip(".")
        if (
            line
            and not line.startswith(("full_key:", "object_type=", "Set the environment variable"))
            and line not in parts
        ):
            parts.append(line)
    message = "; ".join(parts) or type(err).__name__
    if isinstance(err, OverrideParseException):
        message += "; quote a value that holds '=', spaces, brackets or non-ASCII characters: 'key=\"value\"'"
    return message


def _chain(err: BaseException) -> list[BaseException]:
    chain = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def accept_plus_for_existing_keys(argv: Sequence[str]) -> list[str]:
    """`+key=value` for a key our config already has becomes `key=value`.

    TRM's README names runs with `+run_name=...` (its config lacks the key); Hydra refuses `+` for a key
    that exists, and ours has `run_name`, so TRM's commands run unchanged. Config groups (`+experiment=`) stay.
    """
    known = set(PretrainConfig.model_fields)
    return [
        arg[1:] if arg.startswith("+") and not arg.startswith("++") and arg[1:].split("=", 1)[0] in known else arg
        for arg in argv
    ]


def quote_plain_values(argv: Sequence[str]) -> list[str]:
    """`key=value` with a plain value Hydra's grammar cannot read unquoted (one holding `=`, spaces or non-ASCII
    characters, e.g. a path `runs/lr=1e-4/résultats`) is passed to Hydra quoted, so paths work as typed.

    Values that are already quoted, lists, dicts and interpolations (`[`, `{`, `'`, `"`, `${`) stay as given;
    Hydra flags (`--...`) too.
    """
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        plain = sep and not arg.startswith("-") and not value.startswith(("[", "{", "'", '"', "${"))
        if plain and ("=" in value or " " in value or not value.isascii()):
            arg = f'{key}="{value.replace(chr(34), chr(92) + chr(34))}"'
        quoted.append(arg)
    return quoted


def compose_config(
    overrides: Sequence[str], config_dir: Path = CONFIG_DIR, config_name: str = CONFIG_NAME
) -> DictConfig:
    """The config that `pretrain.py <overrides>` would get, composed with Hydra's API."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def check_command_line(argv: Sequence[str] | None = None, config_dir: Path = CONFIG_DIR) -> None:
    """Compose and validate the config before Hydra starts, so mistakes are one-line errors.

    Hydra flags (`--help`, `-m`, `--cfg`...) and `hydra.*` overrides are left to Hydra itself.
    """
    from hydra.errors import HydraException

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg.startswith("-") for arg in argv):
        return
    overrides = [arg for arg in argv if not arg.lstrip("+~").startswith(("hydra.", "hydra/"))]

    def check() -> None:
        try:
            cfg = compose_config(overrides, config_dir)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(hydra_error_message(err)) from None
        to_pretrain_config(cfg)

    code = run_command(check, memory_settings=MEMORY_SETTINGS)
    if code:
        raise SystemExit(code)


def to_pretrain_config(cfg: DictConfig | dict[str, Any]) -> PretrainConfig:
    """Resolve interpolations and validate every key and value (one-line ConfigError on failure)."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(hydra_error_message(err)) from None
    data.pop("hydra", None)
    return validate_config(data)


def run_from_hydra(cfg: DictConfig) -> None:
    """The body of the Hydra app: validate and train; every failure ends as one line and an exit status."""
    from hrm.training.trainer import run_training

    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)

    def train() -> None:
        run_training(to_pretrain_config(cfg))

    code = run_command(
        train,
        memory_settings=MEMORY_SETTINGS,
        interrupted="interrupted (Ctrl-C) before a checkpoint could be saved; the last saved one (if any) is intact",
    )
    if code:
        raise SystemExit(code)

"""`evaluate.py`'s own keys, validated at the door: the command line split into evaluator keys and training
config overrides, the protocol combinations that cannot run together, and the checkpoints named."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from hrm.checkpoint import STEP_FILE, resolve_checkpoint_path
from hrm.commands import read_values, split_arguments
from hrm.config import PretrainConfig, validate_config
from hrm.errors import CheckpointError, ConfigError
from hrm.evaluation import identifiers
from hrm.evaluation.runner import OUTPUT_KEYS

ORIGINAL_SAVE_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]
SAVABLE_OUTPUTS = {*OUTPUT_KEYS, "steps"}


class EvalConfig(BaseModel):
    """The evaluator's own keys (the original's `checkpoint` and `save_outputs`, plus ours)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None
    save_outputs: list[str] = Field(default_factory=lambda: list(ORIGINAL_SAVE_OUTPUTS))
    output: str = "results.json"
    halt: Literal["max", "act"] = "max"
    halt_max_steps_sweep: list[int] = Field(default_factory=list)
    batch_size: PositiveInt | Literal["auto"] | None = Field(
        None,
        description="global evaluation batch size; default: the run's global_batch_size; auto (halt=act, Augmented HRM): as large as memory allows",
    )
    device: str = "auto"
    compile: Literal["auto"] | bool = Field(
        "auto",
        description="torch.compile the evaluation segment of halt=act and Augmented HRM; auto: when the run is long enough to repay it",
    )
    task: Literal["auto", "sudoku", "maze", "arc", "none"] = "auto"
    submission: str | None = None
    verdicts: str | None = Field(
        None,
        description="Augmented HRM: the per-puzzle verdicts file (.npz); default verdicts.npz beside output=",
    )
    permutes: int = Field(1, ge=1)
    checkpoints: list[str] | str | None = None
    calibration_bins: int = Field(10, ge=1)
    progress: bool = True
    puzzle_identifiers: list[str] | str = (
        "as_is"  # identifier ablation: as_is|blank|mean|shuffled, a comma list runs several
    )
    identifier_seed: int = 0
    best_of_Ns: list[PositiveInt] = Field(
        default_factory=list,
        description="ARC: also score best_of@N (URM's ARC/maj@N): of N answers drawn in proportion to confidence, the most confident",
    )
    best_of_seed: int = 0

    @property
    def is_augmented(self) -> bool:
        """Augmented HRM: several perturbations of each input, or several checkpoints."""
        return self.permutes > 1 or bool(self.checkpoints)

    @property
    def identifier_modes(self) -> list[str]:
        return identifiers.parse_modes(self.puzzle_identifiers)


def parse_args(argv: Sequence[str]) -> tuple[EvalConfig, list[str]]:
    """Split `key=value` arguments into the evaluator's config and training-config overrides."""
    own, overrides = [], []
    for argument in split_arguments(argv, "checkpoint=checkpoints/run/step_1000"):
        top = argument.key.split(".", 1)[0]
        if top in EvalConfig.model_fields:
            own.append(argument)
        elif top in PretrainConfig.model_fields:
            overrides.append(argument.text)
        else:
            raise ConfigError(
                f"{argument.key}: unknown key; evaluator keys are {', '.join(EvalConfig.model_fields)}, "
                "and training config keys (data_path=, arch.halt_max_steps=, ...) override the checkpoint's config"
            )
    config = validate_config(read_values(own, EvalConfig), EvalConfig)
    check_combinations(config)
    return config, overrides


def check_combinations(config: EvalConfig) -> None:
    """Values and protocol combinations the evaluator cannot run, each a one-line ConfigError."""
    unknown = sorted(set(config.save_outputs) - SAVABLE_OUTPUTS)
    if unknown:
        raise ConfigError(
            f"save_outputs: {unknown[0]!r} is not an output; choose from {', '.join(sorted(SAVABLE_OUTPUTS))}"
        )
    if any(k < 1 for k in config.halt_max_steps_sweep):
        raise ConfigError("halt_max_steps_sweep: every value must be at least 1")
    if config.checkpoint is None and not config.checkpoints:
        raise ConfigError("checkpoint=PATH is required (a step_N file or a run's checkpoint folder)")
    modes = config.identifier_modes
    if config.is_augmented and config.halt_max_steps_sweep:
        raise ConfigError(
            "halt_max_steps_sweep does not combine with the Augmented-HRM protocol (permutes=, checkpoints=); run them separately"
        )
    if config.batch_size == "auto" and not config.is_augmented and config.halt != "act":
        raise ConfigError(
            "batch_size=auto works with halt=act and the Augmented-HRM protocol (permutes=, checkpoints=); "
            "give halt=max a number, or leave batch_size out for the run's global_batch_size"
        )
    if config.verdicts and not config.is_augmented:
        raise ConfigError(
            "verdicts= is the Augmented-HRM protocol's per-puzzle file; add permutes=N or checkpoints=, or leave it out"
        )
    if config.is_augmented and modes != ["as_is"]:
        raise ConfigError(
            "puzzle_identifiers does not combine with the Augmented-HRM protocol (permutes=, checkpoints=); run them separately"
        )


def expand_checkpoints(config: EvalConfig) -> list[Path]:
    """`checkpoint` then `checkpoints` (paths, folders or globs), each resolved to a step_N file."""
    items = [config.checkpoint] if config.checkpoint else []
    items += [config.checkpoints] if isinstance(config.checkpoints, str) else list(config.checkpoints or [])
    files: list[Path] = []
    for item in items:
        if glob.has_magic(item):
            matches = [Path(p) for p in glob.glob(item) if Path(p).is_dir() or STEP_FILE.match(Path(p).name)]
            if not matches:
                raise CheckpointError(f"no checkpoint matches {item!r}")
            matches.sort(
                key=lambda p: (str(p.parent), int(m.group(1)) if (m := STEP_FILE.match(p.name)) else -1, p.name)
            )
            files += [resolve_checkpoint_path(p) for p in matches]
        else:
            files.append(resolve_checkpoint_path(item))
    if not config.is_augmented and len(files) > 1:
        raise ConfigError("several checkpoints need the Augmented-HRM protocol: pass them as checkpoints=[...]")
    return files

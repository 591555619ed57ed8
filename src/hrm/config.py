"""The training configuration (`cfg_pretrain.yaml` + `arch/*.yaml`), validated by pydantic at the door.

Key names are the original's, so its README commands and `all_config.yaml` files work unchanged.
Unknown keys are errors that name the key. `arch` holds `name`, `loss` and the model's own fields,
which are checked against the config class of the model that `name` selects.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Union

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from hrm.commands import split_arguments
from hrm.errors import ConfigError, one_line

HRM_ARCH_NAME = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
TRANSFORMER_ARCH_NAME = "hrm.transformer_baseline@TransformerBaselineACT"
ACT_LOSS_NAME = "losses@ACTLossHead"
DATA_FILLED_FIELDS = ("batch_size", "seq_len", "vocab_size", "num_puzzle_identifiers")


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ACT_LOSS_NAME
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = "stablemax_cross_entropy"


class ArchConfig(BaseModel):
    """`name`, `loss`, and the model's fields (kept as extras, validated by the model's config class)."""

    model_config = ConfigDict(extra="allow")

    name: str = HRM_ARCH_NAME
    loss: LossConfig = Field(default_factory=LossConfig)

    @property
    def model_fields_set_by_user(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_model_fields(self) -> "ArchConfig":
        from hrm.models.registry import loss_class, model_class

        cls = model_class(self.name)
        loss_class(self.loss.name)
        extras = self.model_fields_set_by_user
        for key in DATA_FILLED_FIELDS:
            if key in extras:
                raise ValueError(f"{key} is filled from the dataset metadata and cannot be set in arch")
        placeholders = {key: 1 for key in DATA_FILLED_FIELDS}
        try:
            cls.config_class(**placeholders, **extras)
        except ValidationError as err:
            first = err.errors()[0]
            raise PydanticCustomError(
                "arch_field",
                "{message}",
                {"field": ".".join(str(p) for p in first["loc"]), "message": _describe(first)},
            ) from None
        return self


class EvaluatorConfig(BaseModel):
    """One entry of TRM's `evaluators` list: `name` (e.g. `arc@ARC`) plus that evaluator's options."""

    model_config = ConfigDict(extra="allow")

    name: str


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: ArchConfig = Field(default_factory=ArchConfig)
    data_path: str = "data/arc-aug-1000"
    # TRM's keys: several datasets trained together (data_path becomes the first; a one-entry list is
    # stored as data_path alone); evaluation datasets (empty: the training ones).
    data_paths: list[str] = Field(default_factory=list)
    data_paths_test: list[str] = Field(default_factory=list)

    # Hyper-parameters of the original (its ARC-AGI defaults).
    global_batch_size: int = Field(768, gt=0)
    epochs: int = Field(100000, gt=0)
    eval_interval: int | None = Field(10000, gt=0)
    checkpoint_every_eval: bool = True
    lr: float = Field(1e-4, ge=0.0, allow_inf_nan=False)
    lr_min_ratio: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    lr_warmup_steps: int = Field(2000, ge=0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0, allow_inf_nan=False)
    beta2: float = Field(0.95, ge=0.0, lt=1.0, allow_inf_nan=False)
    weight_decay: float = Field(0.1, ge=0.0, allow_inf_nan=False)
    puzzle_emb_weight_decay: float = Field(0.1, ge=0.0, allow_inf_nan=False)
    puzzle_emb_lr: float = Field(1e-2, ge=0.0, allow_inf_nan=False)
    # How the weights are optimised (hrm.training.optimizers): `adam_atan2` (HRM, TRM, URM's default) or `muon`;
    # null: `muon` with use_muon=True, else `adam_atan2`.
    optimizers: str | None = None
    use_muon: bool = False  # URM's flat key: True selects optimizers=muon
    grad_accum_steps: int = Field(1, gt=0)  # URM's key: the optimisers step once every this many batches

    # TRM's training keys.
    evaluators: list[EvaluatorConfig] = Field(default_factory=list)
    load_checkpoint: str | None = (
        None  # initial weights (a puzzle-embedding table of another shape becomes its mean row)
    )
    ema: bool = False
    ema_rate: float = Field(0.999, ge=0.0, le=1.0, allow_inf_nan=False)
    freeze_weights: bool = False  # train only the puzzle embedding
    min_eval_interval: int | None = Field(0, ge=0)  # no evaluation or checkpoint before this chunk index

    # URM's other training keys (`use_muon` and `grad_accum_steps` are above), read from URM's configs with no
    # effect here: `loop_deltas` (URM ignores it too), `target_q_update_every` (dead in every original),
    # `load_strict` (loading is always strict, except the puzzle table's mean-row resize) and
    # `load_optimizer_state` (`load_checkpoint` loads weights; `resume` continues a run with its optimisers).
    loop_deltas: list[Union[int, str]] = Field(default_factory=list)
    target_q_update_every: int | None = None
    load_strict: bool = True
    load_optimizer_state: bool = True

    # Naming and outputs.
    project_name: str | None = None
    run_name: str | None = None
    checkpoint_path: str | None = None
    seed: int = 0
    eval_save_outputs: list[str] = Field(default_factory=list)

    # Keys this project adds.
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    compile: Union[Literal["auto"], bool] = "auto"
    wandb_mode: Literal["online", "offline", "disabled"] = "online"
    resume: str | None = None
    cpu_forward_dtype: Literal["auto", "float32", "bfloat16", "float16"] = (
        "float32"  # auto: bf16 where the CPU has bf16 instructions
    )
    checkpoint_every_steps: int | None = Field(None, gt=0)  # resumable checkpoint every N steps
    checkpoint_keep_last: int | None = Field(None, gt=0)  # keep only the newest K checkpoints
    max_steps: int | None = Field(None, gt=0)  # stop early (resumable), e.g. for a time-limited job
    nonfinite_loss: Literal["stop", "skip"] = "stop"
    log_interval: int = Field(1, gt=0)
    data_workers: Union[Literal["auto"], int] = "auto"
    progress: Literal["auto", "bar", "lines", "off"] = "auto"  # auto: a bar on a terminal, log lines otherwise

    @model_validator(mode="after")
    def _first_dataset_is_data_path(self) -> "PretrainConfig":
        """One canonical form: data_path is the first dataset; data_paths stays empty for a single one."""
        if self.data_paths:
            self.data_path = self.data_paths[0]
            if len(self.data_paths) == 1:
                self.data_paths = []
        return self

    @model_validator(mode="after")
    def _use_muon_selects_muon(self) -> "PretrainConfig":
        """URM's `use_muon=True` is `optimizers=muon`; naming another set beside it is a contradiction."""
        from hrm.training.optimizers.registry import optimizer_set_names

        if self.optimizers is None:
            self.optimizers = "muon" if self.use_muon else "adam_atan2"
        elif self.use_muon and self.optimizers != "muon":
            raise ValueError(f"use_muon=True contradicts optimizers={self.optimizers}; set only one of them")
        if self.optimizers not in optimizer_set_names():
            raise ValueError(
                f"optimizers={self.optimizers!r} is not an optimiser set; choose one of {', '.join(optimizer_set_names())}"
            )
        return self

    @property
    def train_data_paths(self) -> list[str]:
        """The training datasets: `data_paths`, else `[data_path]`."""
        return list(self.data_paths) or [self.data_path]

    @property
    def test_data_paths(self) -> list[str]:
        """The evaluation datasets: `data_paths_test`, else the training ones."""
        return list(self.data_paths_test) or self.train_data_paths


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """The first problem of a pydantic error as one line: `key.path: message (got value)`."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    if first["type"] == "arch_field":
        loc.append(first["ctx"]["field"])
        message = first["ctx"]["message"]
    else:
        message = _describe(first)
    where = ".".join(part for part in (prefix, *loc) if part)
    return f"{where}: {message}" if where else message


def _describe(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling; see configs/ for the valid keys)"
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict):
        message = f"{message} (got {error['input']!r})"
    return message


def validate_config(data: dict[str, Any], model: type[BaseModel] = PretrainConfig, prefix: str = "") -> BaseModel:
    """Validate a plain dict into `model`, turning pydantic's report into a one-line ConfigError."""
    try:
        return model(**data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix)) from None


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply Hydra-style `key=value` overrides (`+key=`/`++key=` accepted) to a plain config dict.

    `data_path=` replaces a stored `data_paths` list (and `data_paths=` a stored `data_path`), so either
    spelling points a saved run at another dataset.
    """
    overrides = list(overrides)
    arguments = split_arguments(overrides, "data_path=data/sudoku-extreme-1k-aug-1000")
    dotlist = [f"{argument.key}={argument.value}" for argument in arguments]
    keys = {argument.key for argument in arguments}
    for given, stale in (("data_path", ("data_paths", "data_paths_test")), ("data_paths", ("data_path",))):
        if given in keys:
            data = {key: value for key, value in data.items() if key not in stale or key in keys}
    try:
        merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(dotlist))
        return OmegaConf.to_container(merged, resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"cannot apply the overrides {' '.join(overrides)}: {one_line(err)}") from None

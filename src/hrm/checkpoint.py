"""Model checkpoints in the original's layout: `<dir>/step_N` (a state dict) beside `<dir>/all_config.yaml`.

`load_model` reads checkpoints written by this project or by the original code (with or without
torch.compile's `_orig_mod.` key prefixes, and the published HRM checkpoints); `save_model_checkpoint`
writes them as the original's compiled training does (every key prefixed `_orig_mod.`), which is what the
original's `evaluate.py` and the tools built on it load on their default path (torch.compile on); their
`DISABLE_COMPILE` fallback strips the prefix. Checkpoints are data: they are read with `weights_only=True`.
"""

from __future__ import annotations

import errno
import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml
from torch import nn

from hrm.atomic import atomic_write_bytes, atomic_write_text
from hrm.config import PretrainConfig, apply_overrides, validate_config
from hrm.data.combined import combine_metadata
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import CheckpointError, HRMError, one_line
from hrm.hub import download_checkpoint, is_hub_path
from hrm.models.registry import build_model, seq_len_from_state
from hrm.paths import STEP_FILE

logger = logging.getLogger(__name__)

CONFIG_FILE = "all_config.yaml"
PUZZLE_EMB_KEY = "model.inner.puzzle_emb.weights"
EMBED_TOKENS_KEY = "model.inner.embed_tokens.embedding_weight"
# Where a checkpoint holding more than weights keeps them: this project's full training checkpoint, and
# URM's `step_N.pt` (`{step, model_state_dict, optimizer_states, rng_state}`).
FULL_CHECKPOINT_MODEL_KEYS = ("model", "model_state_dict")
COMPILED_PREFIX = "_orig_mod."  # torch.compile's wrapper adds it to every key of the wrapped model


def latest_step_file(directory: str | Path) -> Path:
    """The `step_N` file with the largest N in `directory`."""
    directory = Path(directory)
    steps = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_FILE.match(p.name)) and p.is_file()]
    if not steps:
        raise CheckpointError(
            f"no step_N checkpoint file in {directory}; point at a checkpoint file or a run's checkpoint folder"
        )
    return max(steps)[1]


def resolve_checkpoint_path(path: str | Path) -> Path:
    if is_hub_path(path):
        return download_checkpoint(path)
    path = Path(path)
    if path.is_dir():
        chosen = latest_step_file(path)
        logger.debug(
            "using the latest checkpoint in %s: %s", path, chosen.name
        )  # CLIs name the file once their checks pass
        return chosen
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def read_stored_config(checkpoint_file: Path) -> dict[str, Any]:
    """The `all_config.yaml` beside a checkpoint file, as stored (a plain mapping, not yet validated)."""
    config_path = checkpoint_file.parent / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(
            f"{config_path} is missing; a checkpoint needs the {CONFIG_FILE} written beside it at training time"
        )
    try:
        data = yaml.safe_load(config_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{config_path} is not valid YAML ({one_line(err)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{config_path} does not hold a config mapping")
    return data


def clean_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (`_orig_mod.` from torch.compile, `module.` from DDP) from the keys."""
    cleaned = {}
    for key, value in state.items():
        key = key.replace(COMPILED_PREFIX, "")
        while key.startswith("module."):
            key = key[len("module.") :]
        cleaned[key] = value
    return cleaned


def load_weights_only(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; every failure is a one-line CheckpointError.

    torch's own message for a file holding other Python objects advises retrying with weights_only=False,
    which would run whatever code the file carries; this project never does, so the message says so instead.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {one_line(err)}") from None
    if size == 0:
        raise CheckpointError(
            f"cannot read {path}: the file is empty (0 bytes), not a checkpoint; it was not written completely, use another checkpoint"
        )
    corrupt = CheckpointError(
        f"cannot read {path}: it is corrupt (truncated or corrupt, not a checkpoint this project can read); "
        "use another checkpoint (a Hub checkpoint: delete it from the Hugging Face cache and download it again)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's pickle-protocol warning would add lines to the error
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # garbage bytes, not a file carrying code
            raise corrupt from None
        raise CheckpointError(
            f"cannot read {path}: it is not a checkpoint this project can read safely (it holds Python objects "
            "other than tensors, and checkpoints are only ever loaded as data, weights_only=True); use a "
            "checkpoint written by training"
        ) from None
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR, errno.EIO):
            raise CheckpointError(f"cannot read {path}: {one_line(err)}") from None
        raise corrupt from None  # torch reports a cut-off archive as EINVAL ("Invalid argument")
    except (
        Exception
    ) as err:  # torch raises many types (RuntimeError, EOFError, KeyError) for truncated or foreign files
        reason = one_line(err).split(". ")[0]
        detail = "" if "weights_only" in reason else f" ({type(err).__name__}: {reason})"
        raise CheckpointError(
            f"cannot read {path}: it is not a checkpoint this project can read (truncated or corrupt, or not a "
            f"PyTorch file){detail}; use another checkpoint"
        ) from None


def read_state_dict(checkpoint_file: Path) -> dict[str, torch.Tensor]:
    state = load_weights_only(checkpoint_file)
    if isinstance(state, dict):
        for key in FULL_CHECKPOINT_MODEL_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{checkpoint_file} does not hold a model state dict")
    return clean_state_dict(state)


def stored_dataset_shapes(config: PretrainConfig, beside: Path | None = None) -> dict[str, int] | None:
    """vocab_size, seq_len and num_puzzle_identifiers of the dataset a config names (its data_path, or its
    `data_paths` combined), else of a `data/` dataset folder kept beside the checkpoint; None when none is here."""
    paths = config.train_data_paths
    if len(paths) > 1:  # several datasets trained as one: their identifier tables are stacked
        try:
            metas = [PuzzleDatasetMetadata.load(Path(path) / "train") for path in paths]
            return combine_metadata(paths, metas).model_shapes()
        except HRMError:
            return None
    for data_path in dict.fromkeys([*paths, *config.test_data_paths] + ([beside / "data"] if beside else [])):
        for split in ("train", "test"):
            try:
                return PuzzleDatasetMetadata.load(Path(data_path) / split).model_shapes()
            except HRMError:
                continue
    return None


def dataset_shapes(
    config: PretrainConfig, state: dict[str, torch.Tensor], beside: Path | None = None
) -> dict[str, int]:
    """The sizes a model of `config` takes from its data (`stored_dataset_shapes`), else from the weights."""
    found = stored_dataset_shapes(config, beside)
    if found is not None:
        return found
    shapes: dict[str, int] = {}
    if EMBED_TOKENS_KEY in state:
        shapes["vocab_size"] = state[EMBED_TOKENS_KEY].shape[0]
    puzzle = state.get(PUZZLE_EMB_KEY)
    shapes["num_puzzle_identifiers"] = puzzle.shape[0] if puzzle is not None else 1
    seq_len = seq_len_from_state(config.arch, state)  # the architecture knows its prepended positions
    if seq_len is not None:
        shapes["seq_len"] = seq_len
    if "seq_len" not in shapes or "vocab_size" not in shapes:
        raise CheckpointError(
            f"no dataset metadata at data_path={config.data_path} and the weights do not fix seq_len; "
            "pass the dataset folder as an override, e.g. data_path=data/sudoku-extreme-1k-aug-1000"
        )
    logger.info("dataset metadata not found at %s; sizes taken from the weights: %s", config.data_path, shapes)
    return shapes


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(
            f"{source} lacks {len(missing)} model keys, e.g. {missing[0]}; was it written for another architecture (arch.name)?"
        )
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} keys the model does not, e.g. {unexpected[0]}; check arch.* settings against the run that wrote it"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"shape mismatch for {key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[key].shape)}; "
                "the dataset (vocab, seq_len, identifiers) or arch settings differ from the training run"
            )


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint read once: the `step_N` file, its `all_config.yaml` as stored, and its state dict.

    Tools that need the config under several sets of overrides, the weights' shapes, and the model ask this
    object instead of reading the files again.
    """

    file: Path
    stored_config: dict[str, Any]
    state: dict[str, torch.Tensor]

    @classmethod
    def read(cls, path: str | Path) -> "Checkpoint":
        """`path` is a `step_N` file, a run's folder (its latest `step_N`) or an `hf://` address."""
        checkpoint_file = resolve_checkpoint_path(path)
        stored = read_stored_config(checkpoint_file)  # a missing config fails before the large state dict is read
        return cls(checkpoint_file, stored, read_state_dict(checkpoint_file))

    def config(self, overrides: Iterable[str] = ()) -> PretrainConfig:
        """The training config with Hydra-style `key=value` overrides applied, validated."""
        return validate_config(apply_overrides(self.stored_config, overrides))

    def build_model(
        self, config: PretrainConfig, shapes: dict[str, int], device: str | torch.device = "cpu"
    ) -> nn.Module:
        """The loss-head-wrapped model of `config` and dataset `shapes`, holding these weights, in eval mode."""
        model = build_model(config.arch, batch_size=config.global_batch_size, **shapes)
        check_state_dict(model, self.state, self.file)
        model.load_state_dict(self.state, strict=True)
        return model.to(device).eval()


def load_model(
    path: str | Path, device: str | torch.device = "cpu", overrides: Iterable[str] = ()
) -> tuple[nn.Module, PretrainConfig]:
    """Load a checkpoint (ours or the original's) as `(loss-head-wrapped model in eval mode, config)`.

    `path` is a `step_N` file or a folder (its latest `step_N`); `all_config.yaml` must sit beside it.
    `overrides` are Hydra-style `key=value` strings applied before the model is built.
    """
    checkpoint = Checkpoint.read(path)
    config = checkpoint.config(overrides)
    shapes = dataset_shapes(config, checkpoint.state, beside=checkpoint.file.parent)
    return checkpoint.build_model(config, shapes, device), config


def save_model_checkpoint(model: nn.Module, config: PretrainConfig, directory: str | Path, step: int) -> Path:
    """Write `<directory>/step_<step>` and `all_config.yaml` atomically, in the original's layout.

    The keys carry the `_orig_mod.` prefix, as the original's (compiled) training writes them, whether or not
    `model` is compiled here.
    """
    directory = Path(directory)
    state = {COMPILED_PREFIX + key: value for key, value in clean_state_dict(model.state_dict()).items()}
    path = directory / f"step_{step}"
    atomic_write_bytes(path, lambda handle: torch.save(state, handle))
    write_config(config, directory)
    return path


def write_config(config: PretrainConfig, directory: str | Path) -> Path:
    path = Path(directory) / CONFIG_FILE
    data = config.model_dump()
    data["data_paths"] = config.train_data_paths  # TRM's code reads the datasets from this list
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def load_initial_weights(model: nn.Module, path: str | Path) -> None:
    """Initialise `model` from any checkpoint, ours or an original's (TRM's `load_checkpoint`).

    A puzzle-embedding table of another shape (another dataset's identifiers) is replaced by the mean
    of the checkpoint's rows in every row; every other tensor must match the model.
    """
    checkpoint_file = resolve_checkpoint_path(path)
    state = read_state_dict(checkpoint_file)
    expected = model.state_dict()
    table = state.get(PUZZLE_EMB_KEY)
    if table is not None and PUZZLE_EMB_KEY in expected and table.shape != expected[PUZZLE_EMB_KEY].shape:
        target = expected[PUZZLE_EMB_KEY]
        if table.shape[1:] != target.shape[1:]:
            raise CheckpointError(
                f"load_checkpoint={path}: puzzle embedding width {tuple(table.shape[1:])} differs from the model's "
                f"{tuple(target.shape[1:])}; set arch.puzzle_emb_ndim as in the run that wrote it"
            )
        logger.info(
            "load_checkpoint: puzzle embedding %s -> %s, every row set to the checkpoint's mean row",
            tuple(table.shape),
            tuple(target.shape),
        )
        state = {
            **state,
            PUZZLE_EMB_KEY: table.to(torch.float32)
            .mean(dim=0, keepdim=True)
            .expand_as(target)
            .to(target.dtype)
            .clone(),
        }
    check_state_dict(model, state, checkpoint_file)
    model.load_state_dict(state, strict=True)

"""`python -m hrm.analysis [WHAT] checkpoint=PATH [key=value ...]`: figures and numbers for one checkpoint.

WHAT is `all` (default) or a comma-separated list of: boards, residuals, pca, errors, qvalues, pr,
unknowns, fixed-points, calibration. Keys of this tool are listed in USAGE; any other `key=value`
(e.g. `data_path=...`, `arch.halt_max_steps=32`) overrides the checkpoint's training config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch

from hrm.analysis.data import Puzzles, load_examples, puzzle_from_string
from hrm.analysis.metrics import calibration_from_evaluator
from hrm.analysis.report import ANALYSES, AnalysisOptions, run_analyses
from hrm.analysis.trace import hrm_inner
from hrm.checkpoint import CONFIG_FILE, load_model, resolve_checkpoint_path
from hrm.commands import check_outputs_are_not_inputs, run_command, split_arguments
from hrm.errors import AnalysisError, one_line
from hrm.paths import check_output_folder
from hrm.tasks import TASK_NAMES, resolve

USAGE = """usage: python -m hrm.analysis [all|boards,residuals,pca,errors,qvalues,pr,unknowns,fixed-points,calibration]
                          checkpoint=PATH [key=value ...]

  checkpoint=PATH        step_N file or a run's checkpoint folder (its latest step_N)
  data_path=PATH         dataset folder (default: the checkpoint's data_path)
  puzzle=TEXT            trace this puzzle instead of dataset examples: Sudoku of side^2 chars (. or 0 blank),
                         maze rows joined by | (chars '# SGo'), or an ARC grid as JSON
  puzzle_file=PATH       the same, read from a file;  solution=TEXT  its answer (Sudoku: solved if absent)
  task=auto|sudoku|maze|arc|generic   (auto: from vocab_size/seq_len)
  out=DIR                output folder (default outputs/analysis/<checkpoint folder name>)
  device=auto|cpu|cuda|mps
  num_puzzles=4          puzzles traced in full (boards, residuals, PCA, error curves, Q-values)
  split=test             dataset split for every analysis;  calibration_puzzles=256  examples for calibration
  eval_results=PATH      draw the calibration of evaluate.py's results.json instead of computing it here
  num_segments=N         segments to run (default halt_max_steps; more = inference-time scaling)
  pr_puzzles=32 unknown_puzzles=16 perturb_puzzles=6 num_perturbations=16 max_panels=16
  unknowns=1,2,3,5,10    unknown-cell counts;  seed=0  tolerance=0.01  untrained=true  chunk_size=4
Any other key=value overrides the checkpoint's config (e.g. arch.forward_dtype=float32)."""

OWN_KEYS = {
    "checkpoint",
    "puzzle",
    "puzzle_file",
    "solution",
    "task",
    "out",
    "device",
    "num_puzzles",
    "split",
    "calibration_puzzles",
    "set",
    "eval_results",
}
OPTION_FIELDS = {f.name: f for f in dataclasses.fields(AnalysisOptions)}

MEMORY_SETTINGS = "calibration_puzzles, num_puzzles or chunk_size"

logger = logging.getLogger("hrm.analysis")


def pick_device(name: str) -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise AnalysisError(f"device={name!r} is not a device; use auto, cpu, cuda or mps") from None
        mps = getattr(torch.backends, "mps", None)
        if (device.type == "cuda" and not torch.cuda.is_available()) or (
            device.type == "mps" and not (mps and mps.is_available())
        ):
            raise AnalysisError(f"device={name} but no such device is visible; use device=auto or device=cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def parse_arguments(argv: list[str]) -> tuple[tuple[str, ...], dict[str, str], AnalysisOptions, list[str]]:
    """Split argv into (analyses, this tool's keys, analysis options, config overrides)."""
    analyses: tuple[str, ...] = ANALYSES
    own: dict[str, str] = {}
    options: dict = {}
    overrides: list[str] = []
    if argv and "=" not in argv[0]:
        analyses = ANALYSES if argv[0] == "all" else tuple(a.strip() for a in argv[0].split(",") if a.strip())
        bad = [a for a in analyses if a not in ANALYSES]
        if bad:
            raise AnalysisError(
                f"unknown analysis {bad[0]!r}; choose all or a comma-separated list of {', '.join(ANALYSES)}"
            )
        argv = argv[1:]
    for argument in split_arguments(
        argv, "checkpoint=checkpoints/run out=outputs/analysis/run; only the first argument may name the analyses"
    ):
        key, value = argument.key, argument.value
        if key in OWN_KEYS:
            own[key] = value
        elif key in OPTION_FIELDS:
            options[key] = _check_option(key, _option_value(key, value), value)
        else:
            overrides.append(argument.text)
            if key == "data_path":
                own["data_path"] = value
    if "checkpoint" not in own:
        raise AnalysisError("checkpoint=PATH is required (a step_N file or a run's checkpoint folder)")
    for key in ("num_puzzles", "calibration_puzzles"):
        _int_key(own, key, 1)
    return analyses, own, AnalysisOptions(**options), overrides


POSITIVE_OPTIONS = (
    "num_segments",
    "max_panels",
    "pr_puzzles",
    "unknown_puzzles",
    "perturb_puzzles",
    "num_perturbations",
    "chunk_size",
)


def _check_option(key: str, value, text: str):
    """Sizes must be positive (num_segments=0 would silently mean "the default"); tolerance not negative."""
    if key in POSITIVE_OPTIONS and value is not None and value < 1:
        raise AnalysisError(f"{key}={text} must be at least 1")
    if key == "unknowns" and (not value or min(value) < 1):
        raise AnalysisError(
            f"unknowns={text} must be a comma-separated list of counts of at least 1, e.g. unknowns=1,2,5"
        )
    if key == "seed" and value < 0:
        raise AnalysisError(f"seed={text} must be 0 or more")
    if key == "tolerance" and not value >= 0:
        raise AnalysisError(f"tolerance={text} must be a number >= 0")
    return value


def _option_value(key: str, text: str):
    default = OPTION_FIELDS[key].default
    try:
        if key == "unknowns":
            return tuple(int(part) for part in text.split(",") if part)
        if key == "num_segments":
            return int(text) if text not in ("", "none", "null") else None
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return type(default)(text)
    except ValueError:
        raise AnalysisError(f"{key}={text!r} is not a valid value (default {default!r})") from None


def _int_key(own: dict[str, str], key: str, default: int) -> int:
    """A positive whole number among this tool's own keys (num_puzzles, calibration_puzzles)."""
    try:
        value = int(own.get(key, default))
    except ValueError:
        raise AnalysisError(f"{key}={own[key]!r} must be an integer") from None
    if value < 1:
        raise AnalysisError(f"{key}={own[key]} must be at least 1")
    return value


def check_not_inputs(out_dir: Path, own: dict[str, str], config) -> None:
    """`out=` must not be, hold or lie in the checkpoint, its config, the datasets or the files read."""
    checkpoint_file = resolve_checkpoint_path(own["checkpoint"])
    files = {
        f"checkpoint {checkpoint_file}": checkpoint_file,
        f"its {CONFIG_FILE}": checkpoint_file.parent / CONFIG_FILE,
    }
    files.update({f"{key}={own[key]}": Path(own[key]) for key in ("puzzle_file", "eval_results") if key in own})
    datasets = dict.fromkeys([own.get("data_path", config.data_path), *config.train_data_paths])
    check_outputs_are_not_inputs(
        {},
        {f"out={own.get('out', out_dir)}": out_dir},
        input_files=files,
        input_folders={f"the dataset {path}": path for path in datasets if path},
        folder_writes=("analysis.json", "*.png"),
    )


def read_evaluator_calibration(path: Path) -> dict:
    """The `calibration` section of evaluate.py's results.json, in the analysis layout."""
    try:
        results = json.loads(path.read_text())
        return calibration_from_evaluator(results["calibration"])
    except FileNotFoundError:
        raise AnalysisError(f"eval_results={path} does not exist; run evaluate.py first or drop eval_results") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AnalysisError(
            f"eval_results={path} has no readable calibration section ({type(err).__name__}: {err}); "
            "pass the results.json written by evaluate.py"
        ) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(lambda: _run(argv), memory_settings=MEMORY_SETTINGS)


def _run(argv: list[str]) -> int:
    analyses, own, options, overrides = parse_arguments(argv)
    checkpoint = Path(own["checkpoint"]).resolve()
    default_out = Path("outputs") / "analysis" / (checkpoint.parent.name if checkpoint.is_file() else checkpoint.name)
    out_dir = check_output_folder(
        Path(own["out"]) if own.get("out") else default_out, f"out={own.get('out', default_out)}"
    )
    task_name = own.get("task", "auto")
    if task_name != "auto" and task_name not in TASK_NAMES:
        raise AnalysisError(f"task={task_name!r} is unknown; choose auto or one of {', '.join(TASK_NAMES)}")
    device = pick_device(own.get("device", "auto"))
    model, config = load_model(own["checkpoint"], device=device, overrides=overrides)
    check_not_inputs(out_dir, own, config)
    inner = hrm_inner(model)
    task = resolve(task_name, inner.config.vocab_size, inner.config.seq_len, f"the model of {own['checkpoint']}")
    logger.info(
        "checkpoint %s: task %s, device %s, model %s",
        resolve_checkpoint_path(own["checkpoint"]),
        task.name,
        device,
        type(inner).__name__,
    )

    split = own.get("split", "test")
    pool: Puzzles | None = None
    data_path = Path(own.get("data_path", config.data_path))
    if (data_path / split / "dataset.json").is_file():
        pool, _ = load_examples(
            data_path, split, _int_key(own, "calibration_puzzles", 256), set_name=own.get("set"), seed=options.seed
        )
    puzzle_text = own.get("puzzle")
    if "puzzle_file" in own:
        path = Path(own["puzzle_file"])
        if not path.is_file():
            raise AnalysisError(f"puzzle_file={path} does not exist")
        try:
            puzzle_text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise AnalysisError(f"cannot read puzzle_file={path} as text ({one_line(err)})") from None
    if puzzle_text is not None:
        traced = puzzle_from_string(puzzle_text, task, own.get("solution"))
    elif pool is not None:
        traced = pool.subset(slice(0, _int_key(own, "num_puzzles", 4)))
    else:
        raise AnalysisError(f"no dataset at {data_path}/{split}; pass data_path=DATASET or a puzzle=... to analyse")
    if traced.inputs.shape[1] != inner.config.seq_len:
        raise AnalysisError(
            f"the puzzle has {traced.inputs.shape[1]} cells but the model expects seq_len={inner.config.seq_len}"
        )

    context = {
        "checkpoint": own["checkpoint"],
        "data_path": str(data_path),
        "split": split,
        "device": str(device),
        "overrides": overrides,
        "options": dataclasses.asdict(options),
    }
    calibration = read_evaluator_calibration(Path(own["eval_results"])) if "eval_results" in own else None
    try:
        report = run_analyses(
            model, task, traced, pool, out_dir, analyses, options, context=context, calibration_report=calibration
        )
    except OSError as err:
        raise AnalysisError(
            f"cannot write the analysis to out={out_dir} ({one_line(err)}); free space or choose another folder with out=DIR"
        ) from None
    print(f"wrote {len(report.figures)} figures and analysis.json to {out_dir}")
    for name in report.figures:
        print(f"  {name}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0

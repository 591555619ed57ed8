"""Compare two checkpoints tensor by tensor: is a run here the original's run (docs/reproducing.md)?

    python -m hrm.compare A/step_30 B/step_30 [--rtol 1e-5]

Either file may come from this project or from the original, with or without torch.compile's `_orig_mod.`
prefixes. Prints each tensor's relative error `||a - b|| / ||b||` and exits 0 when every one is within
`--rtol`, 1 when one is not, 2 on unusable input (a missing, empty or non-checkpoint file, or a checkpoint
without tensors).

Non-finite values: NaN in both at the same place counts as equal, and so does the same infinity (`inf` and
`inf`); NaN against a number, an infinity against a number, and `inf` against `-inf` are differences, and the
tensor's error is then infinite. The relative error of the remaining places is computed as above.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from hrm.checkpoint import read_state_dict
from hrm.commands import run_command
from hrm.data.common import OneLineParser
from hrm.errors import HRMError


def relative_errors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, float]:
    """`||a - b|| / ||b||` per key (in float64; 0 when both are zero); the key sets must be equal."""
    if ours.keys() != theirs.keys():
        only = sorted(set(ours) ^ set(theirs))
        raise HRMError(
            f"the checkpoints hold different tensors ({len(only)} keys in only one, e.g. {only[0]}); compare runs of the same architecture"
        )
    errors = {}
    for key, value in theirs.items():
        if tuple(ours[key].shape) != tuple(value.shape):
            raise HRMError(
                f"{key} has shape {tuple(ours[key].shape)} in one checkpoint and {tuple(value.shape)} in the other"
            )
        errors[key] = relative_error(ours[key].double(), value.double())
    return errors


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """`||a - b|| / ||b||` over the places where both are finite; inf when a non-finite value differs."""
    finite = torch.isfinite(a) & torch.isfinite(b)
    same_nonfinite = (torch.isnan(a) & torch.isnan(b)) | (torch.isinf(a) & (a == b))
    if not bool((finite | same_nonfinite).all()):
        return float("inf")
    a, b = a[finite], b[finite]
    scale = b.norm().item()
    difference = (a - b).norm().item()
    return difference / scale if scale > 0 else difference


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise HRMError(f"{path} is not a checkpoint file; pass two step_N files")
    state = read_state_dict(path)
    if not state:
        raise HRMError(f"{path} holds no tensors, so there is nothing to compare; pass two step_N files")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hrm.compare", description="Compare two step_N checkpoints tensor by tensor.")
    parser.add_argument("ours", type=Path)
    parser.add_argument("theirs", type=Path, help="the reference (e.g. the original's step_N)")
    parser.add_argument("--rtol", type=float, default=1e-5, help="largest relative error accepted per tensor")
    args = parser.parse_args(argv)
    return run_command(
        lambda: compare(args.ours, args.theirs, args.rtol),
        memory_settings=None,
    )


def compare(ours: Path, theirs: Path, rtol: float) -> int:
    if not math.isfinite(rtol) or rtol < 0:
        raise HRMError(f"--rtol {rtol} must be a number of 0 or more, e.g. --rtol 1e-5")
    errors = relative_errors(read_checkpoint(ours), read_checkpoint(theirs))
    width = max(len(key) for key in errors)
    for key, error in errors.items():
        print(f"{key:<{width}}  {error:.3e}")
    worst = max(errors, key=errors.get)
    within = errors[worst] <= rtol
    print(f"largest relative error {errors[worst]:.3e} ({worst}): {'within' if within else 'above'} rtol {rtol:g}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())

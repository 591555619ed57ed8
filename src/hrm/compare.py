"""Compare two checkpoints tensor by tensor: is a run here the original's run (docs/reproducing.md)?

    python -m hrm.compare A/step_30 B/step_30 [--rtol 1e-5]

Either file may come from this project or from the original, with or without torch.compile's `_orig_mod.`
prefixes. Prints each tensor's relative error `||a - b|| / ||b||` and exits 0 when every one is within
`--rtol`, 1 when one is not, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hrm.checkpoint import read_state_dict
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
        a, b = ours[key].double(), value.double()
        scale = b.norm().item()
        difference = (a - b).norm().item()
        errors[key] = difference / scale if scale > 0 else difference
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare two step_N checkpoints tensor by tensor.")
    parser.add_argument("ours", type=Path)
    parser.add_argument("theirs", type=Path, help="the reference (e.g. the original's step_N)")
    parser.add_argument("--rtol", type=float, default=1e-5, help="largest relative error accepted per tensor")
    args = parser.parse_args(argv)
    try:
        for path in (args.ours, args.theirs):
            if not path.is_file():
                raise HRMError(f"{path} is not a checkpoint file; pass two step_N files")
        errors = relative_errors(read_state_dict(args.ours), read_state_dict(args.theirs))
    except HRMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    width = max(len(key) for key in errors)
    for key, error in errors.items():
        print(f"{key:<{width}}  {error:.3e}")
    worst = max(errors, key=errors.get)
    within = errors[worst] <= args.rtol
    print(f"largest relative error {errors[worst]:.3e} ({worst}): {'within' if within else 'above'} rtol {args.rtol:g}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())

"""Train HRM (or a baseline) on a puzzle dataset: `python pretrain.py [key=value ...]`.

Configs live in the package, `src/hrm/configs/` (cfg_pretrain.yaml, arch/, experiment/; `configs/` links there),
so an installed `hrm` carries them; under `torchrun --nproc-per-node N`
each process trains on its slice of the global batch. The loop itself is `hrm.training.trainer`.
"""

import sys

import hydra
from omegaconf import DictConfig

from hrm.training.cli import (
    CONFIG_DIR,
    accept_plus_for_existing_keys,
    check_command_line,
    quote_plain_values,
    run_from_hydra,
)


@hydra.main(config_path=str(CONFIG_DIR), config_name="cfg_pretrain", version_base=None)
def launch(cfg: DictConfig) -> None:
    run_from_hydra(cfg)


if __name__ == "__main__":
    sys.argv[1:] = quote_plain_values(accept_plus_for_existing_keys(sys.argv[1:]))
    check_command_line()
    launch()

"""Build the 6x6 mini Sudoku dataset of the CPU quick start (offline generator); `--help` lists the options."""

import sys

from hrm.data.common import run_cli
from hrm.data.mini_sudoku import main

if __name__ == "__main__":
    sys.exit(run_cli(main))

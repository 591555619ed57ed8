"""Build the arc dataset in the original HRM on-disk format; `--help` lists the sources and options."""

import sys

from hrm.data.arc import main
from hrm.data.common import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))

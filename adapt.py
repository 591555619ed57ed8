"""Test-time adaptation: `python adapt.py checkpoint=PATH tasks=PATH output_dir=DIR [key=value ...]` (also under torchrun).

A thin wrapper; the logic lives in `hrm.adaptation` (see `hrm.adaptation.cli` and docs/adaptation.md).
"""

from hrm.adaptation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

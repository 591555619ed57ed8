"""`python -m hrm.analysis`: see `hrm.analysis.cli`."""

import sys

from hrm.analysis.cli import main

sys.exit(main())

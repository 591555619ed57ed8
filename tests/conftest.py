import os
import signal

import pytest
import torch

# Two cores here: keep torch from oversubscribing them when tests spawn processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# A suite started in the background of a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and so
# would every command it starts; the Ctrl-C tests need Python's own handler, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

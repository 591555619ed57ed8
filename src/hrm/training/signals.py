"""Stopping a run cleanly on a signal: preemption notices and Ctrl-C ask for a checkpoint, then a stop."""

from __future__ import annotations

import contextlib
import logging
import signal
from typing import Any

logger = logging.getLogger(__name__)


class StopRequest:
    """SIGTERM/SIGUSR1 (preemption notices) and Ctrl-C ask the loop to checkpoint and stop at the next step.

    A second Ctrl-C restores Python's own handler, so a third one aborts at once (without saving).
    """

    def __init__(self) -> None:
        self.action = "saving a checkpoint and stopping after this step"  # what the warning announces
        self.requested = False
        self.interrupted = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.interrupted:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                logger.warning("Ctrl-C again: press it once more to abort without saving")
                return
            self.interrupted = True
            logger.warning("Ctrl-C: %s", self.action)
        else:
            logger.warning("received signal %d: %s", signum, self.action)
        self.requested = True

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)):
            if signum is not None:
                with contextlib.suppress(ValueError):  # not the main thread
                    self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM/SIGINT to the main process, which saves a checkpoint and then stops them.

    Schedulers (and `timeout`) signal the whole process group; a worker that died of it would otherwise crash
    the main process before it could save.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

"""Weights & Biases logging on rank 0, with the original's project/run names and metric names.

`wandb_mode=online` needs a W&B login; without one (no WANDB_API_KEY, no ~/.netrc entry) or when the
service cannot be reached, the run is logged offline instead (upload later with `wandb sync`), so a
training command never fails for want of a dashboard.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class RunLogger:
    """A W&B run (or nothing, when disabled or off rank 0) that the trainer logs dictionaries to."""

    def __init__(
        self,
        *,
        enabled: bool,
        mode: str,
        project: str,
        name: str,
        config: dict[str, Any],
        run_id: str | None = None,
        directory: str | None = None,
    ):
        self.run = None
        if not enabled or mode == "disabled":
            return
        import wandb

        if mode == "online" and not wandb_logged_in():
            logger.warning(
                "W&B: not logged in (wandb login or WANDB_API_KEY); logging offline to ./wandb, upload with `wandb sync`"
            )
            mode = "offline"
        kwargs: dict[str, Any] = dict(
            project=project,
            name=name,
            config=config,
            mode=mode,
            settings=wandb.Settings(x_disable_stats=True, console="off"),
        )
        if run_id is not None:
            kwargs.update(id=run_id, resume="allow")
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = directory
        try:
            self.run = wandb.init(**kwargs)
        except Exception as err:  # wandb raises its own error types for network and auth problems
            if mode != "online":
                raise
            logger.warning(
                "W&B: online init failed (%s); logging offline instead",
                (str(err).strip().splitlines() or [type(err).__name__])[0],
            )
            kwargs["mode"] = "offline"
            self.run = wandb.init(**kwargs)
        logger.info("W&B run %r (%s) in project %r", name, mode, project)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def set_summary(self, key: str, value: Any) -> None:
        if self.run is not None:
            self.run.summary[key] = value

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

"""Progress reporting that reads well both in a terminal and in a log file.

Three modes: `bar` (a tqdm bar, for terminals), `lines` (plain log lines such as
`train 1200/14062 (9%) loss=0.512 exact=0.301 | 12.3 step/s | elapsed 0:01:37 | eta 0:17:25`, one every
`HRM_PROGRESS_INTERVAL` seconds (default 60) or 5% of the total, whichever comes first, plus a last one)
and `off`. The mode is, in order: the one a caller configures (`pretrain.py progress=...`), the
`HRM_PROGRESS` environment variable, else `auto`: a bar when stdout and stderr are both a terminal (or in a
notebook), lines otherwise (SLURM, nohup, `> log 2>&1`), so that redirected logs never fill with
carriage-return-joined bars and always hold the loss history.
Lines go through `logging` (logger `hrm.progress`, level INFO), so they land wherever the program's log goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

from hrm.errors import ConfigError

MODES = ("auto", "bar", "lines", "off")
ENV_MODE = "HRM_PROGRESS"
ENV_INTERVAL = "HRM_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 60.0
FRACTION_PER_LINE = 0.05
_MAX_POSTFIX = 160

logger = logging.getLogger("hrm.progress")
_configured: str | None = None  # set by `configured(...)` for the duration of a run


def resolve_mode(mode: str | None = None) -> str:
    """`bar`, `lines` or `off`: the given mode, else the configured one, else HRM_PROGRESS, else by terminal."""
    for source, value in (("progress", mode), ("progress", _configured), (ENV_MODE, os.environ.get(ENV_MODE))):
        if value in (None, "", "auto"):
            continue
        if value not in MODES:
            raise ConfigError(f"{source}={value!r} is not a progress mode; choose one of {', '.join(MODES)}")
        return value
    terminal = _isatty(sys.stderr) and _isatty(sys.stdout)  # either redirected: the log file gets the lines
    return "bar" if terminal or "ipykernel" in sys.modules else "lines"  # notebooks render bars


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def line_interval() -> float:
    value = os.environ.get(ENV_INTERVAL)
    if value in (None, ""):
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{ENV_INTERVAL}={value!r} must be a number of seconds >= 0")
    return seconds


@contextlib.contextmanager
def configured(mode: str) -> Iterator[None]:
    """Make `mode` the default of every progress report made inside the block (e.g. a training run's evaluations)."""
    global _configured
    previous, _configured = _configured, resolve_mode(mode)
    try:
        yield
    finally:
        _configured = previous


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    mode: str | None = None,
    **bar_options: Any,
):
    """A progress reporter with tqdm's small interface (iterate, `update`, `set_postfix`, `close`, `with`)."""
    chosen = "off" if disable else resolve_mode(mode)
    if chosen == "bar":
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **bar_options)
    if total is None and iterable is not None:
        with contextlib.suppress(TypeError):
            total = len(iterable)  # type: ignore[arg-type]
    return ProgressLines(iterable, total=total, desc=desc, unit=unit, initial=initial, enabled=chosen == "lines")


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLines:
    """Plain progress log lines (see the module docstring); silent when not enabled."""

    def __init__(
        self, iterable: Iterable | None, *, total: int | None, desc: str, unit: str, initial: int, enabled: bool
    ):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start_n = self._last_n = initial
        self.enabled = enabled
        self.interval = line_interval() if enabled else DEFAULT_INTERVAL_S
        self._start = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def __iter__(self):
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        items = {**(ordered_dict or {}), **values}
        self._postfix = " ".join(f"{key}={value}" for key, value in items.items())[:_MAX_POSTFIX]

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = (desc or "")[:_MAX_POSTFIX]

    def refresh(self) -> None:
        """tqdm compatibility: a line is written only when one is due."""

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        now = time.monotonic()
        step_due = self.total and (self.n - self._last_n) >= max(1.0, FRACTION_PER_LINE * self.total)
        if step_due or now - self._last >= self.interval:
            self._write(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.enabled and self.n != self._last_n:
            self._write(time.monotonic())

    def _write(self, now: float) -> None:
        elapsed = now - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc} {self.n}" + (f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        if self._postfix:
            parts[0] += f" {self._postfix}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"eta {_clock((self.total - self.n) / rate)}")
        logger.info(" | ".join(parts))
        self._last, self._last_n = now, self.n

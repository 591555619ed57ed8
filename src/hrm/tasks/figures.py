"""What the tasks' step figures share: a grid of panels, and writing a figure as PNG. Each task draws its
own boards (`Task.plot_steps`); this module knows nothing of tasks.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display needed)
and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hrm.atomic import atomic_write_bytes


def save_figure(fig: Figure, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """PNG of `fig`, atomically. tight=False skips the second layout pass (boards with thousands of labels)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue()))
    return Path(path)


def panel_grid(count: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(count, max_columns)
    return -(-count // columns), columns

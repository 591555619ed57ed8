"""The evaluator's terminal tables and its results JSON (NaN written as null, so any JSON reader loads it)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hrm.checkpoint import atomic_write_bytes
from hrm.evaluation.metrics import TABLE_METRICS


def format_metrics_table(metrics: dict[str, dict[str, float]], title: str = "") -> str:
    """One row per set: exact accuracy, token accuracy, mean steps, q-halt accuracy, count."""
    header = f"{'set':<16}" + "".join(f"{name:>17}" for name in TABLE_METRICS)
    lines = [title] if title else []
    lines.append(header)
    for set_name, row in metrics.items():
        cells = []
        for name in TABLE_METRICS:
            value = row.get(name, float("nan"))
            cells.append(f"{int(value):>17d}" if name == "count" and not math.isnan(value) else f"{value:>17.4f}")
        lines.append(f"{set_name:<16}" + "".join(cells))
    return "\n".join(lines)


def format_sweep_table(sweep: dict[int, dict[str, dict[str, float]]], halt: str) -> str:
    lines = [
        f"inference-time scaling (halt={halt}): halt_max_steps vs accuracy",
        f"{'halt_max_steps':>15} {'set':<16} {'exact_accuracy':>15} {'accuracy':>10} {'mean steps':>11} {'count':>8}",
    ]
    for cap, per_set in sweep.items():
        for set_name, row in per_set.items():
            lines.append(
                f"{cap:>15} {set_name:<16} {row['exact_accuracy']:>15.4f} {row['accuracy']:>10.4f} "
                f"{row['steps']:>11.3f} {int(row['count']):>8d}"
            )
    return "\n".join(lines)


def format_key_values(title: str, values: dict[str, Any]) -> str:
    lines = [title]
    for key, value in values.items():
        if isinstance(value, float):
            lines.append(f"  {key:<28} {value:.4f}")
        elif not isinstance(value, (dict, list)):
            lines.append(f"  {key:<28} {value}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: str | Path, results: dict[str, Any]) -> Path:
    text = json.dumps(_json_safe(results), indent=2).encode()
    atomic_write_bytes(path, lambda handle: handle.write(text))
    return Path(path)

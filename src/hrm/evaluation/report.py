"""The evaluator's terminal tables and its results JSON (NaN written as null, so any JSON reader loads it)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hrm.atomic import atomic_write_bytes
from hrm.evaluation.calibration import format_calibration
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


def format_ablation_table(ablation: dict[str, dict]) -> str:
    """Modes side by side: exact and token accuracy per set (and ARC pass@2 when scored)."""
    lines = [
        "puzzle identifier ablation",
        f"{'mode':<10} {'set':<16} {'exact_accuracy':>15} {'accuracy':>10} {'pass@2':>8}",
    ]
    for mode, result in ablation.items():
        pass2 = result.get("arc", {}).get("pass@2")
        for set_name, row in (result.get("metrics") or {}).items():
            cell = f"{pass2:>8.4f}" if pass2 is not None else f"{'':>8}"
            lines.append(f"{mode:<10} {set_name:<16} {row['exact_accuracy']:>15.4f} {row['accuracy']:>10.4f} {cell}")
    return "\n".join(lines)


def format_results(results: dict[str, Any]) -> str:
    """The whole terminal report of one `evaluate.py` run, from its results dict."""
    parts = [
        f"checkpoint {results['checkpoint']} on {results['data_path']} (halt={results['halt']}, "
        f"halt_max_steps={results['halt_max_steps']})"
    ]
    if results.get("metrics"):
        title = "plain baseline (first checkpoint, unperturbed)" if results["protocol"] == "augmented" else ""
        parts.append(format_metrics_table(results["metrics"], title))
    if "halt_max_steps_sweep" in results:
        parts.append(format_sweep_table(results["halt_max_steps_sweep"], results["halt"]))
    if "arc" in results:
        arc = results["arc"]
        parts.append(
            format_key_values(
                "ARC voting over augmentations (pass@K averaged per task, then over tasks)",
                {k: v for k, v in arc.items() if k.startswith("pass@") or k.startswith("num_") or k == "submission"},
            )
        )
    if "identifier_ablation" in results:
        parts.append(format_ablation_table(results["identifier_ablation"]))
    for set_name, summary in (results.get("augmented") or {}).items():
        parts.append(
            format_key_values(
                f"Augmented HRM [{set_name}]: {results['permutes']} perturbations x "
                f"{len(results['checkpoints'])} checkpoints",
                summary,
            )
        )
    parts.append(format_calibration(results["calibration"]))
    timing = results["timing"]
    parts.append(
        f"{timing['examples']:.0f} examples in {timing['seconds']:.2f} s: {timing['examples_per_second']:.1f} examples/s"
    )
    return "\n".join(parts)


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

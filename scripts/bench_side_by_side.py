"""Augmented HRM side by side: our `evaluate.py` against the authors' `batch_inference.py` on one checkpoint.

    python scripts/bench_side_by_side.py --checkpoint DIR/step_N --authors /tmp/authors \\
        --permutes 9 --batch-size 100 --puzzles 300 --rounds 3

`--authors` is a checkout of the Augmented-HRM code (hrm-mechanistic-analysis) that runs on this machine; this
repository ships none of it. Every variant runs as its own process, one after the other in each round
(ours compiled as `compile=auto` decides, ours eager, the authors' default compiled path, the authors' eager
path with `DISABLE_COMPILE=1`), all with one CPU thread (`OMP_NUM_THREADS=1`, one inductor compile thread) and
pinned to the CPU of `--cpu`, so that load from other jobs drifts over all of them alike. A run's time is
the wall time of its whole process (imports, loading, any compilation, the evaluation): what a user waits
for. Prints puzzles/s per round and the median, and checks that both count the same puzzles solved under
the paper's rule (ours: `paper_accuracy`; theirs: the `correct/total` line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def single_thread_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TORCHINDUCTOR_COMPILE_THREADS="1", **extra)
    return env


def run_ours(args: argparse.Namespace, compiled: str, out: Path) -> tuple[float, float]:
    """Seconds of one `evaluate.py` process and the puzzles it scores solved under the paper's rule."""
    command = [
        sys.executable,
        str(REPO / "evaluate.py"),
        f"checkpoint={args.checkpoint}",
        f"permutes={args.permutes}",
        f"batch_size={args.batch_size}",
        "device=cpu",
        f"compile={compiled}",
        "progress=false",
        "save_outputs=[]",
        f"output={out}",
    ]
    env = single_thread_env({"PYTHONPATH": str(REPO / "src")})
    seconds = timed(command, env, REPO, args.cpu)
    summary = next(iter(json.loads(out.read_text())["augmented"].values()))
    return seconds, summary["paper_accuracy"] * summary["num_puzzles"]


def run_authors(args: argparse.Namespace, compiled: bool) -> tuple[float, float]:
    """Seconds of one `batch_inference.py` process and the puzzles it counts correct."""
    command = [
        sys.executable,
        "batch_inference.py",
        f"--checkpoints={args.checkpoint}",
        f"--permutes={args.permutes}",
        f"--num_batch={args.puzzles // args.batch_size}",
        f"--batch_size={args.batch_size}",
    ]
    extra = {"PYTHONPATH": f"{args.authors}{os.pathsep}{REPO / 'src'}"}
    if not compiled:
        extra["DISABLE_COMPILE"] = "1"
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    seconds = timed(command, single_thread_env(extra), Path(args.authors), args.cpu, log)
    match = re.search(r"^(\d+)/(\d+), accuracy=", log.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"error: batch_inference.py printed no 'correct/total' line; see {log}")
    return seconds, float(match.group(1))


def timed(command: list[str], env: dict[str, str], cwd: Path, cpu: int | None, log: Path | None = None) -> float:
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    start = time.perf_counter()
    with open(log or os.devnull, "w") as handle:
        result = subprocess.run(command, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"error: {' '.join(command[:4])} ... exited with status {result.returncode}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a step_N file whose all_config.yaml names the dataset")
    parser.add_argument("--authors", required=True, help="folder of the authors' code (batch_inference.py)")
    parser.add_argument("--permutes", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--puzzles", type=int, default=300, help="the test split's size (a multiple of the batch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="pin every process to this CPU (taskset)")
    parser.add_argument(
        "--variants",
        default="ours:auto,ours:false,authors:compiled,authors:eager",
        help="comma list of ours:<compile=> and authors:compiled|eager",
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    solved: dict[str, float] = {}
    print(f"{cpu_model()}, 1 thread, {args.puzzles} puzzles x {args.permutes} perturbations, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name in variants:
                kind, setting = name.split(":")
                if kind == "ours":
                    took, count = run_ours(args, setting, Path(scratch) / f"{setting}.json")
                else:
                    took, count = run_authors(args, setting == "compiled")
                seconds[name].append(took)
                solved[name] = count
                print(
                    f"round {round_index + 1} {name:18s} {took:8.1f} s  {args.puzzles / took:6.2f} puzzles/s  "
                    f"solved (paper rule) {count:.0f}",
                    flush=True,
                )
    print()
    for name in variants:
        median = statistics.median(seconds[name])
        spread = (max(seconds[name]) - min(seconds[name])) / median
        print(f"{name:18s} median {args.puzzles / median:6.2f} puzzles/s, spread {100 * spread:4.1f}% of the median")
    if len(set(solved.values())) > 1:
        print(f"warning: the variants count different puzzles solved: {solved}")


if __name__ == "__main__":
    main()

"""Augmented HRM side by side: our `evaluate.py` against the authors' `batch_inference.py` on one checkpoint.

    python scripts/bench_side_by_side.py --checkpoint DIR/step_N --authors /tmp/authors \\
        --permutes 9 --batch-size 100 --puzzles 300 --rounds 3

`--authors` is a checkout of the Augmented-HRM code (hrm-mechanistic-analysis) that runs on this machine; this
repository ships none of it. Every variant runs as its own process, one after the other in each round
(ours compiled as `compile=auto` decides, ours eager, the authors' default compiled path, the authors' eager
path with `DISABLE_COMPILE=1`), all with one CPU thread (`OMP_NUM_THREADS=1`, one inductor compile thread) and
pinned to the CPU of `--cpu`, so that load from other jobs drifts over all of them alike. A run's time is
the wall time of its whole process (imports, loading, any compilation, the evaluation): what a user waits
for. Prints puzzles/s per round and the median, and compares the verdicts puzzle by puzzle under the paper's
rule: ours from `verdicts.npz` (`paper`), theirs from the tensor `batch_inference.py` collects them in
(`all_correct`, recorded by `AUTHORS_RUNNER`; their script itself runs unchanged).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# Runs the authors' batch_inference.py unchanged (`python -c AUTHORS_RUNNER OUT ARGS...`, in their folder) and
# saves its per-puzzle verdicts to OUT: the one bool tensor it creates with torch.zeros, `all_correct`, which it
# fills in place. torch.zeros is restored as soon as that tensor exists, before any model call is compiled.
AUTHORS_RUNNER = """
import runpy, sys
import numpy as np, torch
out, recorded, real_zeros = sys.argv[1], [], torch.zeros
def zeros(*size, **kwargs):
    tensor = real_zeros(*size, **kwargs)
    if kwargs.get("dtype") is bool:
        recorded.append(tensor)
        torch.zeros = real_zeros
    return tensor
torch.zeros = zeros
sys.argv = ["batch_inference.py", *sys.argv[2:]]
try:
    runpy.run_path("batch_inference.py", run_name="__main__")
except SystemExit as done:
    if done.code:
        raise
np.save(out, recorded[0].numpy())
"""


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


def run_ours(args: argparse.Namespace, compiled: str, out: Path) -> tuple[float, np.ndarray]:
    """Seconds of one `evaluate.py` process and its per-puzzle verdicts under the paper's rule."""
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
        f"verdicts={out.with_suffix('.npz')}",
    ]
    env = single_thread_env({"PYTHONPATH": str(REPO / "src")})
    seconds = timed("evaluate.py", command, env, REPO, args.cpu)
    return seconds, np.load(out.with_suffix(".npz"))["paper"]


def run_authors(args: argparse.Namespace, compiled: bool, out: Path) -> tuple[float, np.ndarray]:
    """Seconds of one `batch_inference.py` process and its per-puzzle verdicts (`all_correct`), checked
    against the `correct/total` line it prints."""
    command = [
        sys.executable,
        "-c",
        AUTHORS_RUNNER,
        str(out),
        f"--checkpoints={args.checkpoint}",
        f"--permutes={args.permutes}",
        f"--num_batch={args.puzzles // args.batch_size}",
        f"--batch_size={args.batch_size}",
    ]
    extra = {"PYTHONPATH": f"{args.authors}{os.pathsep}{REPO / 'src'}"}
    if not compiled:
        extra["DISABLE_COMPILE"] = "1"
    log = out.with_suffix(".log")
    seconds = timed("batch_inference.py", command, single_thread_env(extra), Path(args.authors), args.cpu, log)
    match = re.search(r"^(\d+)/(\d+), accuracy=", log.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"error: batch_inference.py printed no 'correct/total' line; see {log}")
    verdicts = np.load(out)
    if int(verdicts.sum()) != int(match.group(1)):
        raise SystemExit(f"error: the recorded verdicts disagree with batch_inference.py's own count; see {log}")
    return seconds, verdicts


def timed(
    name: str, command: list[str], env: dict[str, str], cwd: Path, cpu: int | None, log: Path | None = None
) -> float:
    """Wall seconds of `command`; `name` is the program an error message names."""
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    start = time.perf_counter()
    with open(log or os.devnull, "w") as handle:
        result = subprocess.run(command, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"error: {name} exited with status {result.returncode}" + (f"; see {log}" if log else ""))
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
    verdicts: dict[str, np.ndarray] = {}
    print(f"{cpu_model()}, 1 thread, {args.puzzles} puzzles x {args.permutes} perturbations, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name in variants:
                kind, setting = name.split(":")
                out = Path(scratch) / f"{kind}-{setting}"
                if kind == "ours":
                    took, solved = run_ours(args, setting, out.with_suffix(".json"))
                else:
                    took, solved = run_authors(args, setting == "compiled", out.with_suffix(".npy"))
                seconds[name].append(took)
                verdicts[name] = solved
                print(
                    f"round {round_index + 1} {name:18s} {took:8.1f} s  {args.puzzles / took:6.2f} puzzles/s  "
                    f"solved (paper rule) {int(solved.sum())}",
                    flush=True,
                )
    print()
    for name in variants:
        median = statistics.median(seconds[name])
        spread = (max(seconds[name]) - min(seconds[name])) / median
        print(f"{name:18s} median {args.puzzles / median:6.2f} puzzles/s, spread {100 * spread:4.1f}% of the median")
    print()
    for index, name in enumerate(variants):
        for other in variants[:index]:
            differ = np.flatnonzero(verdicts[name] != verdicts[other])
            listed = ", ".join(map(str, differ[:10])) + (", ..." if len(differ) > 10 else "")
            rows = f" (rows {listed})" if len(differ) else ""
            print(f"{name} against {other}: {len(differ)} of {len(verdicts[name])} puzzles' verdicts differ{rows}")


if __name__ == "__main__":
    main()

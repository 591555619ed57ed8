"""Where a quick-start training step goes on this CPU, beside the CPU's matmul throughput.

    .venv/bin/python scripts/bench_quickstart.py
    .venv/bin/python scripts/bench_quickstart.py --variants compile=false "compile=false cpu_forward_dtype=float32"

Each variant is the quick-start run (`pretrain.py +experiment=quickstart`) with the variant's overrides; the
variants are timed side by side, in interleaved rounds, on the same data. For each one it prints the cost of
the first steps (with compile=true: the compilation), the steady steps/s without the profiler, and a profiler
table of one step: sampling (the data loader), forward, backward, the finite-gradient check, the optimisers
(and EMA), the logged metrics, and what is left (the loop's own host work). The matmul figures (float32 and
bfloat16, at the quick start's shape and at 1024^3) make step rates from different CPUs comparable. Builds the
quick start's dataset first if it is missing.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch
from quickstart import ensure_dataset
from torch.profiler import ProfilerActivity, profile, record_function

from hrm.distributed import init_distributed
from hrm.training.batches import chunk_batches
from hrm.training.cli import compose_config, to_pretrain_config
from hrm.training.trainer import Trainer

PHASES = ("hrm/sampling", "hrm/forward", "hrm/backward", "hrm/gradient_check", "hrm/optimizer", "hrm/metrics")


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Sustained GFLOP/s of an (m x k) @ (k x n) matmul in `dtype` on this CPU (as many calls as fit `seconds`)."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9


@dataclass
class Variant:
    overrides: list[str]
    first_steps_s: float = 0.0
    steps_per_s: list[float] = field(default_factory=list)
    phases_ms: dict[str, float] = field(default_factory=dict)
    wall_ms: float = 0.0
    top_ops: str = ""


class Runner:
    """One variant's trainer and its batch stream, stepped by hand exactly as the training loop steps it."""

    def __init__(self, overrides: list[str], checkpoint_dir: str):
        argv = ["+experiment=quickstart", f"checkpoint_path={checkpoint_dir}", "progress=off", *overrides]
        self.trainer = Trainer(to_pretrain_config(compose_config(argv)), init_distributed("cpu"))
        self.chunk = 0
        self.batches = self._chunk(0)

    def _chunk(self, index: int):
        return chunk_batches(self.trainer.train_data, index, 0, 0, self.trainer.device)

    def step(self) -> None:
        with record_function("hrm/sampling"):
            item = next(self.batches, None)
            if item is None:  # the chunk is used up: go on with the next one
                self.chunk += 1
                self.batches = self._chunk(self.chunk)
                item = next(self.batches)
        _, batch, effective = item
        self.trainer.train_batch(batch, effective)


def time_steps(runner: Runner, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    return steps / (time.perf_counter() - start)


def profile_steps(runner: Runner, steps: int, variant: Variant) -> None:
    """Per-step milliseconds of each phase under the profiler (which adds its own cost to every operator)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            runner.step()
        variant.wall_ms = (time.perf_counter() - start) / steps * 1000  # before the profiler's own wrap-up
    events = {event.key: event for event in prof.key_averages()}
    variant.phases_ms = {
        phase: events[phase].cpu_time_total / 1000 / steps if phase in events else 0.0 for phase in PHASES
    }
    variant.top_ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[""],
        help='quoted override sets, one per variant (default: the preset as shipped), e.g. "compile=false"',
    )
    parser.add_argument("--warmup", type=int, default=30, help="untimed first steps (they include any compilation)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median is shown")
    parser.add_argument("--profile-steps", type=int, default=100)
    parser.add_argument("--ops", action="store_true", help="also print each variant's top operators")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_dataset()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    for dtype in (torch.float32, torch.bfloat16):
        quick = matmul_gflops(64 * 37, 64, 256, dtype)
        big = matmul_gflops(1024, 1024, 1024, dtype)
        print(
            f"matmul {str(dtype).removeprefix('torch.'):8s}: {quick:8.1f} GFLOP/s at 2368x64x256, {big:8.1f} at 1024^3"
        )

    variants = [Variant(shlex.split(text)) for text in args.variants]
    with tempfile.TemporaryDirectory() as scratch:
        runners = []
        for index, variant in enumerate(variants):
            runner = Runner(variant.overrides, f"{scratch}/{index}")
            start = time.perf_counter()
            for _ in range(args.warmup):
                runner.step()
            variant.first_steps_s = time.perf_counter() - start
            runners.append(runner)
        for _ in range(args.rounds):
            for runner, variant in zip(runners, variants):
                variant.steps_per_s.append(time_steps(runner, args.steps))
        for runner, variant in zip(runners, variants):
            profile_steps(runner, args.profile_steps, variant)

    header = f"{'variant':40s} {'first ' + str(args.warmup):>9s} {'steps/s':>8s} " + " ".join(
        f"{phase.removeprefix('hrm/'):>9.9s}" for phase in PHASES
    )
    print(f"\n{header} {'other':>8s} {'profiled':>9s}")
    for variant in variants:
        label = " ".join(variant.overrides) or "(as shipped)"
        other = variant.wall_ms - sum(variant.phases_ms.values())
        cells = " ".join(f"{variant.phases_ms[phase]:9.2f}" for phase in PHASES)
        print(
            f"{label:40.40s} {variant.first_steps_s:8.1f}s {statistics.median(variant.steps_per_s):8.1f} "
            f"{cells} {other:8.2f} {variant.wall_ms:9.2f}"
        )
    print("(phases: ms per step under the profiler; steps/s: the median of the rounds, without the profiler)")
    if args.ops:
        for variant in variants:
            print(f"\n{' '.join(variant.overrides) or '(as shipped)'}\n{variant.top_ops}")


if __name__ == "__main__":
    main()

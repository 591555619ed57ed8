"""Does test-time adaptation solve tasks a model has never seen? A CPU benchmark on secret colour permutations.

    python scripts/bench_adaptation.py                 # the figures of docs/adaptation.md (about 6 minutes on 2 CPU cores)
    python scripts/bench_adaptation.py --tasks 20 --unseen 4 --train-epochs 40 --adapt-steps 60   # a quick look

A family of tasks (`hrm.data.permutation_tasks`): each task maps random 4x4 grids of 6 colours through its
own secret colour permutation, so a query alone does not say what to do; only the task's demonstrations
(and so its learned puzzle embedding) do. The script builds `--tasks` seen tasks and `--unseen` held-out
tasks of the same family, trains a small HRM on the seen tasks with the `pretrain.py` trainer, then
reports exact accuracy on

- the seen tasks' new queries (their memorised identifiers),
- the unseen tasks' queries with the blank, mean and shuffled identifiers (`evaluate.py puzzle_identifiers=`),
- the unseen tasks after `adapt.py` (embedding rows only; weights frozen), and with `adapt_weights=true`.

Everything goes to `--out` (default: a temporary folder): datasets, checkpoints, each step's results.json,
and `bench_adaptation.json` with the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from hrm.adaptation.cli import main as adapt_main
from hrm.data.permutation_tasks import build_permutation_tasks
from hrm.evaluation.cli import main as evaluate_main
from hrm.training.cli import compose_config, to_pretrain_config
from hrm.training.trainer import run_training

ARCH = [
    "arch.hidden_size=64",
    "arch.num_heads=2",
    "arch.expansion=2",
    "arch.H_layers=1",
    "arch.L_layers=1",
    "arch.H_cycles=1",
    "arch.L_cycles=2",
    "arch.halt_max_steps=2",
    "arch.act_enabled=false",
    "arch.puzzle_emb_ndim=64",
]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100, help="seen (training) tasks")
    p.add_argument("--unseen", type=int, default=10, help="held-out tasks")
    p.add_argument("--demos", type=int, default=8, help="demonstrations per task")
    p.add_argument("--queries", type=int, default=8, help="test queries per task")
    p.add_argument("--train-epochs", type=int, default=120)
    p.add_argument("--adapt-steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="task family and training seed")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def exact(path: Path, mode: str | None = None) -> float:
    results = json.loads(path.read_text())
    metrics = results["identifier_ablation"][mode]["metrics"] if mode else results["metrics"]
    return float(metrics["all"]["exact_accuracy"])


def check(code: int, what: str) -> None:
    if code != 0:
        sys.exit(f"{what} failed (exit status {code})")


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_adaptation_"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seen = build_permutation_tasks(
        out / "seen", range(args.tasks), demos=args.demos, queries=args.queries, family_seed=args.seed
    )
    unseen = build_permutation_tasks(
        out / "unseen",
        range(args.tasks, args.tasks + args.unseen),
        demos=args.demos,
        queries=args.queries,
        family_seed=args.seed,
        seed=1,
    )
    run_dir = out / "run"
    overrides = [
        f"data_path={seen}",
        f"checkpoint_path={run_dir}",
        f"global_batch_size={args.batch}",
        f"epochs={args.train_epochs}",
        f"eval_interval={args.train_epochs}",
        "lr=1e-3",
        "puzzle_emb_lr=1e-2",
        "lr_warmup_steps=50",
        "wandb_mode=disabled",
        "device=cpu",
        "project_name=bench",
        "run_name=adaptation",
        f"seed={args.seed}",
        *ARCH,
    ]
    t0 = time.perf_counter()
    run_training(to_pretrain_config(compose_config(overrides)))
    train_seconds = time.perf_counter() - t0

    common = ["device=cpu", "progress=false", "save_outputs=[]"]
    check(evaluate_main([f"checkpoint={run_dir}", *common, f"output={out / 'seen.json'}"]), "evaluating the seen tasks")
    check(
        evaluate_main(
            [
                f"checkpoint={run_dir}",
                f"data_path={unseen}",
                "puzzle_identifiers=blank,mean,shuffled",
                *common,
                f"output={out / 'unseen_ids.json'}",
            ]
        ),
        "the identifier ablation",
    )
    adapt_common = [
        f"checkpoint={run_dir}",
        f"tasks={unseen}",
        "device=cpu",
        "progress=false",
        f"steps={args.adapt_steps}",
        f"batch_size={args.batch}",
        f"seed={args.seed}",
    ]
    t0 = time.perf_counter()
    check(adapt_main([*adapt_common, f"output_dir={out / 'adapted'}"]), "adaptation")
    adapt_seconds = time.perf_counter() - t0
    check(
        adapt_main([*adapt_common, "adapt_weights=true", "lr=1e-4", f"output_dir={out / 'adapted_weights'}"]),
        "adaptation with weights",
    )

    seen_acc = exact(out / "seen.json")
    rows = [
        ("seen tasks, their own identifiers", seen_acc),
        ("unseen tasks, blank identifier", exact(out / "unseen_ids.json", "blank")),
        ("unseen tasks, mean identifier", exact(out / "unseen_ids.json", "mean")),
        ("unseen tasks, shuffled identifiers", exact(out / "unseen_ids.json", "shuffled")),
        ("unseen tasks, after adaptation (embedding only)", exact(out / "adapted" / "results.json")),
        ("unseen tasks, after adaptation with weights", exact(out / "adapted_weights" / "results.json")),
    ]
    total = time.perf_counter() - started
    print(
        f"\n{args.tasks} seen and {args.unseen} unseen secret-permutation tasks, {args.demos} demonstrations and "
        f"{args.queries} queries each; training {train_seconds:.0f} s, adaptation {adapt_seconds:.0f} s, {total / 60:.1f} min in all\n"
    )
    print(f"| {'evaluation':<50} | exact accuracy | share of seen |")
    print(f"|{'-' * 52}|----------------|---------------|")
    for name, value in rows:
        share = value / seen_acc if seen_acc else float("nan")
        print(f"| {name:<50} | {value:>14.3f} | {share:>13.2f} |")
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": dict(rows),
        "train_seconds": train_seconds,
        "adapt_seconds": adapt_seconds,
        "total_seconds": total,
    }
    (out / "bench_adaptation.json").write_text(json.dumps(summary, indent=2))
    print(f"\nfiles in {out}")


if __name__ == "__main__":
    main()

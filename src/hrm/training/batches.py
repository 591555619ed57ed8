"""How a training chunk's batches reach the loop: read inline, or prefetched by DataLoader workers in exactly
the same order (so the run, and its resume position, do not depend on the number of workers)."""

from __future__ import annotations

from typing import Iterator

import torch

from hrm.data.puzzle_dataset import PuzzleDataset
from hrm.training.signals import ignore_stop_signals


def chunk_batches(
    dataset: PuzzleDataset, chunk_index: int, skip: int, workers: int | str, device: torch.device
) -> Iterator[tuple[str, dict[str, torch.Tensor], int]]:
    """The batches of training chunk `chunk_index` after the first `skip`; `data_workers` processes prefetch them
    (auto: one on CUDA, none elsewhere)."""
    if workers == "auto":
        workers = 1 if device.type == "cuda" else 0
    if workers == 0:
        yield from dataset.iter_chunk(chunk_index, skip)
        return
    source = _ChunkView(dataset, chunk_index, skip)
    # A private generator: the loader's worker seed must not consume the global RNG (exact resume).
    loader = torch.utils.data.DataLoader(
        source,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=8,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
        worker_init_fn=ignore_stop_signals,
    )
    yield from loader


class _ChunkView(torch.utils.data.IterableDataset):
    """One training chunk as an iterable dataset, so DataLoader workers can prefetch it.

    With N workers, worker k reads only batches k, k+N, k+2N, ... of the chunk (after the `skip` already
    consumed); the DataLoader takes one batch from each worker in turn, so the stream is exactly the inline one.
    """

    def __init__(self, dataset: PuzzleDataset, chunk_index: int, skip: int):
        super().__init__()
        self.dataset, self.chunk_index, self.skip = dataset, chunk_index, skip

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.dataset.iter_chunk(self.chunk_index, self.skip, part=worker, num_parts=num_workers)


def draw_loader_seed() -> None:
    """Consume the CPU generator as the original's data loaders do: each draws its workers' base seed when first
    iterated (once, as its workers persist), the training loader before step 1, the evaluation loader before the
    first evaluation. On CPU the ACT exploration draws come from this generator, so these two draws keep a CPU
    run on the original's stream; on accelerators they change nothing.
    """
    torch.empty((), dtype=torch.int64).random_()

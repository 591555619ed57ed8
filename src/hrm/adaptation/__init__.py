"""Test-time adaptation (`adapt.py`): learn embedding rows for puzzles a checkpoint has never seen.

`tasks` builds the adaptation set (a dataset folder or ARC tasks) with the new identifiers appended after
the checkpoint's rows; `cli` trains those rows (and optionally the weights) with the trainer, then scores
the new puzzles with the evaluator.
"""

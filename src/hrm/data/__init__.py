"""Puzzle datasets in the original HRM on-disk format.

`format` reads and writes the format, `puzzle_dataset` is the training/test loader, `sudoku`, `maze` and
`arc` are the builders (behind the CLIs in `dataset/`), `augment` holds the dihedral and colour transforms,
and `inspect` draws examples as text.
"""

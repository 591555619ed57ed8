"""Puzzle datasets in the original HRM on-disk format.

`format` reads and writes the format, `puzzle_dataset` is the training/test loader, `sudoku`, `maze` and
`arc` are the builders (behind the CLIs in `dataset/`; ARC's tasks are read by `arc_sources`), and `inspect`
draws examples as text. Builders write with the token layouts and symmetries of `hrm.tasks`; `hrm.tasks`
never imports this package.
"""

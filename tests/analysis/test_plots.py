"""Figures for the tasks the CLI tests do not reach (ARC, unknown tasks), and the choice of panels."""

import numpy as np

from hrm.analysis import plots
from hrm.tasks import ArcGridTask, StepBoards, Task

ARC = ArcGridTask(12, 900)
parse_arc_grid = ARC.parse

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_choose_steps_spans_the_run_and_keeps_requested_steps():
    steps = plots.choose_steps(48, 6, must_include=(17, 16, None, 99))
    assert steps[0] == 0 and steps[-1] == 47 and {16, 17} <= set(steps) and 99 not in steps
    assert steps == sorted(set(steps))
    assert plots.choose_steps(3, 16) == [0, 1, 2]


def test_arc_and_generic_step_figures_are_written(tmp_path):
    inputs = parse_arc_grid("[[1,2,3],[4,5,6]]")
    labels = np.where(inputs == 0, -100, parse_arc_grid("[[6,5,4],[3,2,1]]"))
    step_preds = np.stack([inputs, parse_arc_grid("[[6,5],[3,2]]"), np.zeros(900, int)])
    arc = ARC.plot_steps(StepBoards(inputs, step_preds, labels, [0, 1, 2], ["a", "b", "c"]), tmp_path / "arc.png")
    tokens = np.random.default_rng(0).integers(0, 7, size=(5, 12))
    generic = Task(7, 12).plot_steps(
        StepBoards(tokens[0], tokens, tokens[1], [0, 2, 4], ["x", "y", "z"]), tmp_path / "tokens.png"
    )
    for path in (arc, generic):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000

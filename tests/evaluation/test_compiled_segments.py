"""The compiled evaluation segment (`compile=true`) against the eager one on the same weights: the same passes
counted, the same answers, the same Augmented-HRM verdicts, for an ensemble of two models and both halting rules."""

import numpy as np
import pytest
import torch

from hrm.config import PretrainConfig
from hrm.evaluation import augmented as aug
from hrm.evaluation.data import TensorExamples
from hrm.evaluation.options import parse_args
from hrm.evaluation.segments import COMPILE_MIN_FLOPS, is_compiled, should_compile
from hrm.models.registry import build_model
from tests.evaluation.helpers import TINY_ARCH

TASK = aug.resolve_task("sudoku", 6, 16, 2)  # 4x4 Sudoku, two digit shifts
PUZZLES, PERMUTES, WIDTH = 8, 2, 8


def tiny_model(seed: int):
    """A float32 tiny HRM with noisy weights and a random Q-head, so answers and halting differ per pass."""
    config = PretrainConfig(arch=TINY_ARCH, data_path="unused", global_batch_size=WIDTH)
    torch.manual_seed(seed)
    model = build_model(config.arch, batch_size=WIDTH, seq_len=16, vocab_size=6, num_puzzle_identifiers=1)
    generator = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for tensor in model.state_dict(keep_vars=True).values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator).to(tensor.dtype))
        q_head = model.model.inner.q_head
        q_head.weight.copy_(3 * torch.randn(q_head.weight.shape, generator=generator))
        q_head.bias.copy_(torch.tensor([-2.0, 2.0]))  # halting needs q_halt - q_continue > 4: later for some
    return model.eval()


def puzzles_with_labels(models, halt: str) -> TensorExamples:
    """Puzzles whose labels are the first model's own unperturbed eager answers, so that some puzzles are solved
    under the paper's rule and the verdicts are not all alike."""
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randint(1, 6, (PUZZLES, 16), generator=generator, dtype=torch.int32)
    source = TensorExamples(
        {"inputs": inputs, "labels": inputs.clone(), "puzzle_identifiers": torch.zeros(PUZZLES, dtype=torch.int32)}
    )
    puzzles, _ = aug.evaluate_chunk(models[:1], source, TASK, PERMUTES, WIDTH, halt, "cpu")
    source.batch["labels"] = torch.from_numpy(np.stack([p.passes[0].prediction for p in puzzles])).to(torch.int32)
    return source


def verdicts(puzzles):
    """Each puzzle's verdict and, per pass, whether it counts and its answer."""
    return [(aug.paper_solved(p.passes), [(q.counted, q.prediction.tolist()) for q in p.passes]) for p in puzzles]


def confidences(puzzles) -> torch.Tensor:
    return torch.tensor([q.confidence for p in puzzles for q in p.passes])


@pytest.mark.parametrize("halt", ["max", "act"])
def test_compiled_segments_give_the_eager_verdicts(halt):
    torch._dynamo.reset()
    models = [tiny_model(0), tiny_model(1)]
    source = puzzles_with_labels(models, halt)
    eager, eager_base = aug.evaluate_chunk(models, source, TASK, PERMUTES, WIDTH, halt, "cpu")
    fast, fast_base = aug.evaluate_chunk(models, source, TASK, PERMUTES, WIDTH, halt, "cpu", compiled=True)
    assert all(is_compiled(model.model) for model in models)
    for puzzle in eager + fast:
        for item in puzzle.passes:
            item.correct = aug.is_exact(item.prediction, puzzle.labels)
    assert verdicts(fast) == verdicts(eager)
    # Fused kernels round differently; through the segments' recursion that stays far below any decision margin.
    torch.testing.assert_close(confidences(fast), confidences(eager), rtol=0, atol=1e-4)
    assert aug.tally_puzzles(fast, TASK) == aug.tally_puzzles(eager, TASK)
    if halt == "max":
        solved = [aug.paper_solved(p.passes) for p in eager]
        counted = [q.counted for p in eager for q in p.passes]
        assert any(solved) and not all(solved), "the check needs solved and unsolved puzzles"
        assert any(counted) and not all(counted), "the check needs counted and uncounted passes"
    else:
        passes = aug.PerturbedExamples(source, TASK, PERMUTES)
        steps = [aug.run_passes(model, passes, WIDTH, "act", "cpu")["steps"] for model in models]
        fast_steps = [aug.run_passes(model, passes, WIDTH, "act", "cpu", compiled=True)["steps"] for model in models]
        assert all(torch.equal(a, b) for a, b in zip(fast_steps, steps))
        assert len(set(torch.cat(steps).tolist())) > 2, "the check needs passes that stop at different segments"
    assert torch.equal(fast_base["steps"], eager_base["steps"])
    torch._dynamo.reset()


def test_auto_compiles_only_long_runs():
    act = tiny_model(0).model
    per_row = act.inference_flops_per_segment()
    enough = COMPILE_MIN_FLOPS["cpu"] / per_row
    assert not should_compile("auto", act, torch.device("cpu"), enough / 2)
    assert should_compile("auto", act, torch.device("cpu"), enough * 2)
    assert should_compile(True, act, torch.device("cpu"), 1)
    assert not should_compile(False, act, torch.device("cpu"), enough * 2)


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("true", True), ("false", False)])
def test_compile_is_an_evaluator_key(text, value):
    cfg, overrides = parse_args(["checkpoint=x/step_1", "permutes=3", f"compile={text}"])
    assert cfg.compile == value and overrides == []

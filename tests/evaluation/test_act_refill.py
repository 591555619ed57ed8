"""halt=act with slot refill, and the one-pass sweep, against running examples alone / the shared pass."""

import pytest
import torch

from hrm.config import ArchConfig
from hrm.evaluation.act_refill import evaluate_act
from hrm.evaluation.data import TensorExamples
from hrm.evaluation.metrics import divide_by_count, example_metrics, metric_sums
from hrm.evaluation.runner import evaluate
from hrm.evaluation.sweep import override_halt_max_steps, segment_trace
from hrm.models.registry import build_model
from tests.evaluation.helpers import TINY_ARCH


def tiny_model(halt_max_steps=6, seed=0, q_seed=4):
    torch.manual_seed(seed)
    model = build_model(
        ArchConfig(**{**TINY_ARCH, "halt_max_steps": halt_max_steps}),
        batch_size=4,
        seq_len=10,
        vocab_size=9,
        num_puzzle_identifiers=7,
    )
    with torch.no_grad():
        model.model.inner.puzzle_emb.weights.normal_()
        q_weight = model.model.inner.q_head.weight
        q_weight.copy_(torch.randn(q_weight.shape, generator=torch.Generator().manual_seed(q_seed)))
        model.model.inner.q_head.bias.fill_(0.0)
    return model.eval()


def examples(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 9, (n, 10), generator=g, dtype=torch.int32),
        "labels": torch.randint(1, 9, (n, 10), generator=g, dtype=torch.int32),
        "puzzle_identifiers": torch.randint(0, 7, (n,), generator=g, dtype=torch.int32),
    }


def test_refill_gives_each_example_its_result_alone():
    model = tiny_model()
    data = examples()
    keys = ("preds", "q_halt_logits", "q_continue_logits", "steps", "inputs", "puzzle_identifiers")
    together = evaluate_act(model, TensorExamples(data), 4, device="cpu", keep_keys=keys)
    steps = together["steps"].tolist()
    assert len(set(steps)) >= 3, "the test needs examples that halt at different segments"
    assert torch.equal(together["inputs"], data["inputs"]) and torch.equal(
        together["puzzle_identifiers"], data["puzzle_identifiers"]
    )
    for i in range(len(steps)):
        alone = evaluate_act(
            model, TensorExamples({k: v[i : i + 1] for k, v in data.items()}), 1, device="cpu", keep_keys=keys
        )
        assert alone["steps"][0] == steps[i]
        assert torch.equal(alone["preds"][0], together["preds"][i])
        torch.testing.assert_close(
            alone["q_halt_logits"][0], together["q_halt_logits"][i], atol=1e-3, rtol=1e-3
        )  # batch-size-dependent kernels
        # the stop rule: Q says halt at the stop segment, or the cap was reached
        assert steps[i] == 6 or together["q_halt_logits"][i] > together["q_continue_logits"][i]


def test_refill_costs_each_example_its_own_segments():
    model = tiny_model()
    data = examples()
    calls = []
    act_model = model.model
    original_forward = act_model.forward

    def counting_forward(*args, **kwargs):
        carry, outputs = original_forward(*args, **kwargs)
        calls.append(carry.steps.shape[0])
        return carry, outputs

    act_model.forward = counting_forward
    out = evaluate_act(model, TensorExamples(data), 4, device="cpu")
    # every row of every call does one example's segment: total rows = total segments
    assert sum(calls) == int(out["steps"].sum())


def test_sweep_matches_separate_runs():
    model = tiny_model(halt_max_steps=6)
    data = examples(8)
    trace = segment_trace(model, data, 5)
    for cap in (1, 3, 5):
        with override_halt_max_steps(model, cap):
            shared = evaluate(model, [("all", data, 8)], ["all"], device="cpu").metrics["all"]
            act = evaluate_act(model, TensorExamples(data), 3, device="cpu")
        at_max = divide_by_count(metric_sums(trace.at_caps(cap, "max")))
        for key in ("exact_accuracy", "accuracy", "steps", "q_halt_accuracy", "count"):
            assert at_max[key] == pytest.approx(shared[key]), key
        at_act = trace.at_caps(cap, "act")
        assert at_act.steps.tolist() == act["steps"].tolist()
        expected = example_metrics(act["preds"], data["labels"], act["q_halt_logits"], act["steps"])
        assert at_act.accuracy.tolist() == pytest.approx(expected.accuracy.tolist())
    assert model.model.config.halt_max_steps == 6  # the override is undone

"""The contract every registered model keeps, parametrised from the registry itself (a new model is picked up
by being defined): checkpoint round trip (with torch.compile's key prefix), both halting modes, gradient scope,
the tracer hook, FLOPs, Augmented-HRM counting and `halt=act` slot refill."""

import pytest
import torch

from hrm.analysis.trace import trace_batch
from hrm.checkpoint import COMPILED_PREFIX, Checkpoint, load_initial_weights, save_model_checkpoint
from hrm.config import validate_config
from hrm.errors import AnalysisError
from hrm.evaluation.act_refill import evaluate_act
from hrm.evaluation.augmented import PerturbedExamples, evaluate_chunk, resolve_task, run_passes
from hrm.evaluation.data import TensorExamples
from hrm.models.registry import architectures, build_model, puzzle_positions
from hrm.training.flops import training_flops_per_example

SHARED = dict(hidden_size=32, num_heads=4, expansion=2, puzzle_emb_ndim=32, forward_dtype="float32", halt_max_steps=3)
SEQ_LEN, VOCAB = 6, 5


def _config(cls, **arch):
    return validate_config({"arch": {"name": cls.names[0], **SHARED, **cls.small_fields, "halt_max_steps": 3, **arch}})


def _build(cls, seq_len=SEQ_LEN, vocab=VOCAB, **arch):
    torch.manual_seed(0)
    return build_model(
        _config(cls, **arch).arch, batch_size=2, seq_len=seq_len, vocab_size=vocab, num_puzzle_identifiers=3
    )


def _batch(n=2, seq_len=SEQ_LEN, vocab=VOCAB, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(0, vocab, (n, seq_len), generator=g),
        "labels": torch.randint(0, vocab, (n, seq_len), generator=g),
        "puzzle_identifiers": torch.arange(n) % 3,
    }


def _shaken(model, seed=2):
    """The model with noise on every weight and on the puzzle table, so Q-values and answers differ between
    examples and segments (a fresh Q-head is constant)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if (tensor.is_floating_point() and "puzzle_emb" not in name) or name.endswith("puzzle_emb.weights"):
                tensor.add_((0.05 * torch.randn(tensor.shape, generator=g)).to(tensor.dtype))
    return model.eval()


def _logits(model, batch):
    act = model.model
    with torch.no_grad():
        return act(act.initial_carry(batch), batch)[1]["logits"]


ALL = pytest.mark.parametrize("cls", architectures(), ids=lambda c: c.names[0])


@ALL
def test_state_dict_round_trip_gives_the_same_logits(cls):
    model, batch = _build(cls).eval(), _batch()
    act = model.model
    other = _build(cls).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        _, a = act(act.initial_carry(batch), batch)
        _, b = other.model(other.model.initial_carry(batch), batch)
    assert torch.equal(a["logits"], b["logits"])
    assert a["logits"].shape == (2, SEQ_LEN, VOCAB)


@ALL
def test_eval_halts_exactly_at_max_steps(cls):
    act, batch = _build(cls).eval().model, _batch()
    carry = act.initial_carry(batch)
    with torch.no_grad():
        for step in range(1, act.config.halt_max_steps + 1):
            carry, _ = act(carry, batch)
            assert bool(carry.halted.all()) == (step == act.config.halt_max_steps)


@ALL
def test_training_steps_never_pass_max_and_only_the_last_segment_has_gradient(cls):
    act, batch = _build(cls).train().model, _batch()
    carry = act.initial_carry(batch)
    for _ in range(act.config.halt_max_steps):
        carry, out = act(carry, batch)
        assert int(carry.steps.max()) <= act.config.halt_max_steps
        assert out["logits"].requires_grad
        carried = [t for t in vars(carry.inner_carry).values() if isinstance(t, torch.Tensor)]
        assert carried and not any(t.requires_grad for t in carried)


@ALL
def test_flops_are_positive(cls):
    model = _build(cls)
    assert training_flops_per_example(model) > 0
    assert model.model.inference_flops_per_segment() > 0


@ALL
def test_checkpoints_with_the_compiled_prefix_load(cls, tmp_path):
    model, batch = _shaken(_build(cls)), _batch()
    config = _config(cls)
    path = save_model_checkpoint(model, config, tmp_path / "run", step=3)
    stored = torch.load(path, weights_only=True)
    assert stored and all(key.startswith(COMPILED_PREFIX) for key in stored)
    shapes = dict(seq_len=SEQ_LEN, vocab_size=VOCAB, num_puzzle_identifiers=3)
    checkpoint = Checkpoint.read(tmp_path / "run")
    loaded = checkpoint.build_model(checkpoint.config(), shapes)
    assert type(loaded.model) is cls
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))
    fresh = _build(cls).eval()
    load_initial_weights(fresh, path)
    assert torch.equal(_logits(fresh, batch), _logits(model, batch))


@ALL
def test_the_tracer_hook_sees_every_update_of_a_segment(cls):
    act, batch = _shaken(_build(cls)).model, _batch()
    inner = act.inner
    calls = []
    carry = inner.reset_carry(torch.ones(2, dtype=torch.bool), inner.empty_carry(2))
    with torch.no_grad():
        carry, logits, _ = inner(carry, batch, hook=lambda kind, z_H, z_L: calls.append((kind, z_H, z_L)))
    if act.segment_schedule is None:
        with pytest.raises(AnalysisError, match="no z_H/z_L states"):
            trace_batch(act, batch)
        return
    H_cycles, L_cycles = act.segment_schedule
    assert [kind for kind, _, _ in calls] == (["L"] * L_cycles + ["H"]) * H_cycles
    positions = SEQ_LEN + act.puzzle_emb_len
    assert all(z.shape == (2, positions, act.config.hidden_size) for _, z_H, z_L in calls for z in (z_H, z_L))
    _, last_z_H, last_z_L = calls[-1]
    assert torch.equal(last_z_H, carry.z_H) and torch.equal(last_z_L, carry.z_L)
    trace = trace_batch(act, batch, num_segments=2)
    assert trace.z_L.shape[:2] == (2, H_cycles * L_cycles) and trace.z_H.shape[:2] == (2, H_cycles)
    torch.testing.assert_close(trace.final_logits, _logits_after(act, batch, 2))


def _logits_after(act, batch, segments):
    carry = act.initial_carry(batch)
    with torch.no_grad():
        for _ in range(segments):
            carry, outputs = act(carry, batch)
    return outputs["logits"].float()


@ALL
def test_puzzle_positions_are_the_models_own(cls):
    act = _build(cls).model
    assert act.puzzle_emb_len == puzzle_positions(_config(cls).arch)
    carried = [t for t in vars(act.inner.empty_carry(2)).values() if isinstance(t, torch.Tensor)]
    assert carried and all(t.shape[1] == SEQ_LEN + act.puzzle_emb_len for t in carried)


@pytest.mark.parametrize(
    "cls", [c for c in architectures() if "H_cycles" in c.config_class.model_fields], ids=lambda c: c.names[0]
)
def test_flops_grow_with_the_cycles(cls):
    cycles = cls.small_fields.get("H_cycles", 2)
    fewer = training_flops_per_example(_build(cls, H_cycles=cycles))
    assert training_flops_per_example(_build(cls, H_cycles=cycles + 2)) > fewer


@ALL
@pytest.mark.parametrize("halt", ["max", "act"])
def test_augmented_hrm_counts_the_passes_the_model_would_halt(cls, halt):
    """Augmented HRM counts a pass when the model's own halting rule (`wants_halt`) holds at its last segment;
    each puzzle gets one pass per perturbation, mapped back to the original puzzle's tokens."""
    task = resolve_task("sudoku", 6, 16, 3)  # 4x4 Sudoku: digit shifts
    model = _shaken(_build(cls, seq_len=16, vocab=6))
    source = TensorExamples(_batch(5, seq_len=16, vocab=6))
    puzzles, _ = evaluate_chunk([model], source, task, 3, 15, halt, "cpu")
    perturbed = PerturbedExamples(source, task, 3)
    outputs = run_passes(model, perturbed, 15, halt, "cpu")
    wanted = model.model.wants_halt(outputs)
    shifts = torch.arange(15) % 3
    answers = task.unperturb_rows(outputs["preds"].to(torch.int64), shifts)
    assert [len(p.passes) for p in puzzles] == [3] * 5
    for row in range(15):
        item = puzzles[row // 3].passes[row % 3]
        assert item.counted == bool(wanted[row])
        assert (item.prediction == answers[row].numpy()).all()
        if halt == "act" and outputs["steps"][row] < model.model.config.halt_max_steps:
            assert item.counted  # it stopped early because the model wanted to halt


@ALL
def test_halt_act_refill_gives_each_example_its_result_alone(cls):
    """Slots are refilled as examples halt; each example's result equals running it alone. The halting rule is
    replaced by one that stops example i after 1 + id % halt_max_steps segments, so neighbours run for different
    numbers of segments whatever the model's weights."""
    model = _shaken(_build(cls))
    act = model.model
    model_forward = act.forward

    def forward(carry, batch):
        carry, outputs = model_forward(carry, batch)
        goal = 1 + carry.current_data["puzzle_identifiers"].long() % act.config.halt_max_steps
        outputs["goal_reached"] = carry.steps >= goal
        return carry, outputs

    act.forward = forward
    act.wants_halt = lambda outputs: outputs["goal_reached"]
    data = _batch(7)
    keys = ("logits", "q_halt_logits", "steps")
    together = evaluate_act(model, TensorExamples(data), 3, device="cpu", keep_keys=keys)
    assert together["steps"].tolist() == (1 + torch.arange(7) % 3).tolist()
    for i in range(7):
        alone = evaluate_act(
            model, TensorExamples({k: v[i : i + 1] for k, v in data.items()}), 1, device="cpu", keep_keys=keys
        )
        assert alone["steps"][0] == together["steps"][i]
        for key in ("logits", "q_halt_logits"):
            torch.testing.assert_close(alone[key][0], together[key][i], rtol=1e-4, atol=1e-4)


@ALL
def test_the_training_segment_traces_without_graph_breaks_but_the_puzzle_rows(cls):
    """Under torch.compile the only graph break allowed is the sparse puzzle embedding's fresh gradient leaf
    (reported once per enclosing frame). Any other break, e.g. one per attention call, makes Dynamo run the
    model's loops eagerly and loses most of compile's gain."""
    import torch._dynamo

    model = _build(cls).train()
    batch = _batch()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(carry=model.initial_carry(batch), batch=batch, return_keys=[])
    torch._dynamo.reset()
    reasons = [str(reason.reason) for reason in explained.break_reasons]
    assert all("requires_grad_" in reason for reason in reasons), reasons

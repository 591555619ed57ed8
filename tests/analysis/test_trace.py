"""The tracer against the model's own forward pass: same states, same outputs, the right number of entries."""

import numpy as np
import pytest
import torch

from hrm.analysis import AnalysisError, iter_traces, make_batch, trace_batch, untrained_copy
from hrm.config import validate_config
from hrm.models.registry import build_model

from .helpers import sudoku_examples, tiny_hrm


def _batch(count=3, seed=0):
    inputs, labels = sudoku_examples(count, blanks=30, seed=seed)
    return make_batch(inputs, labels)


def _run_act(model, batch, segments):
    """The model's own evaluation loop, one ACT call per segment; returns every call's outputs and the last carry."""
    carry = model.model.initial_carry(batch)
    calls = []
    with torch.no_grad():
        for _ in range(segments):
            carry, outputs = model.model(carry=carry, batch=batch)
            calls.append(outputs)
    return carry, calls


@pytest.mark.parametrize(
    "arch",
    [
        dict(),
        dict(pos_encodings="learned", puzzle_emb_ndim=0, H_cycles=3, L_cycles=1),
        dict(H_cycles=1, L_cycles=2, halt_max_steps=1),
    ],
)
def test_trace_reproduces_the_models_forward(arch):
    model, _ = tiny_hrm(**arch)
    halt_max_steps = model.config.halt_max_steps
    batch = _batch()
    carry, calls = _run_act(model, batch, halt_max_steps)
    assert bool(carry.halted.all())  # evaluation halts exactly at halt_max_steps

    trace = trace_batch(model, batch)
    torch.testing.assert_close(trace.final_z_H, carry.inner_carry.z_H, rtol=0, atol=1e-6)
    torch.testing.assert_close(trace.final_z_L, carry.inner_carry.z_L, rtol=0, atol=1e-6)
    torch.testing.assert_close(trace.final_logits, calls[-1]["logits"], rtol=0, atol=1e-5)
    for segment, outputs in enumerate(calls):
        np.testing.assert_allclose(trace.q_halt[segment], outputs["q_halt_logits"].numpy(), atol=1e-5)
        np.testing.assert_allclose(trace.q_continue[segment], outputs["q_continue_logits"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(trace.segment_preds[segment], outputs["logits"].argmax(-1).numpy())
    np.testing.assert_array_equal(trace.would_halt, trace.q_halt > trace.q_continue)


def test_trace_entry_counts_and_shapes():
    model, _ = tiny_hrm(H_cycles=2, L_cycles=3)
    batch = _batch(count=2)
    trace = trace_batch(model, batch, num_segments=4)
    cfg = model.config
    positions = cfg.seq_len + model.model.inner.puzzle_emb_len
    assert trace.z_L.shape == (
        4,
        2 * 3,
        2,
        positions,
        cfg.hidden_size,
    )  # H_cycles x L_cycles low-level states per segment
    assert trace.z_H.shape == (4, 2, 2, positions, cfg.hidden_size)
    assert trace.step_preds.shape == (4, 6, 2, cfg.seq_len)
    assert trace.segment_preds.shape == (4, 2, cfg.seq_len)
    assert trace.q_halt.shape == trace.q_continue.shape == (4, 2)
    assert trace.flat_states("L").shape[0] == 4 * 6 + 1 and trace.flat_states("H").shape[0] == 4 * 2 + 1
    assert trace.flat_step_preds().shape == (24, 2, cfg.seq_len)
    assert trace.z_L.device.type == "cpu" and trace.z_L.dtype == torch.float32
    # The recorded end-of-segment states are the ones the segment outputs are computed from.
    torch.testing.assert_close(trace.z_H[-1, -1], trace.final_z_H)
    torch.testing.assert_close(trace.z_L[-1, -1], trace.final_z_L)


def test_intermediate_decoding_does_not_change_the_carry():
    model, _ = tiny_hrm(H_cycles=2, L_cycles=3)
    batch = _batch()
    decoded = trace_batch(model, batch, decode_steps=True)
    plain = trace_batch(model, batch, decode_steps=False)
    assert plain.step_preds is None
    torch.testing.assert_close(decoded.z_H, plain.z_H, rtol=0, atol=0)
    torch.testing.assert_close(decoded.z_L, plain.z_L, rtol=0, atol=0)
    np.testing.assert_array_equal(decoded.q_halt, plain.q_halt)

    inner = model.model.inner
    with torch.no_grad():
        # Step (segment 0, cycle 0, low step 1): lm_head(H_level(z_H, z_L)) with z_H still the initial state.
        expected = inner.heads(inner.H_level(decoded.z_H_init, decoded.z_L[0, 1], cos_sin=inner.cos_sin()))[0].argmax(
            -1
        )
    np.testing.assert_array_equal(decoded.step_preds[0, 1], expected.numpy())
    # At the last low-level step of a cycle the decoded update is the one the model applies.
    with torch.no_grad():
        after_first_H = inner.heads(decoded.z_H[1, 0])[0].argmax(-1)
    np.testing.assert_array_equal(decoded.step_preds[1, 2], after_first_H.numpy())
    np.testing.assert_array_equal(decoded.step_preds[:, -1], decoded.segment_preds)


def test_chunked_traces_match_one_batch_and_drop_states_on_request():
    model, _ = tiny_hrm()
    inputs, labels = sudoku_examples(5)
    whole = trace_batch(model, make_batch(inputs, labels), keep_states=False)
    chunks = list(iter_traces(model, inputs, labels, chunk_size=2, keep_states=False))
    assert [c.num_puzzles for c in chunks] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate([c.q_halt for c in chunks], axis=1), whole.q_halt, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([c.segment_preds for c in chunks], axis=1), whole.segment_preds)
    assert whole.z_H is None and whole.z_L is None
    with pytest.raises(AnalysisError, match="keep_states"):
        whole.flat_states("H")


def test_segment_movement_matches_states():
    model, _ = tiny_hrm()
    trace = trace_batch(model, _batch())
    ends = torch.cat((trace.z_H_init[None], trace.z_H[:, -1]))
    expected = (ends[1:] - ends[:-1]).flatten(2).norm(dim=2).numpy()
    np.testing.assert_allclose(trace.segment_delta_H, expected, rtol=1e-4)


def test_transformer_baseline_is_refused_with_a_clear_error():
    cfg = validate_config(
        {
            "arch": {
                "name": "hrm.transformer_baseline@TransformerBaselineACT",
                "hidden_size": 32,
                "num_heads": 4,
                "num_layers": 1,
                "forward_dtype": "float32",
            }
        }
    )
    model = build_model(cfg.arch, batch_size=2, seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
    with pytest.raises(AnalysisError, match="two-level HRM"):
        trace_batch(model, _batch(count=2))


def test_untrained_copy_has_fresh_weights_of_the_same_shape():
    model, _ = tiny_hrm()
    fresh = untrained_copy(model, seed=3)
    trained_state, fresh_state = model.model.state_dict(), fresh.state_dict()
    assert trained_state.keys() == fresh_state.keys()
    assert not torch.equal(trained_state["inner.q_head.weight"], fresh_state["inner.q_head.weight"])
    assert all(trained_state[k].shape == fresh_state[k].shape for k in trained_state)
    torch.testing.assert_close(untrained_copy(model, seed=3).state_dict()["inner.L_init"], fresh_state["inner.L_init"])


TRM_ARCH = dict(
    name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    hidden_size=32,
    num_heads=4,
    expansion=2,
    H_cycles=2,
    L_cycles=3,
    L_layers=1,
    puzzle_emb_ndim=32,
    puzzle_emb_len=2,
    halt_max_steps=3,
    halt_exploration_prob=0.0,
    forward_dtype="float32",
)


@pytest.mark.parametrize(
    "arch",
    [
        dict(pos_encodings="rope"),
        dict(mlp_t=True, pos_encodings="none"),
        dict(name="recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1"),
    ],
)
def test_trm_trace_comes_from_the_models_own_forward(arch):
    """The tracer records TRM's states through the model's hook: same carry, outputs and entry counts."""
    cfg = validate_config({"arch": {**TRM_ARCH, **arch}})
    model = build_model(cfg.arch, batch_size=3, seq_len=81, vocab_size=11, num_puzzle_identifiers=1).eval()
    with torch.no_grad():
        model.model.inner.q_head.weight.normal_(std=0.5)
    batch = _batch()
    carry, calls = _run_act(model, batch, 3)
    trace = trace_batch(model, batch)
    torch.testing.assert_close(trace.final_z_H, carry.inner_carry.z_H, rtol=0, atol=1e-6)
    torch.testing.assert_close(trace.final_z_L, carry.inner_carry.z_L, rtol=0, atol=1e-6)
    for segment, outputs in enumerate(calls):
        np.testing.assert_allclose(trace.q_halt[segment], outputs["q_halt_logits"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(trace.would_halt[segment], (outputs["q_halt_logits"] > 0).numpy())  # TRM's rule
    assert trace.z_L.shape[:2] == (3, 2 * 3) and trace.z_H.shape[:2] == (3, 2)
    assert trace.z_H.shape[3] == 81 + 2
    np.testing.assert_array_equal(trace.step_preds[:, -1], trace.segment_preds)
    torch.testing.assert_close(trace.z_H[-1, -1], trace.final_z_H)
    inner = model.model.inner
    with torch.no_grad():  # the per-step view: the shared network's z_H update applied to the current states, decoded
        if "singlez" in cfg.arch.name:  # one state (z_H is z_L); its closing update is `net(z_L)`
            torch.testing.assert_close(trace.final_z_H, trace.final_z_L, rtol=0, atol=0)
            expected = inner.heads(inner.L_level(trace.z_L[0, 1], 0, cos_sin=inner.cos_sin()))[0].argmax(-1)
        else:
            expected = inner.heads(inner.L_level(trace.z_H_init, trace.z_L[0, 1], cos_sin=inner.cos_sin()))[0].argmax(
                -1
            )
    np.testing.assert_array_equal(trace.step_preds[0, 1], expected.numpy())

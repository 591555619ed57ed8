"""URM against URM's own code (golden data in tests/assets/golden/urm) and against URM's formulas.

URM runs its convolution, the SiLU after it and `down_proj` in bfloat16 even in float32 mode, so the
golden numbers reproduce only with the CPU kernels they were made with: torch on one thread,
`MKL_CBWR=AVX2`, `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`, a CPU with AVX512-BF16 and SDPA's default
kernel. These variables must be set before torch loads, so the comparisons run in a subprocess with them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hrm
from hrm.checkpoint import read_state_dict, save_model_checkpoint
from hrm.config import validate_config
from hrm.errors import ConfigError
from hrm.models import urm as urm_module
from hrm.models.registry import MODELS, build_model
from hrm.models.urm import URM, ConvSwiGLU, URMConfig

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "assets" / "golden" / "urm" / "urm_visible"
KERNEL_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16",
}


def _cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


needs_golden = pytest.mark.skipif(not (GOLDEN / "golden.pt").is_file(), reason="golden URM data not present")
needs_golden_kernels = pytest.mark.skipif(
    not _cpu_has_avx512_bf16(), reason="URM's golden numbers need a CPU with AVX512-BF16 (bf16 kernels)"
)

TINY = dict(
    name="urm.urm@URM",
    hidden_size=32,
    num_heads=4,
    num_layers=2,
    H_cycles=2,
    L_cycles=2,
    loops=3,
    puzzle_emb_ndim=32,
    expansion=4,
    forward_dtype="float32",
)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = torch.as_tensor(expected).detach().double()
    actual = torch.as_tensor(actual).detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def tiny_urm(batch_size=6, seq_len=25, vocab_size=12, num_ids=4, **arch):
    cfg = validate_config({"arch": {**TINY, **arch}})
    return build_model(
        cfg.arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size, num_puzzle_identifiers=num_ids
    )


# ---------------------------------------------------------------- comparisons run under the golden kernels
def golden_init_errors() -> dict:
    """A freshly seeded model against URM's `init_state`: names, order, dtypes, and the largest difference."""
    golden = torch.load(GOLDEN / "golden.pt", weights_only=False)
    torch.manual_seed(golden["init_seed"])
    state = tiny_urm().state_dict()
    reference = golden["init_state"]
    return {
        "order": list(state) == list(reference),
        "dtypes": [k for k, v in reference.items() if state[k].dtype != v.dtype],
        "max_abs_diff": {k: float((state[k].double() - v.double()).abs().max()) for k, v in reference.items()},
    }


def golden_eval_errors(file_name: str) -> dict:
    """Per-step relative errors against URM's evaluation steps, loading `file_name` with `hrm.load_model`."""
    golden = torch.load(GOLDEN / "golden.pt", weights_only=False)
    model, config = hrm.load_model(GOLDEN / file_name, overrides=[f"data_path={GOLDEN / 'data'}"])
    batch = golden["batch"]
    keys = ["logits", "q_halt_logits", "q_continue_logits", "preds"]
    carry = model.initial_carry(batch)
    steps = []
    with torch.inference_mode():
        for expected in golden["eval_steps"]:
            carry, loss, metrics, outputs, all_halted = model(return_keys=keys, carry=carry, batch=batch)
            errors = {key: rel_err(outputs[key], expected[key]) for key in keys[:3]}
            errors["loss"] = rel_err(loss, expected["loss"])
            errors["current_hidden"] = rel_err(carry.inner_carry.current_hidden, expected["current_hidden"])
            errors.update({f"metric {k}": rel_err(metrics[k], v) for k, v in expected["metrics"].items()})
            steps.append(
                {
                    "errors": errors,
                    "preds_equal": torch.equal(outputs["preds"], expected["preds"]),
                    "steps_equal": torch.equal(carry.steps, expected["steps"]),
                    "halted_equal": torch.equal(carry.halted, expected["halted"]),
                    "all_halted_equal": bool(all_halted) == bool(expected["all_halted"]),
                    "metric_names": sorted(metrics),
                    "expected_metric_names": sorted(expected["metrics"]),
                }
            )
    return {"arch": config.arch.name, "use_muon": config.use_muon, "steps": steps}


def golden_train_errors() -> dict:
    """Two training segments with exploration off: loss, every gradient, the puzzle-embedding gradient."""
    golden = torch.load(GOLDEN / "golden.pt", weights_only=False)
    model, _ = hrm.load_model(
        GOLDEN / "step_0", overrides=[f"data_path={GOLDEN / 'data'}", "arch.halt_exploration_prob=0.0"]
    )
    model.train()
    batch = golden["batch"]
    params = dict(model.named_parameters())
    carry = model.initial_carry(batch)
    steps = []
    for expected in golden["train_steps"]:
        model.zero_grad()
        carry, loss, metrics, outputs, _ = model(return_keys=["logits"], carry=carry, batch=batch)
        loss.backward()
        puzzle = model.model.puzzle_emb
        steps.append(
            {
                "loss": rel_err(loss, expected["loss"]),
                "logits": rel_err(outputs["logits"], expected["preds"]["logits"]),
                "current_hidden": rel_err(carry.inner_carry.current_hidden, expected["current_hidden"]),
                "halted_equal": torch.equal(carry.halted, expected["halted"]),
                "grads": {name: rel_err(params[name].grad, grad) for name, grad in expected["grads"].items()},
                "grad_names_equal": sorted(expected["grads"]) == sorted(params),
                "puzzle_emb_grad": rel_err(puzzle.local_weights.grad, expected["puzzle_emb_grad"]),
                "puzzle_emb_ids_equal": torch.equal(puzzle.local_ids.long(), expected["puzzle_emb_ids"].long()),
                "metric_names_equal": sorted(metrics) == sorted(expected["metrics"]),
            }
        )
    return {"steps": steps}


def run_under_golden_kernels(function: str, *args: str) -> dict:
    """Call one of the functions above in a fresh interpreter whose environment fixes the CPU kernels."""
    code = (
        "import json, sys; from tests.core import test_urm_model as t; "
        f"print('RESULT' + json.dumps(t.{function}(*sys.argv[1:])))"
    )
    env = {
        **os.environ,
        **KERNEL_ENV,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


# ---------------------------------------------------------------- golden parity
@needs_golden
@needs_golden_kernels
def test_seed_11_gives_urms_initial_weights():
    """Same creation order and draws: every tensor equals URM's to float32 rounding (a wrong order or init
    differs by ~0.1). The vectorised erfinv of large tensors can differ in the last bit between CPUs."""
    result = run_under_golden_kernels("golden_init_errors")
    assert result["order"] and result["dtypes"] == []
    worst = max(result["max_abs_diff"].items(), key=lambda kv: kv[1])
    assert worst[1] <= 1e-6, worst
    exact = [k for k in result["max_abs_diff"] if k.endswith(("init_hidden", "dwconv.weight", "dwconv.bias"))]
    assert exact and all(result["max_abs_diff"][k] == 0.0 for k in exact)


# On the CPU that wrote the golden data the errors are float32 rounding (<= 1e-5). A CPU whose float32
# kernels differ in the last bit flips a few bfloat16 roundings of URM's convolution input, which moves
# whole samples by about 1e-3 (in URM's own code as well); a wrong formula or order moves them by 1e-1.
EXACT = 1e-5
SAME_MODEL = 1e-2
not_bit_exact_here = pytest.mark.xfail(
    strict=False,
    reason="bit-exact only where MKL's float32 kernels round as on the machine that wrote the golden data",
)


def check_eval(file_name: str, tolerance: float) -> None:
    result = run_under_golden_kernels("golden_eval_errors", file_name)
    assert result["arch"] == "urm.urm@URM" and result["use_muon"]
    assert len(result["steps"]) == 3
    for step in result["steps"]:
        assert step["metric_names"] == step["expected_metric_names"]
        assert step["steps_equal"] and step["halted_equal"] and step["all_halted_equal"]
        worst = max(step["errors"].items(), key=lambda kv: kv[1])
        assert worst[1] <= tolerance, worst


def check_train(tolerance: float) -> None:
    result = run_under_golden_kernels("golden_train_errors")
    assert len(result["steps"]) == 2
    for step in result["steps"]:
        assert step["grad_names_equal"] and step["metric_names_equal"] and step["halted_equal"]
        assert step["puzzle_emb_ids_equal"]
        assert step["loss"] <= tolerance and step["current_hidden"] <= tolerance
        worst = max(step["grads"].items(), key=lambda kv: kv[1])
        assert worst[1] <= tolerance, worst
        assert step["puzzle_emb_grad"] <= tolerance


@needs_golden
@needs_golden_kernels
@pytest.mark.slow
@pytest.mark.parametrize("file_name", ["step_0", "step_0.pt"])
def test_evaluation_steps_follow_urms(file_name):
    check_eval(file_name, SAME_MODEL)


@needs_golden
@needs_golden_kernels
@pytest.mark.slow
def test_two_training_segments_follow_urms_gradients():
    check_train(SAME_MODEL)


@needs_golden
@needs_golden_kernels
@pytest.mark.slow
@not_bit_exact_here
@pytest.mark.parametrize("file_name", ["step_0", "step_0.pt"])
def test_evaluation_steps_equal_urms_to_float_rounding(file_name):
    check_eval(file_name, EXACT)


@needs_golden
@needs_golden_kernels
@pytest.mark.slow
@not_bit_exact_here
def test_two_training_segments_equal_urms_gradients():
    check_train(1e-4)


@needs_golden
def test_both_urm_file_formats_hold_the_same_weights():
    raw, packed = read_state_dict(GOLDEN / "step_0"), read_state_dict(GOLDEN / "step_0.pt")
    assert list(raw) == list(packed)
    assert all(torch.equal(raw[k], packed[k]) for k in raw)
    assert raw["model.inner.layers.0.mlp.dwconv.weight"].dtype == torch.bfloat16


@needs_golden
def test_our_checkpoint_loads_into_urms_model_strictly(tmp_path):
    """Our saved step_N has exactly URM's keys (with `_orig_mod.`), shapes and dtypes."""
    model, config = hrm.load_model(GOLDEN / "step_0", overrides=[f"data_path={GOLDEN / 'data'}"])
    ours = torch.load(save_model_checkpoint(model, config, tmp_path, step=0), weights_only=True)
    theirs = torch.load(GOLDEN / "step_0", weights_only=True)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key
    stored = (tmp_path / "all_config.yaml").read_text()
    assert "loops: 3" in stored and "num_layers: 2" in stored and "halt_max_steps" not in stored


# ---------------------------------------------------------------- config
def test_urm_registers_its_name_first():
    assert URM.names[0] == "urm.urm@URM" and MODELS["urm.urm@URM"] is URM


def test_dead_keys_warn_once_and_typos_fail(caplog, monkeypatch):
    monkeypatch.setattr(urm_module, "_warned_dead_keys", set())
    dead = {"loop_deltas": [0, 8], "profile": True, "eval_interval": 1000, "ema_rate": 0.999}
    with caplog.at_level(logging.WARNING, logger="hrm.models.urm"):
        cfg = validate_config({"arch": {**TINY, **dead, "checkpoint_every_eval": True}})
        build_model(cfg.arch, batch_size=2, seq_len=4, vocab_size=5, num_puzzle_identifiers=2)
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warnings) == 1
    assert all(name in warnings[0] for name in (*dead, "checkpoint_every_eval"))
    with pytest.raises(ConfigError, match="num_layer"):
        validate_config({"arch": {**TINY, "num_layer": 2}})


def test_loops_are_the_protocols_halt_max_steps():
    base = dict(batch_size=1, seq_len=1, vocab_size=1, num_puzzle_identifiers=1)
    assert URMConfig(**base, loops=7).halt_max_steps == 7
    assert URMConfig(**base, halt_max_steps=5).loops == 5
    assert URMConfig(**base).halt_exploration_prob == 0.1
    with pytest.raises(ValueError, match="loops"):
        URMConfig(**base, loops=4, halt_max_steps=5)


@pytest.mark.parametrize(("ndim", "hidden", "positions"), [(0, 32, 0), (32, 32, 1), (33, 32, 2), (64, 16, 4)])
def test_puzzle_positions_are_ceil_of_width_over_hidden(ndim, hidden, positions):
    model = tiny_urm(puzzle_emb_ndim=ndim, hidden_size=hidden, num_heads=2, seq_len=5)
    assert model.model.puzzle_emb_len == positions
    assert model.model.inner.empty_carry(2).current_hidden.shape == (2, 5 + positions, hidden)
    logits, _ = model.model.inner.heads(torch.zeros(2, 5 + positions, hidden))
    assert logits.shape[1] == 5


def test_paper_arc_model_has_urms_parameter_count():
    """URM counts parameters (not buffers: the puzzle table and init_hidden are buffers)."""
    model = tiny_urm(
        hidden_size=512, num_heads=8, num_layers=4, puzzle_emb_ndim=512, expansion=4, seq_len=900, num_ids=10
    )
    hidden, inter, vocab, layers = 512, 1536, 12, 4
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + inter * 2 + inter
    expected = 2 * vocab * hidden + 2 * hidden + 2 + layers * per_layer
    counted = sum(p.numel() for p in model.parameters())
    assert counted == expected == 13_663_234


# ---------------------------------------------------------------- the model against URM's formulas (docs/models/urm.md)
def test_conv_swiglu_is_a_causal_kernel_2_convolution_in_bf16():
    torch.manual_seed(0)
    mlp = ConvSwiGLU(16, 4)
    assert mlp.dwconv.weight.dtype == mlp.dwconv.bias.dtype == torch.bfloat16
    x = torch.randn(2, 7, 16)
    out = mlp(x)
    assert out.dtype == torch.bfloat16
    gate, up = (x @ mlp.gate_up_proj.weight.T).chunk(2, -1)
    a = (F.silu(gate) * up).to(torch.bfloat16).float()
    w, b = mlp.dwconv.weight.float()[:, 0], mlp.dwconv.bias.float()
    previous = torch.cat((torch.zeros_like(a[:, :1]), a[:, :-1]), dim=1)
    conv = (previous * w[:, 0] + a * w[:, 1] + b).to(torch.bfloat16)
    expected = F.silu(conv).float() @ mlp.down_proj.weight.to(torch.bfloat16).float().T
    assert rel_err(out, expected) <= 1e-2
    # Causal: changing the last position leaves every earlier output unchanged.
    changed = x.clone()
    changed[:, -1] += 1.0
    assert torch.equal(mlp(changed)[:, :-1], out[:, :-1])


def test_step_runs_forward_only_loops_then_gradient_loops_and_hooks_every_loop():
    model = tiny_urm(H_cycles=3, L_cycles=2, seq_len=6)
    inner = model.model.inner
    batch = {
        "inputs": torch.randint(0, 12, (6, 6), dtype=torch.int32),
        "labels": torch.randint(0, 12, (6, 6), dtype=torch.int32),
        "puzzle_identifiers": torch.randint(0, 4, (6,), dtype=torch.int32),
    }
    carry = inner.reset_carry(torch.ones(6, dtype=torch.bool), inner.empty_carry(6))
    assert torch.equal(carry.current_hidden, inner.init_hidden.expand(6, 12 - 5, 32).expand_as(carry.current_hidden))
    seen = []
    calls = {"n": 0}
    original = inner.inner_loop

    def counting(hidden, x, cos_sin):
        calls["n"] += 1
        out = original(hidden, x, cos_sin)
        calls.setdefault("grad", []).append(out.requires_grad)
        return out

    inner.inner_loop = counting
    new, logits, _ = inner(carry, batch, hook=lambda kind, z_H, z_L: seen.append((kind, z_L.clone())))
    assert calls["n"] == 3 * 2
    assert calls["grad"] == [False] * 4 + [True] * 2  # (H_cycles - 1) * L_cycles forward-only, then L_cycles
    assert [kind for kind, _ in seen].count("L") == 6 and [kind for kind, _ in seen].count("H") == 3
    assert torch.equal(seen[-1][1], new.current_hidden)
    assert not new.current_hidden.requires_grad and logits.requires_grad


def test_halting_is_q_halt_positive_without_continue_target():
    model = tiny_urm(halt_exploration_prob=0.0, loops=4)
    act = model.model
    assert not act.needs_continue_target
    assert act.wants_halt(
        {"q_halt_logits": torch.tensor([0.5, -0.5]), "q_continue_logits": torch.tensor([9.0, -9.0])}
    ).tolist() == [True, False]
    batch = {
        "inputs": torch.randint(0, 12, (6, 25), dtype=torch.int32),
        "labels": torch.randint(0, 12, (6, 25), dtype=torch.int32),
        "puzzle_identifiers": torch.randint(0, 4, (6,), dtype=torch.int32),
    }
    model.train()
    _, _, metrics, outputs, _ = model(return_keys=["logits"], carry=model.initial_carry(batch), batch=batch)
    assert set(metrics) == {"count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss"}


def test_flops_count_every_loop_forward_and_the_gradient_loops_backward():
    small = model_flops(H_cycles=2, L_cycles=2)
    more_forward_only = model_flops(H_cycles=3, L_cycles=2)
    assert more_forward_only[0] > small[0] and math.isclose(more_forward_only[1], small[1])


def model_flops(**arch):
    return tiny_urm(**arch).model.segment_flops()

